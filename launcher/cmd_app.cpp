// Apps (docs/apps.md): `app build` makes one executable file of this launcher, an app and its
// runtime bundles; MaybeRunApp runs such a file. The app's whole command line is the app's, except
// leading --inferenceutils-* options (reserved: they never reach the app).
//
// The warm path of an app: the footer (one pread), one stat of the "verified" marker, app.json,
// then exactly what `inferenceutils run` does. Without a terminal (double-click), progress and
// errors go to <store>/logs/app-<id>.log and the desktop's notifier shows first-run setup and
// failures.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "commands.h"
#include "progressive.h"
#include "info_json.h"
#include "inferenceutils/env_values.h"
#include "inferenceutils/json_text.h"
#include "inferenceutils/app.h"
#include "inferenceutils/bundle.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/provision.h"
#include "inferenceutils/python.h"
#include "inferenceutils/python_home.h"
#include "python_face.h"
#include "selection.h"
#include "terminal_progress.h"

namespace iu {
namespace {

constexpr char kReserved[] = "--inferenceutils-";

std::string Basename(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string Parent(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? std::string(".") : slash == 0 ? std::string("/") : path.substr(0, slash);
}

std::string Mib(uint64_t bytes) {
  if (bytes < (1 << 20)) return absl::StrFormat("%.1f KiB", static_cast<double>(bytes) / 1024);
  return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / (1 << 20));
}

// --- app build ---------------------------------------------------------------------------------

absl::StatusOr<int> Build(const Invocation& invocation, const std::vector<std::string>& args) {
  AppSettings given;
  std::string app_dir;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i], value;
    bool has_inline = false;
    if (absl::StartsWith(a, "--") && a.find('=') != std::string::npos) {
      value = a.substr(a.find('=') + 1);
      a = a.substr(0, a.find('='));
      has_inline = true;
    }
    auto take = [&](std::string* out) -> absl::Status {
      if (!has_inline) {
        if (i + 1 >= args.size()) return UsageError(absl::StrCat("app build: ", a, " needs a value"));
        value = args[++i];
      }
      if (value.empty()) return UsageError(absl::StrCat("app build: ", a, " needs a non-empty value"));
      *out = value;
      return absl::OkStatus();
    };
    absl::Status status;
    std::string text;
    if (a == "-o" || a == "--output") status = take(&given.output);
    else if (a == "--name") status = take(&given.name);
    else if (a == "--entry") status = take(&given.entry);
    else if (a == "--script") status = take(&given.script);
    else if (a == "--icon") status = take(&given.icon);
    else if (a == "--spec") status = take(&given.spec);
    else if (a == "--version") status = take(&given.version);
    else if (a == "--with-bundle") {
      status = take(&text);
      given.bundles.push_back(text);
    } else if (a == "--exclude") {
      status = take(&text);
      given.exclude.push_back(text);
    } else if (a == "--level") {
      status = take(&text);
      if (status.ok() && (!absl::SimpleAtoi(text, &given.level) || given.level < 1 || given.level > 22)) {
        status = UsageError(absl::StrCat("app build: --level needs a number 1..22, got '", text, "'"));
      }
    } else if (!absl::StartsWith(a, "-") && app_dir.empty()) {
      app_dir = a;
    } else {
      status = UsageError(absl::StrCat("app build: unknown argument '", args[i],
                                       "' (see `inferenceutils help app`)"));
    }
    if (!status.ok()) return status;
  }
  if (app_dir.empty()) return UsageError("app build needs APP_DIR (see `inferenceutils help app`)");
  if (!given.entry.empty() && !given.script.empty()) return UsageError("app build: give --entry or --script, not both");
  if (given.spec.empty()) given.spec = invocation.options.spec_file;  // `inferenceutils --spec S app build`
  if (!IsDirectory(app_dir)) return UsageError(absl::StrCat("app build: APP_DIR ", app_dir, " is not a directory"));
  absl::StatusOr<AppSettings> file = LoadAppSettings(app_dir);
  if (!file.ok()) return file.status();

