// Apps: settings (app.toml, pyproject.toml's [tool.inferenceutils]), the entry point, the
// desktop entry and the Python command line that runs the entry. Packing is app_payload.cpp,
// extraction app_install.cpp.
#include "inferenceutils/app.h"
#include "inferenceutils/json_text.h"

#include <toml++/toml.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/paths.h"

namespace iu {
namespace {

bool IsIdentifier(absl::string_view s) {
  if (s.empty() || absl::ascii_isdigit(static_cast<unsigned char>(s[0]))) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  }
  return true;
}

bool IsDottedName(absl::string_view s) {
  if (s.empty()) return false;
  for (absl::string_view part : absl::StrSplit(s, '.')) {
    if (!IsIdentifier(part)) return false;
  }
  return true;
}

std::string Absolute(const std::string& path, const std::string& base) {
  if (path.empty() || path[0] == '/') return path;
  return base.empty() ? path : base + "/" + path;
}

std::string PyString(const std::string& s) { return PythonStr(s); }

std::string Parent(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string(".") : slash == 0 ? std::string("/") : path.substr(0, slash);
}

}  // namespace

absl::StatusOr<AppEntry> ParseAppEntry(const std::string& text) {
  auto colon = text.find(':');
  AppEntry entry;
  if (colon != std::string::npos) {
    entry.module = text.substr(0, colon);
    entry.function = text.substr(colon + 1);
  }
  if (colon == std::string::npos || !IsDottedName(entry.module) || !IsDottedName(entry.function)) {
    return UsageError(absl::StrCat("entry '", text,
                                   "' is not MODULE:FUNC (e.g. myapp.cli:main; a file is --script FILE)"));
  }
  return entry;
}

absl::StatusOr<AppSettings> ParseAppSettings(const std::string& text, const std::string& origin,
                                             const std::string& base_dir, bool pyproject) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& error) {
    const auto& where = error.source().begin;
    return ConfigError(absl::StrCat(origin, ":", where.line, ":", where.column, ": invalid TOML: ",
                                    std::string(error.description())));
  }
  AppSettings s;
  const toml::table* table = &root;
  if (pyproject) {
    if (const toml::table* project = root["project"].as_table()) {
      if (auto name = (*project)["name"].value<std::string>()) s.name = *name;
      if (auto version = (*project)["version"].value<std::string>()) s.version = *version;
    }
    table = root["tool"]["inferenceutils"].as_table();
    if (!table) return s;
    s.origin = origin;
  } else {
    s.origin = origin;
  }
  const std::string where = pyproject ? absl::StrCat(origin, " [tool.inferenceutils]") : origin;
  auto bad = [&](absl::string_view key, absl::string_view what) {
    return ConfigError(absl::StrCat(where, ": '", key, "' must be ", what));
  };
  for (const auto& [key_node, node] : *table) {
    std::string key(key_node.str());
    auto string_field = [&](std::string* out, bool path) -> absl::Status {
      auto value = node.value<std::string>();
      if (!value || value->empty()) return bad(key, "a non-empty string");
      *out = path ? Absolute(*value, base_dir) : *value;
      return absl::OkStatus();
    };
    auto list_field = [&](std::vector<std::string>* out, bool path) -> absl::Status {
      const toml::array* array = node.as_array();
      if (!array) return bad(key, "an array of strings");
      for (const auto& item : *array) {
        auto value = item.value<std::string>();
        if (!value || value->empty()) return bad(key, "an array of non-empty strings");
        out->push_back(path ? Absolute(*value, base_dir) : *value);
      }
      return absl::OkStatus();
    };
    absl::Status status;
    if (key == "name") status = string_field(&s.name, false);
    else if (key == "entry") status = string_field(&s.entry, false);
    else if (key == "script") status = string_field(&s.script, false);
    else if (key == "version") status = string_field(&s.version, false);
    else if (key == "icon") status = string_field(&s.icon, true);
    else if (key == "spec") status = string_field(&s.spec, true);
    else if (key == "output") status = string_field(&s.output, true);
    else if (key == "bundles") status = list_field(&s.bundles, true);
    else if (key == "exclude") status = list_field(&s.exclude, false);
    else if (key == "level") {
      auto value = node.value<int64_t>();
      if (!value || *value < 1 || *value > 22) return bad(key, "an integer 1..22");
      s.level = static_cast<int>(*value);
    } else {
      return ConfigError(absl::StrCat(where, ": unknown key '", key,
                                      "' (known: name, entry, script, icon, spec, version, output, bundles, "
                                      "exclude, level)"));
    }
    if (!status.ok()) return status;
  }
  if (!s.entry.empty() && !s.script.empty()) {
    return ConfigError(absl::StrCat(where, ": give 'entry' or 'script', not both"));
  }
  return s;
}

