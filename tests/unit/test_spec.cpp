// The runtime spec: parsing, PEP 723, requires-python, overrides, normalization and the key.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "inferenceutils/errors.h"
#include "inferenceutils/pip_config.h"
#include "inferenceutils/spec.h"

namespace {

std::string SpecTempDir() {
  char pattern[] = "/tmp/iu-spec-test-XXXXXX";
  return mkdtemp(pattern);
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

std::string Message(const absl::Status& status) { return std::string(status.message()); }

std::string RepoAssets() {
  // IU_TEST_FIXTURES = <repo>/tests/fixtures
  return std::string(IU_TEST_FIXTURES) + "/../../assets";
}

iu::KeyContext Context() { return {"cpu-0123456789abcdef", "cp311", "manylinux_2_36_x86_64", ""}; }

}  // namespace

TEST_CASE("spec: requirements and preload alone make a valid spec") {
  auto spec = iu::ParseSpec("requirements = [\"numpy>=1.26\", \"llama-cpp-python\"]\npreload = [\"numpy\"]\n",
                            "mine.toml");
  REQUIRE(spec.ok());
  CHECK(spec->requirements == std::vector<std::string>{"numpy>=1.26", "llama-cpp-python"});
  CHECK(spec->preload == std::vector<std::string>{"numpy"});
  CHECK(spec->libraries.empty());
  CHECK(spec->backend_package == "llama-cpp-python");
  CHECK(spec->sources.index_url.empty());
  CHECK_FALSE(spec->sources.offline);
  CHECK(spec->origin == "mine.toml");
}

TEST_CASE("spec: every key") {
  auto spec = iu::ParseSpec(R"(
requirements = ["a", "b[x]"]
preload = ["a", "b.c"]
libraries = ["/opt/lib/libfoo.so", "lib/libbar.so"]
backend_package = "Llama_CPP.Python"
build_env = { FOO = "1" }
[sources]
index_url = "file:///srv/simple"
extra_index_urls = ["http://127.0.0.1:8000/simple"]
find_links = ["/srv/files", "wheels"]
offline = true
[backends.cuda]
build_env = { CMAKE_CUDA_ARCHITECTURES = "86" }
wheel_indexes = []
[backends.cpu]
build_env = { CMAKE_ARGS = "-DGGML_NATIVE=ON" }
)",
                            "/etc/spec.toml", "/etc/specs");
  REQUIRE(spec.ok());
  CHECK(spec->libraries.size() == 2);
  CHECK(spec->build_env.at("FOO") == "1");
  CHECK(spec->sources.index_url == "file:///srv/simple");
  CHECK(spec->sources.extra_index_urls == std::vector<std::string>{"http://127.0.0.1:8000/simple"});
  // A relative find_links path is relative to the spec file's directory.
  CHECK(spec->sources.find_links == std::vector<std::string>{"/srv/files", "/etc/specs/wheels"});
  CHECK(spec->sources.offline);
  CHECK(spec->backends.at("cuda").wheel_indexes_set);
  CHECK(spec->backends.at("cuda").wheel_indexes.empty());
  CHECK_FALSE(spec->backends.at("cpu").wheel_indexes_set);

  std::map<std::string, std::string> env = {{"CMAKE_ARGS", "-DGGML_CUDA=on"}};
  std::vector<std::string> indexes = {"https://wheels/cu124"};
  iu::ApplyBackendSettings(*spec, "cuda", &env, &indexes);
  CHECK(env.at("CMAKE_ARGS") == "-DGGML_CUDA=on");
  CHECK(env.at("CMAKE_CUDA_ARCHITECTURES") == "86");
  CHECK(env.at("FOO") == "1");
  CHECK(indexes.empty());

  std::map<std::string, std::string> cpu_env;
  std::vector<std::string> cpu_indexes = {"https://wheels/cpu"};
  iu::ApplyBackendSettings(*spec, "cpu", &cpu_env, &cpu_indexes);
  CHECK(cpu_env.at("CMAKE_ARGS") == "-DGGML_NATIVE=ON");
  CHECK(cpu_indexes == std::vector<std::string>{"https://wheels/cpu"});