  AppBuildRequest request;
  request.app_dir = app_dir;
  request.settings = MergeAppSettings(*file, given);
  request.launcher = SelfExecutable();
  request.assets_dir = AssetsDir();
  if (CurrentHome().source != "system") {
    request.home_archive = CurrentHome().prefix + ".tar.zst";
    request.home_id = CurrentHome().id;
  }
  TerminalProgress progress(invocation.options.quiet, invocation.options.verbose);
  absl::StatusOr<AppBuildResult> result = BuildApp(request, progress);
  progress.Finish();
  if (!result.ok()) return result.status();
  const nlohmann::json& m = result->manifest;
  std::string entry = m.value("script", "").empty() ? m.value("entry", "") : m.value("script", "");
  std::cout << "built " << result->output << ": " << m.value("name", "") << " " << m.value("version", "")
            << ", entry " << entry << ", " << result->files << " app files, payload " << Mib(result->payload_bytes)
            << " (sha256 " << result->sha256.substr(0, 16) << "...)";
  size_t bundles = m.value("bundles", nlohmann::json::array()).size();
  if (bundles) std::cout << ", " << bundles << " runtime bundle" << (bundles == 1 ? "" : "s");
  std::cout << "\n  desktop entry: " << result->desktop << "\n";
  return 0;
}

// --- running an app ----------------------------------------------------------------------------

struct AppOptions {
  bool info = false, json = false, help = false, desktop = false, setup = false;
  LauncherOptions launcher;
  std::vector<std::string> args;  // the app's
};

constexpr char kAppHelp[] = R"(This program is an app packed with inferenceutils (a launcher with an embedded Python).
Every argument goes to the app, except these leading options, which the launcher takes:

  --inferenceutils-info [--json]   the app's payload, its runtime and this machine's hardware
  --inferenceutils-setup           verify, extract and provision the runtime, then exit
  --inferenceutils-desktop         write APP.desktop beside this file (for its current place)
  --inferenceutils-home=DIR        the store (default: INFERENCEUTILS_HOME, ~/.cache/inferenceutils)
  --inferenceutils-offline         no network (INFERENCEUTILS_OFFLINE=1)
  --inferenceutils-no-build        use an embedded bundle or fail; never build
  --inferenceutils-backend=NAME    force cuda, rocm, metal, vulkan or cpu
  --inferenceutils-verbose         explain decisions
  --inferenceutils-quiet           no progress output
  --inferenceutils-help            this text
)";

absl::StatusOr<AppOptions> ParseAppArgs(int argc, char** argv) {
  AppOptions o;
  int i = 1;
  for (; i < argc; ++i) {
    std::string a = argv[i];
    if (!absl::StartsWith(a, kReserved)) break;
    std::string name = a.substr(std::strlen(kReserved)), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    auto need = [&]() -> absl::Status {
      if (!has_value) {
        if (i + 1 >= argc) return UsageError(absl::StrCat(kReserved, name, " needs a value"));
        value = argv[++i];
      }
      if (value.empty()) return UsageError(absl::StrCat(kReserved, name, " needs a non-empty value"));
      return absl::OkStatus();
    };
    absl::Status status;
    if (name == "info") {
      o.info = true;
      if (has_value) o.json = value == "json";
      if (i + 1 < argc && std::string(argv[i + 1]) == "--json") {
        o.json = true;
        ++i;
      }
    } else if (name == "help") o.help = true;
    else if (name == "desktop") o.desktop = true;
    else if (name == "setup") o.setup = true;
    else if (name == "offline") o.launcher.offline = true;
    else if (name == "no-build") o.launcher.no_build = true;
    else if (name == "verbose") o.launcher.verbose = true;
    else if (name == "quiet") o.launcher.quiet = true;
    else if (name == "home") {
      status = need();
      o.launcher.home = value;
    } else if (name == "backend") {
      status = need();
      o.launcher.backend = value;
    } else {
      status = UsageError(absl::StrCat("unknown option ", a, " (options starting with ", kReserved,
                                       " belong to the launcher; see ", kReserved, "help)"));
    }
    if (!status.ok()) return status;
  }
  o.args.assign(argv + i, argv + argc);
  return o;
}

bool OnPath(const std::string& name, std::string* found) {
  for (absl::string_view dir : absl::StrSplit(Env("PATH"), ':', absl::SkipEmpty())) {
    std::string candidate = absl::StrCat(dir, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) {
      *found = candidate;
      return true;
    }
  }
  return false;
}