absl::StatusOr<AppSettings> LoadAppSettings(const std::string& app_dir) {
  AppSettings project;  // [project] name and version, always defaults
  std::string pyproject = app_dir + "/pyproject.toml";
  if (IsRegularFile(pyproject)) {
    absl::StatusOr<std::string> text = ReadFile(pyproject);
    if (!text.ok()) return text.status();
    absl::StatusOr<AppSettings> parsed = ParseAppSettings(*text, pyproject, app_dir, true);
    if (!parsed.ok()) return parsed.status();
    project = *std::move(parsed);
  }
  std::string app_toml = app_dir + "/app.toml";
  if (!IsRegularFile(app_toml)) return project;
  absl::StatusOr<std::string> text = ReadFile(app_toml);
  if (!text.ok()) return text.status();
  absl::StatusOr<AppSettings> parsed = ParseAppSettings(*text, app_toml, app_dir, false);
  if (!parsed.ok()) return parsed.status();
  if (parsed->name.empty()) parsed->name = project.name;
  if (parsed->version.empty()) parsed->version = project.version;
  return parsed;
}

AppSettings MergeAppSettings(const AppSettings& file, const AppSettings& command_line) {
  AppSettings s = file;
  auto take = [](std::string& into, const std::string& value) {
    if (!value.empty()) into = value;
  };
  take(s.name, command_line.name);
  take(s.icon, command_line.icon);
  take(s.spec, command_line.spec);
  take(s.version, command_line.version);
  take(s.output, command_line.output);
  if (!command_line.entry.empty() || !command_line.script.empty()) {
    s.entry = command_line.entry;
    s.script = command_line.script;
  }
  if (!command_line.bundles.empty()) s.bundles = command_line.bundles;
  s.exclude.insert(s.exclude.end(), command_line.exclude.begin(), command_line.exclude.end());
  if (command_line.level != 0) s.level = command_line.level;
  return s;
}