  auto json = spec->ToJson();
  CHECK(json["sources"]["offline"] == true);
  CHECK(json["backends"]["cuda"]["wheel_indexes"].is_array());
}

TEST_CASE("spec: unknown keys are errors naming the key and the file") {
  auto top = iu::ParseSpec("requirements = []\nrequirement = [\"x\"]\n", "/home/u/spec.toml");
  REQUIRE_FALSE(top.ok());
  CHECK(iu::ExitCodeOf(top.status()) == iu::kExitConfig);
  CHECK(Message(top.status()).find("'requirement'") != std::string::npos);
  CHECK(Message(top.status()).find("/home/u/spec.toml:2") != std::string::npos);

  auto nested = iu::ParseSpec("[sources]\nindex-url = \"x\"\n", "s.toml");
  REQUIRE_FALSE(nested.ok());
  CHECK(Message(nested.status()).find("'sources.index-url'") != std::string::npos);

  auto backend = iu::ParseSpec("[backends.cuda]\ncmake_args = \"x\"\n", "s.toml");
  REQUIRE_FALSE(backend.ok());
  CHECK(Message(backend.status()).find("'backends.cuda.cmake_args'") != std::string::npos);
}

TEST_CASE("spec: wrong types and bad values are errors") {
  struct Case {
    const char* toml;
    const char* expect;
  } cases[] = {
      {"requirements = \"numpy\"\n", "'requirements' must be an array of strings, not a string"},
      {"requirements = [1]\n", "'requirements' must be an array of strings; it holds an integer"},
      {"preload = [\"llama-cpp\"]\n", "not a module name"},
      {"libraries = {}\n", "'libraries' must be an array"},
      {"backend_package = [\"x\"]\n", "'backend_package' must be a string"},
      {"backend_package = \"x>=1\"\n", "not a project name"},
      {"build_env = { A = 1 }\n", "'build_env.A' must be a string, not an integer"},
      {"build_env = { \"A B\" = \"1\" }\n", "not an environment variable name"},
      {"sources = \"pypi\"\n", "'sources' must be a table"},
      {"[sources]\noffline = \"yes\"\n", "'sources.offline' must be true or false"},
      {"[sources]\nfind_links = \"/x\"\n", "'sources.find_links' must be an array"},
      {"backends = 1\n", "'backends' must be a table"},
      {"[backends]\ncuda = 1\n", "'backends.cuda' must be a table"},
      {"requirements = [\"-e .\"]\n", "not a valid requirement"},
      {"requirements = [\"numpy >>= 1\"]\n", "not a valid requirement"},
      {"requirements = [\"numpy\"\n", "invalid TOML"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.toml);
    auto spec = iu::ParseSpec(c.toml, "bad.toml");
    REQUIRE_FALSE(spec.ok());
    CHECK(iu::ExitCodeOf(spec.status()) == iu::kExitConfig);
    CHECK(Message(spec.status()).find(c.expect) != std::string::npos);
    CHECK(Message(spec.status()).find("bad.toml") != std::string::npos);
  }
}

TEST_CASE("spec: the shipped default spec") {
  auto spec = iu::LoadSpecFile(RepoAssets() + "/default-spec.toml");
  REQUIRE(spec.ok());
  CHECK(spec->requirements == std::vector<std::string>{"llama-cpp-python"});
  CHECK(spec->preload == std::vector<std::string>{"llama_cpp"});
  CHECK(spec->backend_package == "llama-cpp-python");
  CHECK(spec->sources.index_url.empty());  // PyPI
  CHECK_FALSE(spec->sources.offline);
}

TEST_CASE("spec: a missing spec file is a clear error") {
  auto spec = iu::LoadSpecFile("/nonexistent/spec.toml");
  REQUIRE_FALSE(spec.ok());
  CHECK(iu::ExitCodeOf(spec.status()) == iu::kExitConfig);
  CHECK(Message(spec.status()).find("/nonexistent/spec.toml") != std::string::npos);
}