// Starts argv without waiting for it and without leaving a zombie (double fork).
void SpawnDetached(const std::vector<std::string>& argv) {
  pid_t child = fork();
  if (child < 0) return;
  if (child == 0) {
    if (fork() != 0) _exit(0);
    setsid();
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
      dup2(null, 0);
      dup2(null, 1);
      dup2(null, 2);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  int status;
  waitpid(child, &status, 0);
}

// What a user without a terminal sees: a log file and the desktop's notifications.
class AppReporter : public Progress {
 public:
  AppReporter(bool headless, const LauncherOptions& options, std::string log, std::string name)
      : headless_(headless), log_(std::move(log)), name_(std::move(name)), terminal_(options.quiet, options.verbose) {}
  ~AppReporter() override {
    if (fd_ >= 0) close(fd_);
  }

  bool headless() const { return headless_; }
  const std::string& log() const { return log_; }
  void set_name(const std::string& name) { name_ = name; }
  // Where the app's name comes from before it is extracted (read only when something is said).
  void set_file(const AppFile* file) { file_ = file; }

  void Step(absl::string_view step) override {
    if (absl::StartsWith(step, "extracting")) SetupStarted();
    Log(step);
    terminal_.Step(step);
  }
  void Detail(absl::string_view detail) override { terminal_.Detail(detail); }
  void Note(absl::string_view message) override {
    Log(message);
    terminal_.Note(message);
  }
  void Finish() override { terminal_.Finish(); }

  // First-run setup (extracting, provisioning) begins: say so once.
  void SetupStarted() {
    if (!headless_ || notified_) return;
    ResolveName();
    notified_ = true;
    std::string text = absl::StrCat("Setting up ", name_, " for its first start; this can take a few minutes. ", LogNote());
    std::string tool;
    if (OnPath("notify-send", &tool)) SpawnDetached({tool, "-a", name_, name_, text});
    else if (OnPath("zenity", &tool)) SpawnDetached({tool, "--notification", absl::StrCat("--text=", text)});
    else if (OnPath("kdialog", &tool)) SpawnDetached({tool, "--title", name_, "--passivepopup", text, "10"});
  }

  // A progressive start (docs/progressive.md): the line in the log and on a terminal, and without
  // a terminal one desktop notification.
  void Background(absl::string_view line) {
    Note(line);
    if (!headless_) return;
    ResolveName();
    std::string text = absl::StrCat(name_, " starts now on a slower runtime; the faster one is being prepared in the "
                                           "background for its next start. ", LogNote());
    std::string tool;
    if (OnPath("notify-send", &tool)) SpawnDetached({tool, "-a", name_, name_, text});
    else if (OnPath("zenity", &tool)) SpawnDetached({tool, "--notification", absl::StrCat("--text=", text)});
    else if (OnPath("kdialog", &tool)) SpawnDetached({tool, "--title", name_, "--passivepopup", text, "10"});
  }

  // A failure: the log, and without a terminal a dialog naming it.
  // `app_ran`: the app itself failed, not its setup.
  void Failed(absl::string_view message, bool app_ran = false) {
    Log(absl::StrCat("error: ", message));
    if (!headless_) return;
    ResolveName();
    std::string where = OpenLog() ? absl::StrCat("The log is ", log_) : absl::StrCat("There is no log (", LogNote(), ").");
    std::string text = app_ran ? absl::StrCat(name_, " stopped with an error.\n\n", where)
                               : absl::StrCat(name_, " could not start:\n", message, "\n\n", where);
    std::string tool;
    if (OnPath("zenity", &tool)) SpawnDetached({tool, "--error", absl::StrCat("--title=", name_), absl::StrCat("--text=", text)});
    else if (OnPath("kdialog", &tool)) SpawnDetached({tool, "--title", name_, "--error", text});
    else if (OnPath("notify-send", &tool)) SpawnDetached({tool, "-u", "critical", "-a", name_, absl::StrCat(name_, " failed"), text});
  }

  // Opens the log (once); false when it cannot be written (a read-only store or HOME).
  bool OpenLog() {
    if (fd_ >= 0) return true;
    if (log_.empty() || !log_error_.empty()) return false;
    MakeDirs(Parent(log_), "").IgnoreError();
    fd_ = open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd_ < 0) log_error_ = std::strerror(errno);
    return fd_ >= 0;
  }
  // What a message says about the log: its path, or that there is none and why.
  std::string LogNote() {
    if (OpenLog()) return absl::StrCat("log: ", log_);
    return absl::StrCat("no log: ", log_, " cannot be written (", log_error_, ")");
  }
  // The log's path for the app's own traceback, "" when it cannot be written.
  std::string WritableLog() { return OpenLog() ? log_ : ""; }

  void Log(absl::string_view line) {
    if (!headless_ || log_.empty()) return;
    ResolveName();
    if (!OpenLog()) return;
    std::time_t now = std::time(nullptr);
    char stamp[32];
    std::strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", std::localtime(&now));
    std::string text = absl::StrCat(stamp, " [", getpid(), "] ", name_, ": ", line, "\n");
    (void)!write(fd_, text.data(), text.size());
  }

 private:
  bool headless_;
  std::string log_, name_;
  std::string log_error_;  // why the log cannot be written
  TerminalProgress terminal_;
  int fd_ = -1;
  bool notified_ = false;
  const AppFile* file_ = nullptr;

  void ResolveName() {
    if (!file_) return;
    if (absl::StatusOr<nlohmann::json> m = ReadAppManifest(*file_); m.ok()) {
      std::string name = m->value("name", "");
      if (!name.empty()) name_ = name;
    }
    file_ = nullptr;
  }
};

