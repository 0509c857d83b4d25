// Embedding CPython 3.11. See shared/EMBEDDING.md and CPython's Doc/c-api/init_config.rst:
// PyConfig_InitPythonConfig (not the isolated config: it would switch off locale, signal
// handlers and readline), argv parsed by python itself, then Py_RunMain for python's own
// exit-status, traceback and SIGINT behaviour.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "inferenceutils/python.h"

#include <dlfcn.h>

#include <cstdlib>
#include <unistd.h>

#include <exception>
#include <functional>
#include <map>

#include "absl/strings/str_cat.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/libraries.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/python_home.h"

namespace iu {
namespace {

absl::Status FromPyStatus(PyStatus status, const char* what) {
  return absl::InternalError(absl::StrCat("cannot start the embedded Python (", what, "): ",
                                          status.err_msg ? status.err_msg : "unknown error",
                                          status.func ? absl::StrCat(" in ", status.func) : ""));
}

// The current exception as one line ("ModuleNotFoundError: No module named 'x'"), cleared.
std::string TakeExceptionLine() {
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  PyErr_NormalizeException(&type, &value, &traceback);
  std::string line = "unknown error";
  if (type) {
    line = reinterpret_cast<PyTypeObject*>(type)->tp_name;
    if (value) {
      if (PyObject* text = PyObject_Str(value)) {
        if (const char* utf8 = PyUnicode_AsUTF8(text); utf8 && *utf8) line += absl::StrCat(": ", utf8);
        Py_DECREF(text);
      }
    }
  }
  PyErr_Clear();
  Py_XDECREF(type);
  Py_XDECREF(value);
  Py_XDECREF(traceback);
  return line;
}

// Readline set-up with the history in our state directory instead of ~/.python_history. Mirrors
// site.register_readline (Lib/site.py); installed as sys.__interactivehook__, so it runs only when
// python actually starts the interactive prompt.
constexpr char kInteractiveHook[] = R"PY(
def _iu_interactive_hook(path=_iu_history):
    try:
        import readline, rlcompleter, atexit, os
    except ImportError:
        return
    if 'libedit' in (getattr(readline, '__doc__', '') or ''):
        readline.parse_and_bind('bind ^I rl_complete')
    else:
        readline.parse_and_bind('tab: complete')
    try:
        readline.read_init_file()
    except OSError:
        pass
    if readline.get_current_history_length() == 0:
        try:
            readline.read_history_file(path)
        except OSError:
            pass
        def write_history():
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                readline.write_history_file(path)
            except OSError:
                pass
        atexit.register(write_history)
import sys
sys.__interactivehook__ = _iu_interactive_hook
)PY";

void InstallInteractiveHook(const std::string& history_file) {
  PyObject* globals = PyDict_New();
  if (!globals) return PyErr_Clear();
  PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins());
  PyObject* path = PyUnicode_DecodeFSDefault(history_file.c_str());
  if (path) {
    PyDict_SetItemString(globals, "_iu_history", path);
    Py_DECREF(path);
  }
  PyObject* result = PyRun_String(kInteractiveHook, Py_file_input, globals, globals);
  if (!result) PyErr_Clear();
  Py_XDECREF(result);
  Py_DECREF(globals);
}

// The built-in module `_inferenceutils`, registered before the interpreter starts. The runtime's
// 00-inferenceutils-preload.pth calls preload() while site processes .pth files: after the
// runtime's site-packages are on sys.path, before sitecustomize/usercustomize and any user code.
// A failure is recorded here, not raised, so site does not print it; RunPython reports it.
struct PreloadState {
  std::vector<std::string> modules;
  bool done = false;
  std::string failed_module;
  std::string error;
};
PreloadState g_preload;

PyObject* Preload(PyObject*, PyObject*) {
  if (!g_preload.done) {
    g_preload.done = true;
    for (const auto& module : g_preload.modules) {
      PyObject* imported = PyImport_ImportModule(module.c_str());
      if (!imported) {
        g_preload.failed_module = module;
        g_preload.error = TakeExceptionLine();
        break;
      }
      Py_DECREF(imported);
    }
  }
  Py_RETURN_NONE;
}

// A new list of make(item) for each item; nullptr (with the Python error set) when one fails.
template <typename Items, typename Make>
PyObject* PyListOf(const Items& items, Make make) {
  PyObject* list = PyList_New(0);
  if (!list) return nullptr;
  for (const auto& element : items) {
    PyObject* item = make(element);
    if (!item || PyList_Append(list, item) != 0) {
      Py_XDECREF(item);
      Py_DECREF(list);
      return nullptr;
    }
    Py_DECREF(item);
  }
  return list;
}

// [(path, base address)] of every shared object loaded now, from the dynamic loader.
PyObject* LoadedLibrariesPy(PyObject*, PyObject*) {
  return PyListOf(LoadedLibraries(), [](const LoadedLibrary& library) {
    return Py_BuildValue("(sK)", library.path.c_str(), static_cast<unsigned long long>(library.base));
  });
}