TEST_CASE("pep723: a script block") {
  auto meta = iu::ParsePep723(
      "#!/usr/bin/env python\n"
      "# /// script\n"
      "# requires-python = \">=3.10\"\n"
      "# dependencies = [\n"
      "#   \"requests<3\",\n"
      "#   \"rich\",\n"
      "# ]\n"
      "#\n"
      "# [tool.something]\n"
      "# x = 1\n"
      "# ///\n"
      "print('hi')\n",
      "s.py");
  REQUIRE(meta.ok());
  CHECK(meta->present);
  CHECK(meta->dependencies == std::vector<std::string>{"requests<3", "rich"});
  CHECK(meta->requires_python == ">=3.10");
  CHECK(meta->path == "s.py");
}

TEST_CASE("pep723: absent, other types, incomplete and CRLF blocks") {
  auto none = iu::ParsePep723("import os\n# just a comment\n", "s.py");
  REQUIRE(none.ok());
  CHECK_FALSE(none->present);
  CHECK(none->dependencies.empty());

  // Another type is not the script block.
  auto other = iu::ParsePep723("# /// pyproject\n# dependencies = [\"x\"]\n# ///\n", "s.py");
  REQUIRE(other.ok());
  CHECK_FALSE(other->present);

  // No closing line: no block.
  auto open = iu::ParsePep723("# /// script\n# dependencies = [\"x\"]\nprint()\n", "s.py");
  REQUIRE(open.ok());
  CHECK_FALSE(open->present);

  // Indented or trailing-space markers do not count (the regex is exact).
  auto indented = iu::ParsePep723("  # /// script\n# dependencies = [\"x\"]\n# ///\n", "s.py");
  REQUIRE(indented.ok());
  CHECK_FALSE(indented->present);

  auto crlf = iu::ParsePep723("# /// script\r\n# dependencies = [\"x\"]\r\n# ///\r\n", "s.py");
  REQUIRE(crlf.ok());
  CHECK(crlf->present);
  CHECK(crlf->dependencies == std::vector<std::string>{"x"});

  // Closing without a final newline at the end of the file.
  auto eof = iu::ParsePep723("# /// script\n# dependencies = [\"y\"]\n# ///", "s.py");
  REQUIRE(eof.ok());
  CHECK(eof->dependencies == std::vector<std::string>{"y"});
}

TEST_CASE("pep723: the block closes at the last '# ///' of its comment run") {
  // As the reference regex's greedy content: an embedded `# ///` line is content, and TOML
  // then sees it (here a comment-free line "///" is invalid TOML, proving it was included).
  auto greedy = iu::ParsePep723("# /// script\n# dependencies = [\"a\"]\n# ///\n# ///\nx = 1\n", "s.py");
  REQUIRE_FALSE(greedy.ok());
  CHECK(Message(greedy.status()).find("invalid TOML") != std::string::npos);

  // A non-comment line ends the run; the block before it is complete.
  auto split = iu::ParsePep723("# /// script\n# dependencies = [\"a\"]\n# ///\n\n# ///\n", "s.py");
  REQUIRE(split.ok());
  CHECK(split->dependencies == std::vector<std::string>{"a"});
}

TEST_CASE("pep723: two script blocks, bad TOML and wrong types are errors naming the script") {
  auto two = iu::ParsePep723(
      "# /// script\n# dependencies = [\"a\"]\n# ///\n\nx = 1\n\n# /// script\n# dependencies = [\"b\"]\n# ///\n",
      "/tmp/two.py");
  REQUIRE_FALSE(two.ok());
  CHECK(iu::ExitCodeOf(two.status()) == iu::kExitConfig);
  CHECK(Message(two.status()).find("/tmp/two.py:7") != std::string::npos);
  CHECK(Message(two.status()).find("second") != std::string::npos);

  auto bad = iu::ParsePep723("x = 1\n# /// script\n# dependencies = [\"a\"\n# ///\n", "/tmp/bad.py");
  REQUIRE_FALSE(bad.ok());
  CHECK(iu::ExitCodeOf(bad.status()) == iu::kExitConfig);
  CHECK(Message(bad.status()).find("/tmp/bad.py:") != std::string::npos);
  CHECK(Message(bad.status()).find("invalid TOML") != std::string::npos);

  auto type = iu::ParsePep723("# /// script\n# dependencies = \"a\"\n# ///\n", "t.py");
  REQUIRE_FALSE(type.ok());
  CHECK(Message(type.status()).find("'dependencies' must be an array") != std::string::npos);

  auto python = iu::ParsePep723("# /// script\n# requires-python = 3.11\n# ///\n", "t.py");
  REQUIRE_FALSE(python.ok());
  CHECK(Message(python.status()).find("'requires-python' must be a string") != std::string::npos);

  auto requirement = iu::ParsePep723("# /// script\n# dependencies = [\"not a requirement!\"]\n# ///\n", "t.py");
  REQUIRE_FALSE(requirement.ok());
  CHECK(Message(requirement.status()).find("not a valid requirement") != std::string::npos);
}