// Started as a runtime's bin/python (python, python3, python3.11 in a venv's bin/), not as an app
// that happens to be named python-something.
bool IsRuntimePython(const std::string& argv0, std::string* path) {
  std::string name = Basename(argv0);
  if (!absl::StartsWith(name, "python")) return false;
  for (char c : name.substr(6)) {
    if (!(c == '.' || (c >= '0' && c <= '9'))) return false;
  }
  *path = argv0;
  if (argv0.find('/') == std::string::npos && !OnPath(argv0, path)) return false;
  return PathExists(Parent(Parent(*path)) + "/pyvenv.cfg");
}

std::string DescribeEntry(const InstalledApp& app) { return app.entry.ToString(); }

int PrintInfo(const AppFile& file, const InstalledApp& app, const Selection& s, const absl::StatusOr<Manifest>& runtime,
              bool json) {
  const nlohmann::json& m = app.manifest;
  nlohmann::json bundles = nlohmann::json::array();
  BundleTarget target{s.key, s.request.key_inputs, s.request.backend};
  BundleChoice choice = ChooseBundle(app.bundles, "", target, s.facts);
  for (size_t i = 0; i < choice.candidates.size(); ++i) {
    const BundleCandidate& c = choice.candidates[i];
    if (c.source != "--bundle") continue;
    bundles.push_back({{"path", c.location},
                       {"key", c.manifest.is_object() && c.manifest.contains("key") ? c.manifest["key"] : ""},
                       {"backend", c.manifest.is_object() && c.manifest.contains("backend") ? c.manifest["backend"] : ""},
                       {"chosen", static_cast<int>(i) == choice.chosen},
                       {"rejected", c.rejected}});
  }
  nlohmann::json runtime_json = {{"key", s.key}, {"ready", runtime.ok()}};
  if (runtime.ok()) {
    runtime_json["path"] = runtime->prefix;
    runtime_json["source"] = runtime->source;
    runtime_json["backend"] = runtime->backend;
  } else {
    runtime_json["first_start"] =
        choice.chosen >= 0 ? absl::StrCat("unpack ", choice.candidates[static_cast<size_t>(choice.chosen)].location)
                           : "build";
  }
  nlohmann::json doc = {
      {"app",
       {{"name", m.value("name", "")},
        {"version", m.value("version", "")},
        {"entry", DescribeEntry(app)},
        {"file", file.path},
        {"payload",
         {{"offset", file.footer.payload_offset}, {"size", file.footer.payload_size}, {"sha256", file.footer.sha256}}},
        {"extracted", app.dir},
        {"spec", app.spec_file.empty() ? "default" : app.spec_file},
        {"bundles", bundles},
        {"launcher_version", m.value("launcher_version", "")}}},
      {"runtime", runtime_json},
      {"system", InfoJson(s.facts, s.decision, s.store.root())},
  };
  if (json) {
    std::cout << DumpJson(doc, 2) << "\n";
    return 0;
  }
  std::cout << "app       " << m.value("name", "") << " " << m.value("version", "") << ", entry " << DescribeEntry(app)
            << "\n";
  std::cout << "file      " << file.path << "\n";
  std::cout << "payload   " << file.footer.payload_size << " bytes at offset " << file.footer.payload_offset
            << ", sha256 " << file.footer.sha256 << " (verified)\n";
  std::cout << "extracted " << app.dir << "\n";
  std::cout << "spec      " << (app.spec_file.empty() ? "the default spec" : app.spec_file) << "\n";
  for (const auto& b : bundles) {
    std::cout << "bundle    " << b.value("path", "") << " (" << b.value("backend", "") << ", key " << b.value("key", "")
              << "): " << (b.value("chosen", false) ? "matches this machine" : b.value("rejected", "usable")) << "\n";
  }
  if (runtime.ok()) {
    std::cout << "runtime   " << s.key << " ready at " << runtime->prefix << " (" << runtime->source << ")\n";
  } else {
    std::cout << "runtime   " << s.key << " not provisioned yet; the first start will "
              << runtime_json.value("first_start", "build") << "\n";
  }
  std::cout << "backend   " << s.decision.backend << (s.decision.reasons.empty() ? "" : ": " + s.decision.reasons[0])
            << "\n";
  const Facts& f = s.facts;
  std::cout << "hardware  " << f.cpu.arch << " " << f.cpu.model_name << ", " << f.cpu.usable_cores << " cores ("
            << f.cpu.isa_level << "), " << Mib(f.memory.total_bytes) << " memory";
  for (const auto& gpu : f.nvidia.devices) std::cout << ", GPU " << gpu.name << " (" << gpu.arch << ")";
  std::cout << "\n";
  std::cout << "launcher  inferenceutils " << IU_VERSION << ", embedded Python " << EmbeddedPythonVersion() << "\n";
  return 0;
}

