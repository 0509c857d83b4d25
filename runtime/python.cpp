// Embedding CPython 3.11. See shared/EMBEDDING.md and CPython's Doc/c-api/init_config.rst:
// PyConfig_InitPythonConfig (not the isolated config: it would switch off locale, signal
// handlers and readline), argv parsed by python itself, then Py_RunMain for python's own
// exit-status, traceback and SIGINT behaviour.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "inferenceutils/python.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "inferenceutils/errors.h"

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

}  // namespace

const char* BasePythonExecutable() { return IU_PYTHON_EXECUTABLE; }
const char* BasePythonPrefix() { return IU_PYTHON_BASE_PREFIX; }

std::string EmbeddedPythonVersion() {
  std::string version = Py_GetVersion();
  return version.substr(0, version.find(' '));
}

absl::StatusOr<int> RunPython(const InterpreterConfig& spec) {
  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  struct ConfigGuard {
    PyConfig* config;
    ~ConfigGuard() { PyConfig_Clear(config); }
  } guard{&config};

  // Isolation without the isolated config: no PYTHON* variables (children inherit this as -E),
  // no user site directory.
  config.use_environment = spec.inherit_python_env ? 1 : 0;
  config.user_site_directory = 0;
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
  const std::string executable = spec.executable.empty() ? BasePythonExecutable() : spec.executable;
  status = PyConfig_SetBytesString(&config, &config.executable, executable.c_str());
  if (PyStatus_Exception(status)) return FromPyStatus(status, "executable");
  status = PyConfig_SetBytesString(&config, &config.program_name, spec.program_name.c_str());
  if (PyStatus_Exception(status)) return FromPyStatus(status, "program name");

  status = Py_InitializeFromConfig(&config);
  if (PyStatus_Exception(status)) {
    // --version, --help and usage errors of python's own option parser end here.
    if (PyStatus_IsExit(status)) return status.exitcode;
    return FromPyStatus(status, "initialization");
  }

  for (const auto& module : spec.preload) {
    PyObject* imported = PyImport_ImportModule(module.c_str());
    if (!imported) {
      std::string error = TakeExceptionLine();
      Py_FinalizeEx();
      return WithExit(absl::FailedPreconditionError(absl::StrCat(
                          "preloading '", module, "' failed: ", error,
                          "; rebuild the runtime with `inferenceutils runtime rebuild`")),
                      kExitPreload);
    }
    Py_DECREF(imported);
  }
  if (!spec.history_file.empty() && isatty(STDIN_FILENO)) InstallInteractiveHook(spec.history_file);

  return Py_RunMain();
}

}  // namespace iu