TEST_CASE("requires-python: PEP 440 specifiers against the embedded version") {
  const char* satisfied[] = {"",          ">=3.10",   ">=3.11.2", "<3.12",      "<=3.11.2",   ">3.11",
                             "==3.11.*",  "==3.11.2", "!=3.11.1", "!=3.10.*",   "~=3.11",     "~=3.11.0",
                             ">=3.8,<4",  " >= 3.9 , < 3.13 ",     "==3.*",      ">3.11.1",   ">=3.11.0rc1",
                             "<3.11.3.dev0", "===3.11.2", ">=3.11.2.dev0"};
  for (const char* spec : satisfied) {
    CAPTURE(spec);
    CHECK(iu::CheckRequiresPython(spec, "3.11.2", "s.py").ok());
  }
  const char* unsatisfied[] = {">=3.12", "<3.11", "==3.10.*", "!=3.11.*", "~=3.12", "~=3.11.3",
                               ">=3.8,<3.11", ">3.11.2", "==3.11", "<=3.11.1", ">=3.11.3a1", "==4.*"};
  for (const char* spec : unsatisfied) {
    CAPTURE(spec);
    absl::Status status = iu::CheckRequiresPython(spec, "3.11.2", "/x/s.py");
    REQUIRE_FALSE(status.ok());
    CHECK(iu::ExitCodeOf(status) == iu::kExitUnavailable);
    CHECK(Message(status).find(spec) != std::string::npos);
    CHECK(Message(status).find("3.11.2") != std::string::npos);
    CHECK(Message(status).find("/x/s.py") != std::string::npos);
  }
  const char* invalid[] = {"3.11", ">=", "~=3", ">=three", "=>3.10", ">=3.11.*"};
  for (const char* spec : invalid) {
    CAPTURE(spec);
    absl::Status status = iu::CheckRequiresPython(spec, "3.11.2", "s.py");
    REQUIRE_FALSE(status.ok());
    CHECK(iu::ExitCodeOf(status) == iu::kExitConfig);
  }
}

