// Apps: the footer, the entry, the settings files, the desktop entry and the Python command line
// (building, extracting and running an app are exercised end to end in tests/e2e/test_app.py).
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "doctest/doctest.h"
#include "inferenceutils/app.h"
#include "inferenceutils/errors.h"

namespace iu {
namespace {

AppFooter SampleFooter() {
  AppFooter f;
  f.payload_offset = 1000;
  f.payload_size = 500;
  f.manifest_offset = 400;
  f.manifest_size = 100;
  f.sha256 = std::string(64, 'a').replace(0, 4, "0123");
  return f;
}

TEST_CASE("app: the footer round-trips and is checked against the file's size") {
  AppFooter f = SampleFooter();
  std::string bytes = EncodeAppFooter(f);
  REQUIRE(bytes.size() == kAppFooterSize);
  CHECK(bytes.substr(kAppFooterSize - 8) == "IU-APP01");
  uint64_t size = f.payload_offset + f.payload_size + kAppFooterSize;
  auto decoded = DecodeAppFooter(bytes, size, "x");
  REQUIRE(decoded.ok());
  REQUIRE(decoded->has_value());
  CHECK((*decoded)->payload_offset == 1000);
  CHECK((*decoded)->payload_size == 500);
  CHECK((*decoded)->manifest_offset == 400);
  CHECK((*decoded)->manifest_size == 100);
  CHECK((*decoded)->sha256 == f.sha256);
  CHECK((*decoded)->id() == f.sha256.substr(0, 16));

  // A file one byte longer or shorter than the footer says: damaged, exit 77.
  auto wrong = DecodeAppFooter(bytes, size + 1, "x");
  REQUIRE(!wrong.ok());
  CHECK(ExitCodeOf(wrong.status()) == kExitBundle);
  // app.json outside the payload.
  AppFooter outside = f;
  outside.manifest_offset = 450;
  CHECK(!DecodeAppFooter(EncodeAppFooter(outside), size, "x").ok());
  // No magic: not an app at all.
  std::string plain = bytes;
  plain[kAppFooterSize - 1] = 'X';
  auto none = DecodeAppFooter(plain, size, "x");
  REQUIRE(none.ok());
  CHECK(!none->has_value());
  // Another format version: refused, naming it.
  std::string future = bytes;
  future[64] = 2;
  auto refused = DecodeAppFooter(future, size, "x");
  REQUIRE(!refused.ok());
  CHECK(std::string(refused.status().message()).find("app format 2") != std::string::npos);
}

TEST_CASE("app: a file without a payload is not an app") {
  char path[] = "/tmp/iu-test-app-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  std::string text(4096, 'x');
  REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  close(fd);
  auto app = OpenAppFile(path);
  REQUIRE(app.ok());
  CHECK(!app->has_value());
  CHECK(OpenAppFile("/nonexistent/iu-app").ok());
  unlink(path);
}

TEST_CASE("app: entries are MODULE:FUNC with dotted names") {
  auto entry = ParseAppEntry("pkg.cli:App.main");
  REQUIRE(entry.ok());
  CHECK(entry->module == "pkg.cli");
  CHECK(entry->function == "App.main");
  CHECK(entry->ToString() == "pkg.cli:App.main");
  for (const char* bad : {"pkg", "pkg:", ":main", "pkg:1main", "my-pkg:main", "pkg..x:main", "a:b:c"}) {
    auto parsed = ParseAppEntry(bad);
    CHECK_MESSAGE(!parsed.ok(), bad);
    if (!parsed.ok()) CHECK(ExitCodeOf(parsed.status()) == kExitUsage);
  }
}

TEST_CASE("app: settings from app.toml and pyproject.toml") {
  auto s = ParseAppSettings(
      "name = \"Demo\"\nentry = \"demo:main\"\nicon = \"icon.png\"\nspec = \"/abs/spec.toml\"\n"
      "bundles = [\"b/rt.tar.zst\"]\nexclude = [\"tests/\"]\nlevel = 5\n",
      "/app/app.toml", "/app", false);
  REQUIRE(s.ok());
  CHECK(s->name == "Demo");
  CHECK(s->entry == "demo:main");
  CHECK(s->icon == "/app/icon.png");
  CHECK(s->spec == "/abs/spec.toml");
  CHECK(s->bundles == std::vector<std::string>{"/app/b/rt.tar.zst"});
  CHECK(s->exclude == std::vector<std::string>{"tests/"});
  CHECK(s->level == 5);

  auto py = ParseAppSettings(
      "[project]\nname = \"py-app\"\nversion = \"2.0\"\n[tool.inferenceutils]\nscript = \"main.py\"\n",
      "/app/pyproject.toml", "/app", true);
  REQUIRE(py.ok());
  CHECK(py->name == "py-app");
  CHECK(py->version == "2.0");
  CHECK(py->script == "main.py");
  auto none = ParseAppSettings("[project]\nname = \"x\"\n", "/app/pyproject.toml", "/app", true);
  REQUIRE(none.ok());
  CHECK(none->name == "x");

  auto unknown = ParseAppSettings("entrypoint = \"x:y\"\n", "/app/app.toml", "/app", false);
  REQUIRE(!unknown.ok());
  CHECK(ExitCodeOf(unknown.status()) == kExitConfig);
  CHECK(std::string(unknown.status().message()).find("unknown key 'entrypoint'") != std::string::npos);
  CHECK(!ParseAppSettings("level = 40\n", "a", "/", false).ok());
  CHECK(!ParseAppSettings("entry = \"a:b\"\nscript = \"x.py\"\n", "a", "/", false).ok());
  CHECK(!ParseAppSettings("name = [\n", "a", "/", false).ok());
}

TEST_CASE("app: the command line wins over the settings file") {
  AppSettings file;
  file.name = "File";
  file.entry = "a:b";
  file.bundles = {"/x.tar.zst"};
  file.exclude = {"docs/"};
  AppSettings cli;
  cli.script = "run.py";
  cli.exclude = {"tests/"};
  AppSettings merged = MergeAppSettings(file, cli);
  CHECK(merged.name == "File");
  CHECK(merged.entry.empty());
  CHECK(merged.script == "run.py");
  CHECK(merged.bundles == std::vector<std::string>{"/x.tar.zst"});
  CHECK(merged.exclude == std::vector<std::string>{"docs/", "tests/"});
}

TEST_CASE("app: desktop entries quote Exec as the specification says") {
  CHECK(DesktopExecArgument("/opt/apps/hello") == "/opt/apps/hello");
  CHECK(DesktopExecArgument("/home/a b/hello") == "\"/home/a b/hello\"");
  CHECK(DesktopExecArgument("/x/$HOME\"q") == "\"/x/\\\\$HOME\\\\\"q\"");
  CHECK(DesktopExecArgument("/x/100%") == "/x/100%%");
  std::string entry = DesktopEntry("Hello App", "/opt/hello", "/opt/hello.png", "Hello App 1.0");
  CHECK(entry.find("[Desktop Entry]\nType=Application\n") == 0);
  CHECK(entry.find("\nName=Hello App\n") != std::string::npos);
  CHECK(entry.find("\nExec=/opt/hello\n") != std::string::npos);
  CHECK(entry.find("\nIcon=/opt/hello.png\n") != std::string::npos);
  CHECK(entry.find("\nTerminal=false\n") != std::string::npos);
  CHECK(DesktopEntry("x", "/x", "", "").find("\nIcon=application-x-executable\n") != std::string::npos);
}

TEST_CASE("app: the Python command line runs the entry with the app as argv[0]") {
  InstalledApp app;
  app.files_dir = "/store/apps/0123/app";
  app.entry = *ParseAppEntry("pkg.cli:main");
  std::vector<std::string> argv = AppPythonArgv(app, "/home/u/hello", {"--help", "x"}, "");
  REQUIRE(argv.size() == 4);
  CHECK(argv[0] == "-c");
  CHECK(argv[1].find("sys.argv[0] = \"/home/u/hello\"") != std::string::npos);
  CHECK(argv[1].find("import_module(\"pkg.cli\")") != std::string::npos);
  CHECK(argv[1].find("_inferenceutils") == std::string::npos);
  CHECK(argv[2] == "--help");
  CHECK(argv[3] == "x");
  std::vector<std::string> headless = AppPythonArgv(app, "/home/u/hello", {}, "/store/logs/app-0123.log");
  CHECK(headless[1].find("/store/logs/app-0123.log") != std::string::npos);
  CHECK(headless[1].find("document('app_failed')") != std::string::npos);
  app.entry = AppEntry();
  app.entry.script = "bin/run.py";
  std::vector<std::string> script = AppPythonArgv(app, "/home/u/hello", {}, "");
  CHECK(script[1].find("\"/store/apps/0123/app/bin/run.py\"") != std::string::npos);
  CHECK(script[1].find("sys.path[0] = \"/store/apps/0123/app/bin\"") != std::string::npos);
}

}  // namespace
}  // namespace iu