absl::StatusOr<int> WriteDesktop(const AppFile& file, const InstalledApp& app) {
  std::string icon;
  std::string member = app.manifest.value("icon", "");
  if (!member.empty()) {
    icon = file.path + ".png";
    absl::StatusOr<std::string> png = ReadFile(app.dir + "/" + member);
    if (!png.ok()) return png.status();
    if (auto s = WriteFileAtomic(icon, *png); !s.ok()) return s;
  }
  std::string name = app.manifest.value("name", "");
  std::string text = DesktopEntry(name, file.path, icon, absl::StrCat(name, " ", app.manifest.value("version", "")));
  if (auto s = WriteFileAtomic(file.path + ".desktop", text); !s.ok()) return s;
  std::cout << "wrote " << file.path << ".desktop\n";
  return 0;
}

absl::StatusOr<int> RunApp(const AppFile& file, AppOptions& o, AppReporter& reporter) {
  if (auto status = CheckEnvValues(); !status.ok()) return status;
  const std::string store_root = StoreRoot(o.launcher.home);
  ProvisionOptions provision = ProvisionOptionsFor(o.launcher);
  absl::StatusOr<InstalledApp> app = InstallApp(store_root, file, provision.lock_timeout, reporter);
  reporter.Finish();
  if (!app.ok()) return app.status();
  reporter.set_file(nullptr);
  // The app's own launcher tree in the store: its runtimes' bin/python and the Python home.
  if (!app->launcher_prefix.empty()) UseHomeAt(app->launcher_prefix, "store");
  reporter.set_name(app->manifest.value("name", Basename(file.path)));
  if (app->verified) reporter.Log(absl::StrCat(app->extracted ? "extracted " : "verified ", file.path, " into ", app->dir));
  SetAssetsDir(app->assets_dir);
  if (o.desktop) return WriteDesktop(file, *app);

  Invocation invocation;
  invocation.command = Command::kRun;
  invocation.options = o.launcher;
  invocation.options.spec_file = app->spec_file;
  invocation.options.bundles = app->bundles;
  absl::StatusOr<Selection> selection = Select(invocation, std::nullopt);
  if (!selection.ok()) return selection.status();
  absl::StatusOr<Manifest> runtime = selection->store.Lookup(selection->key);
  if (o.info) return PrintInfo(file, *app, *selection, runtime, o.json);
  nlohmann::json pending;  // the selected runtime when this start runs on a fallback
  if (!runtime.ok()) {
    reporter.SetupStarted();
    reporter.Log(absl::StrCat("provisioning runtime ", selection->key, " (", selection->decision.backend, ")"));
    absl::StatusOr<StartRuntime> start = ProvisionForStart(
        invocation, std::nullopt, *selection, reporter, [&](const std::string& line) { reporter.Background(line); });
    reporter.Finish();
    if (!start.ok()) return start.status();
    pending = start->PendingJson();
    runtime = start->manifest;
    reporter.Log(absl::StrCat("runtime ", runtime->key, " ready at ", runtime->prefix, " (", runtime->source, ")"));
  }
  if (o.setup) {
    if (!o.launcher.quiet) std::cout << runtime->prefix << "\n";
    return 0;
  }
  EnsurePythonLink(runtime->prefix, CurrentHome().launcher);
  MarkInUse(runtime->prefix);
  InterpreterConfig config;
  config.program_name = file.path;
  config.argv = AppPythonArgv(*app, file.path, o.args, reporter.headless() ? reporter.WritableLog() : "");
  config.history_file = StateDir() + "/history";
  config.executable = runtime->prefix + "/bin/python";
  config.preload = runtime->preload;
  config.libraries = runtime->libraries;
  AttachPythonFace(invocation.options, *runtime, &*selection, config, pending);
  if (reporter.headless()) {
    // The bootstrap asks for this when the app fails (python may exit inside RunPython).
    config.documents["app_failed"] = [&reporter] {
      reporter.Failed("the app stopped with an error", true);
      return std::string("null");
    };
  }
  return RunPython(config);
}

}  // namespace