TEST_CASE("normalization: names, extras, specifiers, markers") {
  CHECK(iu::NormalizeName("Llama_CPP.Python") == "llama-cpp-python");
  CHECK(iu::NormalizeName("a--b__c") == "a-b-c");
  CHECK(iu::NormalizeRequirement("Llama_CPP.Python") == iu::NormalizeRequirement("llama-cpp-python"));
  CHECK(iu::NormalizeRequirement("Llama_CPP.Python") == "llama-cpp-python");
  CHECK(iu::NormalizeRequirement("NumPy >= 1.26 , < 2") == "numpy<2,>=1.26");
  CHECK(iu::NormalizeRequirement("numpy<2,>=1.26") == iu::NormalizeRequirement("numpy >=1.26,<2"));
  CHECK(iu::NormalizeRequirement("numpy (>=1.26)") == "numpy>=1.26");
  CHECK(iu::NormalizeRequirement("requests [socks , Security]") == "requests[security,socks]");
  CHECK(iu::NormalizeRequirement("foo ; python_version  <  '3.12'") == "foo; python_version < \"3.12\"");
  CHECK(iu::NormalizeRequirement("Foo @ file:///x/foo.whl ; os_name=='posix'") ==
        "foo @ file:///x/foo.whl ; os_name == \"posix\"");
  // Markers: one canonical form whatever the whitespace and quotes (issue #12).
  CHECK(iu::NormalizeRequirement("a;python_version>='3'and(os_name=='posix'or extra==\"x\")") ==
        "a; python_version >= \"3\" and (os_name == \"posix\" or extra == \"x\")");
  CHECK(iu::NormalizeRequirement("a ; ( python_version >= \"3\" ) and os_name not  in 'nt ce'") ==
        "a; (python_version >= \"3\") and os_name not in \"nt ce\"");
  CHECK(iu::NormalizeRequirement("a; platform_release == 'say \"hi\"'") == "a; platform_release == 'say \"hi\"'");
  for (const char* bad : {"a; bogus_var == '1'", "a; python_version >=", "a; (os_name == 'nt'", "a; os_name == 'nt' and",
                          "a; python_version ~ '3'", "a; os_name == 'nt' or or", "a; os_name not 'nt'", "a; 'x'",
                          "a; os_name == 'nt", "a; os_name == 'nt')", "a; andos_name == 'nt'"}) {
    CAPTURE(bad);
    absl::Status status = iu::CheckRequirement(bad, "x");
    CHECK_FALSE(status.ok());
    CHECK(iu::ExitCodeOf(status) == iu::kExitConfig);
    CHECK(std::string(status.message()).find("marker") != std::string::npos);
  }
  CHECK(iu::CheckRequirement("a; os.name == 'posix' and python_implementation == 'CPython'", "x").ok());  // legacy names pip takes
  CHECK(iu::CheckRequirement("a; '3' <= python_version", "x").ok());
  CHECK(iu::RequirementName("Llama_CPP.Python[server]>=0.3") == "llama-cpp-python");
  CHECK(iu::RequirementName("!!") == "");
  CHECK(iu::CheckRequirement("numpy>=1; python_version>'3'", "x").ok());
  CHECK_FALSE(iu::CheckRequirement("numpy;", "x").ok());
  CHECK_FALSE(iu::CheckRequirement("", "x").ok());
}

TEST_CASE("overrides: environment variables and the command line") {
  auto env = iu::SpecOverridesFromLookup({{"INFERENCEUTILS_SPEC", "/e/spec.toml"},
                                          {"INFERENCEUTILS_WITH", " numpy>=1.26\trich \n"},
                                          {"INFERENCEUTILS_INDEX_URL", "http://127.0.0.1:1/simple"},
                                          {"INFERENCEUTILS_EXTRA_INDEX_URL", "http://a/simple http://b/simple"},
                                          {"INFERENCEUTILS_FIND_LINKS", "/w1 /w2"},
                                          {"INFERENCEUTILS_OFFLINE", "1"}});
  CHECK(env.spec_file == "/e/spec.toml");
  CHECK(env.with == std::vector<std::string>{"numpy>=1.26", "rich"});
  CHECK(env.index_url == "http://127.0.0.1:1/simple");
  CHECK(env.extra_index_urls == std::vector<std::string>{"http://a/simple", "http://b/simple"});
  CHECK(env.find_links == std::vector<std::string>{"/w1", "/w2"});
  CHECK(env.offline);
  for (const char* off : {"", "0", "false", "No", "OFF"}) {
    CHECK_FALSE(iu::SpecOverridesFromLookup({{"INFERENCEUTILS_OFFLINE", off}}).offline);
  }
  CHECK(iu::SpecOverridesFromLookup({{"INFERENCEUTILS_OFFLINE", "yes"}}).offline);

  iu::SpecOverrides cli;
  cli.with = {"tqdm"};
  cli.index_url = "file:///cli/simple";
  auto merged = iu::MergeOverrides(cli, env);
  CHECK(merged.spec_file == "/e/spec.toml");
  CHECK(merged.with == std::vector<std::string>{"tqdm"});
  CHECK(merged.index_url == "file:///cli/simple");
  CHECK(merged.extra_index_urls == env.extra_index_urls);
  CHECK(merged.find_links == env.find_links);
  CHECK(merged.offline);
}