// Documents the launcher offers to the `inferenceutils` package (InterpreterConfig::documents),
// each computed at most once, when first asked for.
struct DocumentState {
  std::map<std::string, std::function<std::string()>> producers;
  std::map<std::string, std::string> computed;
};
DocumentState g_documents;

PyObject* DocumentPy(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8(arg);
  if (!name) return nullptr;
  auto done = g_documents.computed.find(name);
  if (done == g_documents.computed.end()) {
    auto producer = g_documents.producers.find(name);
    if (producer == g_documents.producers.end() || !producer->second) Py_RETURN_NONE;
    std::string text;
    try {
      text = producer->second();
    } catch (const std::exception& e) {
      PyErr_Format(PyExc_RuntimeError, "inferenceutils launcher: cannot produce '%s': %s", name, e.what());
      return nullptr;
    }
    done = g_documents.computed.emplace(name, std::move(text)).first;
  }
  return PyUnicode_DecodeUTF8(done->second.data(), static_cast<Py_ssize_t>(done->second.size()), "replace");
}

PyObject* DocumentNamesPy(PyObject*, PyObject*) {
  return PyListOf(g_documents.producers, [](const auto& entry) { return PyUnicode_FromString(entry.first.c_str()); });
}

PyObject* VersionPy(PyObject*, PyObject*) { return PyUnicode_FromString(IU_VERSION); }

PyObject* LauncherPy(PyObject*, PyObject*) {
  std::string self = SelfExecutable();
  return PyUnicode_DecodeFSDefaultAndSize(self.data(), static_cast<Py_ssize_t>(self.size()));
}

// Puts `paths` on sys.path (in order) just before the first site-packages entry: ahead of what
// pip installs, behind the script's directory and the standard library, so python's own first
// entry stays python's (sys.path[0] is the script's directory, or the stdlib zip with -I/-P).
// Best effort: a failure leaves sys.path as it was.
void InsertSysPath(const std::vector<std::string>& paths) {
  PyObject* sys_path = PySys_GetObject("path");  // borrowed
  if (!sys_path || !PyList_Check(sys_path)) return;
  Py_ssize_t at = PyList_Size(sys_path);
  for (Py_ssize_t i = 0; i < PyList_Size(sys_path); ++i) {
    const char* entry = PyUnicode_Check(PyList_GetItem(sys_path, i)) ? PyUnicode_AsUTF8(PyList_GetItem(sys_path, i)) : nullptr;
    if (!entry) {
      PyErr_Clear();
      continue;
    }
    std::string text = entry;
    if (text.size() >= 13 && text.compare(text.size() - 13, 13, "site-packages") == 0) {
      at = i;
      break;
    }
  }
  for (size_t i = 0; i < paths.size(); ++i) {
    PyObject* item = PyUnicode_DecodeFSDefault(paths[i].c_str());
    if (!item) return PyErr_Clear();
    if (PyList_Insert(sys_path, at + static_cast<Py_ssize_t>(i), item) != 0) PyErr_Clear();
    Py_DECREF(item);
  }
}

PyMethodDef kModuleMethods[] = {
    {"preload", Preload, METH_NOARGS, "Import the runtime's preload modules (once)."},
    {"loaded_libraries", LoadedLibrariesPy, METH_NOARGS,
     "[(path, base_address)] of the shared objects loaded now, from dl_iterate_phdr."},
    {"document", DocumentPy, METH_O,
     "document(name) -> str | None: a JSON document from the launcher ('info', 'runtime')."},
    {"document_names", DocumentNamesPy, METH_NOARGS, "Names of the documents the launcher offers."},
    {"version", VersionPy, METH_NOARGS, "The launcher's version."},
    {"launcher", LauncherPy, METH_NOARGS, "Absolute path of the running launcher."},
    {nullptr, nullptr, 0, nullptr},
};
PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_inferenceutils",
                       "Internal hooks of the inferenceutils launcher.", -1, kModuleMethods,
                       nullptr, nullptr, nullptr, nullptr};

PyObject* InitModule() { return PyModule_Create(&kModule); }

}  // namespace

std::string EmbeddedPythonAbi() {
  std::string version = EmbeddedPythonVersion();
  std::string major = version.substr(0, version.find('.'));
  std::string rest = version.substr(version.find('.') + 1);
  return absl::StrCat("cp", major, rest.substr(0, rest.find('.')));
}

const char* BasePythonExecutable() { return IU_PYTHON_EXECUTABLE; }
const char* BasePythonPrefix() { return IU_PYTHON_BASE_PREFIX; }

std::string EmbeddedPythonVersion() {
  std::string version = Py_GetVersion();
  return version.substr(0, version.find(' '));
}