absl::StatusOr<int> CmdApp(const Invocation& invocation) {
  const std::vector<std::string>& args = invocation.args;
  if (args.empty()) return UsageError("app needs a subcommand: app build APP_DIR -o OUT ... (see `inferenceutils help app`)");
  if (args[0] == "build") return Build(invocation, std::vector<std::string>(args.begin() + 1, args.end()));
  return UsageError(absl::StrCat("app: unknown subcommand '", args[0], "' (app build APP_DIR -o OUT ...)"));
}

std::optional<absl::StatusOr<int>> MaybeRunApp(int argc, char** argv) {
  const std::string exe = SelfExecutable();
  absl::StatusOr<std::optional<AppFile>> file = OpenAppFile(exe);
  if (file.ok() && !file->has_value()) return std::nullopt;  // a plain launcher: the usual path
  std::string argv0 = argc > 0 ? argv[0] : "";
  if (std::string python; IsRuntimePython(argv0, &python)) {
    // Started as <store>/data/<id>/bin/python of the app's runtime (sys.executable): plain python
    // there, with the assets the app carries.
    if (file.ok()) {
      std::string store = Parent(Parent(Parent(Parent(python))));
      std::string assets = AppInstallDir(store, (*file)->footer.id()) + "/assets";
      if (IsDirectory(assets)) SetAssetsDir(assets);
    }
    return std::nullopt;
  }
  absl::StatusOr<AppOptions> options = ParseAppArgs(argc, argv);
  if (!options.ok()) return options.status();
  if (options->help) {
    std::fputs(kAppHelp, stdout);
    return 0;
  }
  bool headless = !isatty(STDIN_FILENO) && !isatty(STDOUT_FILENO) && !isatty(STDERR_FILENO);
  if (const std::string forced = Env("INFERENCEUTILS_APP_TERMINAL"); !forced.empty()) headless = forced == "0";
  std::string store_root = StoreRoot(options->launcher.home);
  std::string id = file.ok() ? (*file)->footer.id() : "damaged";
  std::string name = Basename(exe);
  AppReporter reporter(headless, options->launcher, absl::StrCat(store_root, "/logs/app-", id, ".log"), name);
  if (file.ok()) reporter.set_file(&**file);
  absl::StatusOr<int> result = file.ok() ? RunApp(**file, *options, reporter) : absl::StatusOr<int>(file.status());
  if (!result.ok()) {
    reporter.Failed(result.status().message());
    if (headless) {
      // The one line on stderr also names the log a user without a terminal can open.
      return WithExit(absl::Status(result.status().code(),
                                   absl::StrCat(result.status().message(), " (", reporter.LogNote(), ")")),
                      static_cast<ExitCode>(ExitCodeOf(result.status())));
    }
  }
  return result;
}

}  // namespace iu