TEST_CASE("resolve: default spec, --with, PEP 723 and sources") {
  iu::SpecOverrides overrides;
  overrides.with = {"rich", "llama_cpp_python"};  // the second duplicates the default's
  overrides.index_url = "file:///idx/simple";
  overrides.extra_index_urls = {"http://127.0.0.1:9/simple"};
  overrides.find_links = {"/wheels"};
  overrides.offline = true;
  iu::ScriptMetadata script;
  script.present = true;
  script.path = "s.py";
  script.dependencies = {"numpy>=1", "Rich"};
  auto spec = iu::ResolveSpec(RepoAssets(), overrides, &script);
  REQUIRE(spec.ok());
  CHECK(spec->requirements == std::vector<std::string>{"llama-cpp-python", "rich", "numpy>=1"});
  CHECK(spec->preload == std::vector<std::string>{"llama_cpp"});
  CHECK(spec->sources.index_url == "file:///idx/simple");
  CHECK(spec->sources.extra_index_urls == std::vector<std::string>{"http://127.0.0.1:9/simple"});
  CHECK(spec->sources.find_links == std::vector<std::string>{"/wheels"});
  CHECK(spec->sources.offline);
  CHECK(spec->origin.find("default") == 0);

  // A spec file replaces the default; its own sources are kept unless overridden.
  std::string dir = SpecTempDir();
  WriteText(dir + "/spec.toml",
            "requirements = [\"iu-fixture-pure\"]\npreload = []\n[sources]\nindex_url = \"file:///mine\"\n"
            "extra_index_urls = [\"http://x/simple\"]\n");
  iu::SpecOverrides file_overrides;
  file_overrides.spec_file = dir + "/spec.toml";
  file_overrides.extra_index_urls = {"http://y/simple"};
  auto from_file = iu::ResolveSpec("/nonexistent-assets", file_overrides, nullptr);
  REQUIRE(from_file.ok());
  CHECK(from_file->requirements == std::vector<std::string>{"iu-fixture-pure"});
  CHECK(from_file->preload.empty());
  CHECK(from_file->sources.index_url == "file:///mine");
  CHECK(from_file->sources.extra_index_urls == std::vector<std::string>{"http://x/simple", "http://y/simple"});
  CHECK(from_file->origin == dir + "/spec.toml");

  // Errors: bad --with, bad PEP 723 dependency, missing default spec.
  iu::SpecOverrides bad_with;
  bad_with.with = {"not valid!"};
  auto with_error = iu::ResolveSpec(RepoAssets(), bad_with, nullptr);
  REQUIRE_FALSE(with_error.ok());
  CHECK(Message(with_error.status()).find("--with") != std::string::npos);

  iu::ScriptMetadata bad_script;
  bad_script.present = true;
  bad_script.path = "/p/s.py";
  bad_script.dependencies = {"@@"};
  auto script_error = iu::ResolveSpec(RepoAssets(), {}, &bad_script);
  REQUIRE_FALSE(script_error.ok());
  CHECK(Message(script_error.status()).find("/p/s.py") != std::string::npos);

  auto missing = iu::ResolveSpec("/nonexistent-assets", {}, nullptr);
  REQUIRE_FALSE(missing.ok());
  CHECK(iu::ExitCodeOf(missing.status()) == iu::kExitConfig);
  CHECK(Message(missing.status()).find("default-spec.toml") != std::string::npos);
}

TEST_CASE("pip config: files in pip's order, [install] over [global], PIP_* over files") {
  std::string dir = SpecTempDir();
  mkdir((dir + "/etc").c_str(), 0755);
  mkdir((dir + "/etc/pip").c_str(), 0755);
  mkdir((dir + "/home").c_str(), 0755);
  mkdir((dir + "/home/.pip").c_str(), 0755);
  WriteText(dir + "/etc/pip/pip.conf", "[global]\nindex-url = file:///global\nproxy = http://proxy:3128\n");
  WriteText(dir + "/home/.pip/pip.conf",
            "# a comment\n[global]\nindex_url = file:///user\n[install]\nfind-links =\n  /a\n  /b\n"
            "trusted-host = h1 h2\ntimeout: 5\n");
  std::map<std::string, std::string> env = {{"HOME", dir + "/home"}, {"XDG_CONFIG_DIRS", dir + "/etc"}};
  iu::PipConfig config = iu::ReadPipConfig(env);
  CHECK(config.index_url.value == "file:///user");
  CHECK(config.index_url.origin == dir + "/home/.pip/pip.conf [global]");
  REQUIRE(config.find_links.size() == 2);
  CHECK(config.find_links[1].value == "/b");
  REQUIRE(config.trusted_hosts.size() == 2);
  CHECK(config.connection.at("proxy").value == "http://proxy:3128");
  CHECK(config.connection.at("proxy").origin == dir + "/etc/pip/pip.conf [global]");
  CHECK(config.connection.at("timeout").value == "5");
  CHECK(config.ConnectionEnv().at("PIP_PROXY") == "http://proxy:3128");  // (the machine's /etc/pip.conf counts too)
  CHECK(config.ConnectionEnv().at("PIP_TIMEOUT") == "5");

  env["PIP_INDEX_URL"] = "file:///env";
  env["PIP_DEFAULT_TIMEOUT"] = "9";
  config = iu::ReadPipConfig(env);
  CHECK(config.index_url.value == "file:///env");
  CHECK(config.index_url.origin == "PIP_INDEX_URL");
  CHECK(config.connection.at("timeout").origin == "PIP_DEFAULT_TIMEOUT");

  env["PIP_CONFIG_FILE"] = "/dev/null";  // no files at all, the variables still count
  config = iu::ReadPipConfig(env);
  CHECK(config.files.empty());
  CHECK(config.find_links.empty());
  CHECK(config.index_url.value == "file:///env");
}