absl::StatusOr<int> RunPython(const InterpreterConfig& spec) {
  // Libraries the runtime names are loaded first, by absolute path and globally, so the preload
  // and everything imported later resolve these copies.
  for (const auto& library : spec.libraries) {
    if (!dlopen(library.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
      const char* error = dlerror();
      return WithExit(absl::FailedPreconditionError(absl::StrCat(
                          "cannot load library ", library, ": ", error ? error : "unknown error",
                          "; rebuild the runtime with `inferenceutils runtime rebuild`")),
                      kExitPreload);
    }
  }
  g_preload = PreloadState();
  g_preload.modules = spec.preload;
  g_documents = DocumentState();
  g_documents.producers = spec.documents;
  if (PyImport_AppendInittab("_inferenceutils", InitModule) != 0) {
    return absl::InternalError("cannot register the _inferenceutils module");
  }

  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  struct ConfigGuard {
    PyConfig* config;
    ~ConfigGuard() { PyConfig_Clear(config); }
  } guard{&config};

  // Python's own rules (not the isolated config): PYTHON* variables count as for python3.11, and
  // -I/-E/-s/-P isolate on request. Only the home is the launcher's: config.home beats PYTHONHOME.
  const PythonHome& home = CurrentHome();
  if (spec.pin_home) {
    if (auto checked = CheckHome(home); !checked.ok()) return checked;
  }
  config.parse_argv = 1;

  std::vector<std::string> argv_storage;
  argv_storage.reserve(spec.argv.size() + 1);
  argv_storage.push_back(spec.program_name);
  argv_storage.insert(argv_storage.end(), spec.argv.begin(), spec.argv.end());
  std::vector<char*> argv;
  for (auto& arg : argv_storage) argv.push_back(arg.data());

  PyStatus status = PyConfig_SetBytesArgv(&config, static_cast<Py_ssize_t>(argv.size()), argv.data());
  if (PyStatus_Exception(status)) {
    if (PyStatus_IsExit(status)) return status.exitcode;
    return FromPyStatus(status, "argv");
  }
  if (!spec.orig_argv.empty()) {
    std::vector<std::string> orig_storage = spec.orig_argv;
    std::vector<wchar_t*> orig;
    struct WideGuard {
      std::vector<wchar_t*>& items;
      ~WideGuard() {
        for (wchar_t* item : items) PyMem_RawFree(item);
      }
    } wide_guard{orig};
    for (auto& arg : orig_storage) {
      wchar_t* wide = Py_DecodeLocale(arg.c_str(), nullptr);
      if (!wide) return absl::InternalError("cannot decode the command line");
      orig.push_back(wide);
    }
    status = PyConfig_SetWideStringList(&config, &config.orig_argv, static_cast<Py_ssize_t>(orig.size()), orig.data());
    if (PyStatus_Exception(status)) return FromPyStatus(status, "orig_argv");
  }
  const std::string executable = spec.executable.empty() ? home.executable : spec.executable;
  for (const auto& [field, value] : {std::pair{&config.executable, executable},
                                     std::pair{&config.base_executable, home.executable},
                                     std::pair{&config.home, home.prefix},
                                     std::pair{&config.program_name, spec.program_name}}) {
    if (!spec.pin_home && (field == &config.home || field == &config.base_executable)) continue;
    status = PyConfig_SetBytesString(&config, field, value.c_str());
    if (PyStatus_Exception(status)) return FromPyStatus(status, "configuration");
  }

  status = Py_InitializeFromConfig(&config);
  if (PyStatus_Exception(status)) {
    // --version, --help and usage errors of python's own option parser end here.
    if (PyStatus_IsExit(status)) return status.exitcode;
    // A bad -X option or PYTHON* value: python's own "Fatal Python error: ..." and exit 1.
    Py_ExitStatusException(status);
  }

  // A runtime without the .pth hook (or site disabled with -S) still gets its preload here,
  // before any user code.
  Py_XDECREF(Preload(nullptr, nullptr));
  if (!g_preload.error.empty()) {
    Py_FinalizeEx();
    return WithExit(absl::FailedPreconditionError(absl::StrCat(
                        "preloading '", g_preload.failed_module, "' failed: ", g_preload.error,
                        std::getenv("LD_PRELOAD") || std::getenv("LD_LIBRARY_PATH")
                            ? "; LD_PRELOAD / LD_LIBRARY_PATH may have put another copy of a library first: "
                              "unset them, or see `inferenceutils doctor`"
                            : "; `inferenceutils doctor` shows what was loaded from where, "
                              "`inferenceutils runtime rebuild` builds the runtime again")),
                    kExitPreload);
  }
  InsertSysPath(spec.extra_paths);
  if (!spec.history_file.empty() && isatty(STDIN_FILENO)) InstallInteractiveHook(spec.history_file);

  return Py_RunMain();
}

}  // namespace iu