std::string DesktopExecArgument(const std::string& path) {
  // Desktop Entry Specification, "The Exec key": reserved characters need the argument quoted;
  // inside quotes ", `, $ and \ are escaped with a backslash. Then the string-value escaping
  // doubles every backslash, and a literal % is %%.
  bool quote = path.empty();
  for (char c : path) {
    if (absl::StrContains(" \t\n\"'\\><~|&;$*?#()`", c)) quote = true;
  }
  std::string arg;
  if (quote) {
    arg = "\"";
    for (char c : path) {
      if (c == '"' || c == '`' || c == '$' || c == '\\') arg += '\\';
      arg += c;
    }
    arg += "\"";
  } else {
    arg = path;
  }
  std::string out;
  for (char c : arg) {
    if (c == '\\') out += "\\\\";
    else if (c == '%') out += "%%";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string DesktopEntry(const std::string& name, const std::string& exec_path, const std::string& icon,
                         const std::string& comment) {
  auto value = [](const std::string& s) {
    std::string out;
    for (char c : s) {
      if (c == '\\') out += "\\\\";
      else if (c == '\n') out += "\\n";
      else if (c == '\t') out += "\\t";
      else if (c == '\r') out += "\\r";
      else out += c;
    }
    return out;
  };
  std::string text = "[Desktop Entry]\nType=Application\nVersion=1.0\n";
  absl::StrAppend(&text, "Name=", value(name), "\n");
  if (!comment.empty()) absl::StrAppend(&text, "Comment=", value(comment), "\n");
  absl::StrAppend(&text, "Exec=", DesktopExecArgument(exec_path), "\n");
  absl::StrAppend(&text, "Icon=", value(icon.empty() ? "application-x-executable" : icon), "\n");
  absl::StrAppend(&text, "Terminal=false\nCategories=Utility;\n");
  return text;
}

std::vector<std::string> AppPythonArgv(const InstalledApp& app, const std::string& app_path,
                                       const std::vector<std::string>& args, const std::string& traceback_log) {
  std::string code = absl::StrCat("import sys\nsys.argv[0] = ", PyString(app_path), "\n");
  std::string run;
  if (app.entry.script.empty()) {
    absl::StrAppend(&code, "sys.path[0] = ", PyString(app.files_dir), "\n",
                    "def _iu_app_main():\n"
                    "    import importlib\n"
                    "    target = importlib.import_module(", PyString(app.entry.module), ")\n",
                    "    for name in ", PyString(app.entry.function), ".split('.'):\n",
                    "        target = getattr(target, name)\n"
                    "    return target()\n");
    run = "sys.exit(_iu_app_main())";
  } else {
    std::string script = app.files_dir + "/" + app.entry.script;
    absl::StrAppend(&code, "sys.path[0] = ", PyString(Parent(script)), "\n");
    // As python runs a script, but with sys.argv[0] the app (runpy.run_path would set it to the
    // script): a fresh __main__ module, the script's code from its loader, which keeps it compiled
    // in __pycache__ (the builtin compile() sets up the ast module's types first: ~1 ms a start).
    run = absl::StrCat("from importlib.machinery import SourceFileLoader\n",
                       "_iu_loader = SourceFileLoader('__main__', ", PyString(script), ")\n",
                       "_iu_main = type(sys)('__main__')\n",
                       "_iu_main.__file__ = _iu_loader.path\n",
                       "_iu_main.__loader__ = _iu_loader\n",
                       "_iu_main.__builtins__ = __builtins__\n",
                       "sys.modules['__main__'] = _iu_main\n",
                       "exec(_iu_loader.get_code('__main__'), _iu_main.__dict__)");
  }
  if (traceback_log.empty()) {
    absl::StrAppend(&code, run, "\n");
  } else {
    // No terminal: a failure (a non-zero exit, an uncaught exception and its traceback) is also
    // written to the log, and the launcher's `app_failed` document shows the failure dialog.
    std::string indented = absl::StrReplaceAll(run, {{"\n", "\n    "}});
    absl::StrAppend(&code,
                    "def _iu_app_failed(what, trace=False):\n"
                    "    try:\n"
                    "        with open(", PyString(traceback_log), ", 'a') as log:\n"
                    "            if trace:\n"
                    "                import traceback\n"
                    "                traceback.print_exc(file=log)\n"
                    "            log.write('the app ' + what + '\\n')\n"
                    "    except OSError:\n"
                    "        pass\n"
                    "    try:\n"
                    "        import _inferenceutils\n"
                    "        _inferenceutils.document('app_failed')\n"
                    "    except Exception:\n"
                    "        pass\n"
                    "try:\n    ", indented, "\n",
                    "except KeyboardInterrupt:\n    raise\n"
                    "except SystemExit as _iu_exit:\n"
                    "    if _iu_exit.code not in (None, 0):\n"
                    "        _iu_app_failed('exited with status %r' % (_iu_exit.code,))\n"
                    "    raise\n"
                    "except BaseException:\n"
                    "    _iu_app_failed('stopped with an uncaught exception', True)\n"
                    "    raise\n");
  }
  std::vector<std::string> argv = {"-c", code};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

}  // namespace iu