TEST_CASE("resolve: the pip set-up fills what the spec leaves empty, below options and variables") {
  std::string dir = SpecTempDir();
  WriteText(dir + "/spec.toml", "requirements = []\n[sources]\nextra_index_urls = [\"file:///spec-extra\"]\n");
  iu::PipConfig pip;
  pip.index_url = {"file:///company", "PIP_INDEX_URL"};
  pip.extra_index_urls = {{"file:///company-extra", "/etc/pip.conf [global]"}};
  pip.find_links = {{"/company-wheels", "/etc/pip.conf [global]"}};
  iu::SpecOverrides overrides;
  overrides.spec_file = dir + "/spec.toml";
  auto spec = iu::ResolveSpec("/nonexistent-assets", overrides, nullptr, &pip);
  REQUIRE(spec.ok());
  CHECK(spec->sources.index_url == "file:///company");
  CHECK(spec->sources.OriginOf("index_url", "file:///company") == "PIP_INDEX_URL");
  CHECK(spec->sources.extra_index_urls == std::vector<std::string>{"file:///spec-extra"});  // the spec's
  CHECK(spec->sources.find_links == std::vector<std::string>{"/company-wheels"});
  auto without = iu::ResolveSpec("/nonexistent-assets", overrides, nullptr);
  REQUIRE(without.ok());
  CHECK(iu::RuntimeKey(*spec, Context()) != iu::RuntimeKey(*without, Context()));

  iu::SpecOverrides env = iu::SpecOverridesFromLookup({{"INFERENCEUTILS_INDEX_URL", "file:///variable"}});
  iu::SpecOverrides command_line;
  command_line.spec_file = dir + "/spec.toml";
  auto merged = iu::ResolveSpec("/nonexistent-assets", iu::MergeOverrides(command_line, env), nullptr, &pip);
  REQUIRE(merged.ok());
  CHECK(merged->sources.index_url == "file:///variable");
  CHECK(merged->sources.OriginOf("index_url", "file:///variable") == "INFERENCEUTILS_INDEX_URL");
  command_line.index_url = "file:///option";
  merged = iu::ResolveSpec("/nonexistent-assets", iu::MergeOverrides(command_line, env), nullptr, &pip);
  REQUIRE(merged.ok());
  CHECK(merged->sources.OriginOf("index_url", "file:///option") == "--index-url");
}

TEST_CASE("key: stable for the same inputs") {
  auto a = iu::ParseSpec("requirements = [\"llama-cpp-python\", \"numpy>=1.26,<2\"]\npreload = [\"llama_cpp\"]\n", "a");
  auto b = iu::ParseSpec("requirements = [\"NumPy <2, >=1.26\", \"Llama_CPP.Python\", \"numpy>=1.26,<2\"]\n"
                         "preload = [\"llama_cpp\"]\n", "/elsewhere/b.toml");
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  // Reordered, differently written, duplicated requirements and another origin: same key.
  CHECK(iu::RuntimeKey(*a, Context()) == iu::RuntimeKey(*b, Context()));
  CHECK(iu::RuntimeKeyInputs(*a, Context()) == iu::RuntimeKeyInputs(*b, Context()));
  CHECK(iu::RuntimeKey(*a, Context()) == iu::RuntimeKey(*a, Context()));
  std::string key = iu::RuntimeKey(*a, Context());
  CHECK(key.size() == 16);
  CHECK(key.find_first_not_of("0123456789abcdef") == std::string::npos);

  auto inputs = nlohmann::json::parse(iu::RuntimeKeyInputs(*a, Context()));
  CHECK(inputs["format"] == iu::kRuntimeFormatVersion);
  CHECK(inputs["requirements"] == nlohmann::json({"llama-cpp-python", "numpy<2,>=1.26"}));
  CHECK(inputs["profile_key"] == "cpu-0123456789abcdef");
  CHECK(inputs["python_abi"] == "cp311");
  CHECK_FALSE(inputs.contains("origin"));
}

TEST_CASE("key: every input changes it") {
  auto base = iu::ParseSpec("requirements = [\"llama-cpp-python\"]\npreload = [\"llama_cpp\"]\n", "a");
  REQUIRE(base.ok());
  const std::string key = iu::RuntimeKey(*base, Context());

  auto changed = [&](auto mutate) {
    iu::RuntimeSpec spec = *base;
    iu::KeyContext context = Context();
    mutate(spec, context);
    return iu::RuntimeKey(spec, context);
  };
  CHECK(changed([](iu::RuntimeSpec& s, iu::KeyContext&) { s.requirements = {"llama-cpp-python==0.3.98"}; }) != key);
  CHECK(changed([](iu::RuntimeSpec& s, iu::KeyContext&) { s.requirements.push_back("numpy"); }) != key);
  CHECK(changed([](iu::RuntimeSpec& s, iu::KeyContext&) { s.requirements = {"llama-cpp-python[server]"}; }) != key);
  CHECK(changed([](iu::RuntimeSpec& s, iu::KeyContext&) { s.preload = {}; }) != key);
  CHECK(changed([](iu::RuntimeSpec& s, iu::KeyContext&) { s.libraries = {"/x.so"}; }) != key);
  CHECK(changed([](iu::RuntimeSpec& s, iu::KeyContext&) { s.backend_package = ""; }) != key);
  CHECK(changed([](iu::RuntimeSpec& s, iu::KeyContext&) { s.sources.index_url = "file:///i"; }) != key);
  CHECK(changed([](iu::RuntimeSpec& s, iu::KeyContext&) { s.sources.extra_index_urls = {"http://e"}; }) != key);
  CHECK(changed([](iu::RuntimeSpec& s, iu::KeyContext&) { s.sources.find_links = {"/w"}; }) != key);
  CHECK(changed([](iu::RuntimeSpec& s, iu::KeyContext&) { s.sources.offline = true; }) != key);
  CHECK(changed([](iu::RuntimeSpec& s, iu::KeyContext&) { s.build_env["X"] = "1"; }) != key);
  CHECK(changed([](iu::RuntimeSpec& s, iu::KeyContext&) { s.backends["cpu"].build_env["X"] = "1"; }) != key);
  CHECK(changed([](iu::RuntimeSpec&, iu::KeyContext& c) { c.profile_key = "cuda-0123456789abcdef"; }) != key);
  CHECK(changed([](iu::RuntimeSpec&, iu::KeyContext& c) { c.python_abi = "cp312"; }) != key);
  CHECK(changed([](iu::RuntimeSpec&, iu::KeyContext& c) { c.platform_tag = "manylinux_2_17_x86_64"; }) != key);
  // Settings of another backend and the origin do not count.
  CHECK(changed([](iu::RuntimeSpec& s, iu::KeyContext&) { s.backends["cuda"].build_env["X"] = "1"; }) == key);
  CHECK(changed([](iu::RuntimeSpec& s, iu::KeyContext&) { s.origin = "elsewhere"; }) == key);
  CHECK(changed([](iu::RuntimeSpec& s, iu::KeyContext&) { s.requirements = {"LLAMA_cpp_python"}; }) == key);
}
