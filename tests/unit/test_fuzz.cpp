// Fuzz-style checks of every reader of outside input (issue #12): random bytes, and inputs that
// look valid but are hostile, fed to the spec, PEP 723, manifest, facts, bundle and app readers.
// Each reader must return (an error or a value), never crash, abort or throw, and nothing may be
// written outside the sandbox's store. Seeded (IU_FUZZ_SEED overrides, the seed is printed on a
// failure) and bounded in time (IU_FUZZ_MS per reader, default 400 ms), so it runs in CI.
#include <doctest/doctest.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <archive.h>
#include <archive_entry.h>
#include <climits>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "inferenceutils/app.h"
#include "inferenceutils/bundle.h"
#include "inferenceutils/digest.h"
#include "inferenceutils/hardware.h"
#include "inferenceutils/json_text.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/progress.h"
#include "inferenceutils/python.h"
#include "inferenceutils/python_home.h"
#include "inferenceutils/spec.h"
#include "inferenceutils/store.h"
#include "link_guard.h"
#include "stream_writers.h"

namespace iu {
namespace {

uint64_t Seed() {
  const char* env = std::getenv("IU_FUZZ_SEED");
  return env && *env ? std::strtoull(env, nullptr, 10) : 20261201;
}

int BudgetMs() {
  const char* env = std::getenv("IU_FUZZ_MS");
  return env && *env ? std::atoi(env) : 250;
}

// Runs `one` with fresh random state until the time budget is spent (at least `min_runs` times).
void ForAWhile(const char* what, int min_runs, const std::function<void(std::mt19937_64&, int)>& one) {
  std::mt19937_64 rng(Seed() ^ std::hash<std::string>()(what));
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(BudgetMs());
  int runs = 0;
  while (runs < min_runs || std::chrono::steady_clock::now() < end) {
    INFO(std::string(what), " run ", runs, " (IU_FUZZ_SEED=", Seed(), ")");
    REQUIRE_NOTHROW(one(rng, runs));
    ++runs;
  }
  MESSAGE(std::string(what), ": ", runs, " inputs");
}

size_t Pick(std::mt19937_64& rng, size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); }

template <typename T>
const T& OneOf(std::mt19937_64& rng, const std::vector<T>& items) { return items[Pick(rng, items.size())]; }

std::string RandomBytes(std::mt19937_64& rng, size_t max) {
  std::string out(Pick(rng, max + 1), '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

// Pieces that break parsers: quotes, brackets, path climbs, bytes that are not UTF-8, huge
// numbers, NUL, deep nesting, surrogate escapes.
const std::vector<std::string>& Hostile() {
  static const std::vector<std::string> pieces = {
      "\"", "'", "[", "]", "{", "}", "=", "\n", "#", "\\", "..", "../../..", "/", "/etc/passwd", "\xff", "\xc0\x80",
      "\xed\xa0\x80", std::string(1, '\0'), "99999999999999999999999", "-1", "1e999", "nan", "[[[[[[[[[[[[[[[[",
      "\\udcff", "\\u0000", ";", " and ", " or ", "python_version", "==", "~=", "@", "file:///", "*", "\t", "\r\n",
      "# /// script", "# ///", "true", "null", "{}", "[]", ":", ",", std::string(300, 'a')};
  return pieces;
}

// `text` with a few random edits: hostile pieces inserted, bytes flipped, a slice cut.
std::string Mutate(std::mt19937_64& rng, std::string text) {
  int edits = 1 + static_cast<int>(Pick(rng, 4));
  for (int i = 0; i < edits; ++i) {
    size_t at = text.empty() ? 0 : Pick(rng, text.size() + 1);
    switch (Pick(rng, 4)) {
      case 0: text.insert(at, OneOf(rng, Hostile())); break;
      case 1: if (!text.empty() && at < text.size()) text[at] = static_cast<char>(rng()); break;
      case 2: if (at < text.size()) text.erase(at, Pick(rng, text.size() - at) + 1); break;
      default: text.insert(at, RandomBytes(rng, 8)); break;
    }
  }
  return text;
}

// A sandbox: <root>/store (the only place a reader may write), <root>/outside (a canary folder
// that hostile inputs aim at) and <root>/inputs (where the inputs are written).
struct Sandbox {
  std::string root, store, outside, inputs;
  Sandbox() {
    char pattern[] = "/tmp/iu-fuzz-XXXXXX";
    root = mkdtemp(pattern);
    store = root + "/store";
    outside = root + "/outside";
    inputs = root + "/inputs";
    for (const auto& d : {store, outside, inputs, store + "/data", store + "/runtimes", store + "/locks"}) mkdir(d.c_str(), 0755);
    CHECK(WriteFileAtomic(outside + "/canary", "canary\n").ok());
  }
  ~Sandbox() { RemoveTree(root); }
  std::vector<std::string> List(const std::string& dir) const {
    std::vector<std::string> names;
    if (DIR* d = opendir(dir.c_str())) {
      while (dirent* e = readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") names.push_back(n);
      }
      closedir(d);
    }
    std::sort(names.begin(), names.end());
    return names;
  }
  // Nothing appeared or changed outside the store and the inputs.
  void CheckNothingEscaped() const {
    CHECK(List(root) == std::vector<std::string>{"inputs", "outside", "store"});
    CHECK(List(outside) == std::vector<std::string>{"canary"});
    CHECK(ReadFile(outside + "/canary").value_or("") == "canary\n");
    CHECK(!PathExists("/tmp/iu-fuzz-evil"));
  }
};

// Writes `text` to `path` (no fsync: the inputs are thrown away).
void Put(const std::string& path, const std::string& text) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  close(fd);
}

// --- text readers ------------------------------------------------------------------------------

constexpr char kSpec[] = R"(requirements = ["numpy>=1.26; python_version >= '3.9'", "tinypkg[extra] @ file:///tmp/x.whl"]
preload = ["numpy"]
libraries = ["lib/libfoo.so"]
backend_package = "llama-cpp-python"
build_env = { CMAKE_ARGS = "-DGGML_NATIVE=on" }

[sources]
index_url = "https://pypi.org/simple"
find_links = ["../links", "/abs/links"]
offline = false

[backends.cuda]
build_env = { CMAKE_ARGS = "-DGGML_CUDA=on" }
wheel_indexes = ["https://example.invalid/whl/cu124"]
)";

constexpr char kScript[] = R"(#!/usr/bin/env inferenceutils
# /// script
# requires-python = ">=3.10,<4"
# dependencies = [
#   "requests<3",
#   "rich; sys_platform == 'linux'",
# ]
# [tool.inferenceutils]
# preload = ["rich"]
# ///
print("hello")
)";

TEST_CASE("fuzz: spec and PEP 723 readers return errors, never crash") {
  KeyContext context{"cpu-0123456789abcdef", "cp311", "manylinux_2_36_x86_64", "cpu"};
  ForAWhile("spec", 200, [&](std::mt19937_64& rng, int run) {
    std::string text = run % 5 == 0 ? RandomBytes(rng, 512) : Mutate(rng, kSpec);
    absl::StatusOr<RuntimeSpec> spec = ParseSpec(text, "fuzz.toml", "/tmp");
    if (spec.ok()) {
      CHECK(RuntimeKey(*spec, context).size() == 16);
      (void)DumpJson(spec->ToJson(), 2);
    }
  });
  ForAWhile("pep723", 200, [&](std::mt19937_64& rng, int run) {
    std::string text = run % 5 == 0 ? RandomBytes(rng, 512) : Mutate(rng, kScript);
    absl::StatusOr<ScriptMetadata> meta = ParsePep723(text, "fuzz.py");
    if (meta.ok() && !meta->requires_python.empty()) (void)CheckRequiresPython(meta->requires_python, "3.11.2", "fuzz.py");
  });
  ForAWhile("requirement", 500, [&](std::mt19937_64& rng, int) {
    std::string req = Mutate(rng, OneOf(rng, std::vector<std::string>{
                                         "tinypkg; python_version >= '3' and (os_name == \"posix\" or extra == 'x')",
                                         "a[b,c]>=1,<2; sys_platform in 'linux darwin'", "x @ https://e/x.whl ; os_name != 'nt'"}));
    (void)CheckRequirement(req, "fuzz");
    (void)NormalizeRequirement(req);
    (void)CheckRequiresPython(Mutate(rng, ">=3.8,!=3.9.*,<4"), "3.11.2", "fuzz");
  });
}

TEST_CASE("fuzz: manifest and facts readers, and JSON output of any bytes") {
  Sandbox box;
  Manifest sample;
  sample.key = "0123456789abcdef";
  sample.prefix = box.store + "/data/x";
  sample.python_version = "3.11.2";
  sample.python_abi = "cp311";
  sample.base_prefix = "/usr";
  sample.backend = "cpu";
  sample.requirements = {"numpy"};
  sample.sys_path = {"/usr/lib/python3.11"};
  const std::string manifest_text = DumpJson(sample.ToJson(), 2);
  Facts facts = DetectFacts(DetectOptions());
  const std::string facts_text = DumpJson({{"fingerprint", "x"}, {"facts", facts.ToJson()}}, 1);
  ForAWhile("manifest", 100, [&](std::mt19937_64& rng, int run) {
    std::string dir = box.store + "/data/m";
    mkdir(dir.c_str(), 0755);
    std::string text = run % 4 == 0 ? RandomBytes(rng, 512) : Mutate(rng, manifest_text);
    Put(dir + "/manifest.json", text);
    absl::StatusOr<Manifest> m = Manifest::Read(dir);
    if (m.ok()) (void)DumpJson(m->ToJson(), 2);
  });
  ForAWhile("facts", 50, [&](std::mt19937_64& rng, int run) {
    std::string text = run % 4 == 0 ? RandomBytes(rng, 512) : Mutate(rng, facts_text);
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.contains("facts")) (void)Facts::FromJson(j["facts"]);
    Put(box.store + "/facts.json", text);
    Facts loaded = LoadOrDetectFacts(box.store, DetectOptions());
    (void)DumpJson(loaded.ToJson());
  });
  ForAWhile("json-output", 100, [&](std::mt19937_64& rng, int) {
    std::string bytes = RandomBytes(rng, 64) + OneOf(rng, Hostile());
    std::string dumped = DumpJson({{"value", bytes}, {bytes, {bytes}}}, 1);
    CHECK(!nlohmann::json::parse(dumped, nullptr, false).is_discarded());  // always valid JSON
    CHECK(ValidUtf8(ValidUtf8(bytes)) == ValidUtf8(bytes));
    CHECK(PythonStr(bytes).front() == '"');
  });
  box.CheckNothingEscaped();
}

// --- archives ----------------------------------------------------------------------------------

struct Member {
  std::string path;
  char type = 'f';  // f, d, l
  std::string data;
  std::string target;
};

// A zstd-compressed tar of `members` (what bundles and apps are), optionally with a tail.
std::string TarZst(const std::vector<Member>& members, const std::string& tail = "") {
  ZstdSink sink;
  sink.cctx = ZSTD_createCCtx();
  std::string out;
  sink.out = [&](absl::string_view chunk) {
    out.append(chunk.data(), chunk.size());
    return true;
  };
  struct archive* a = NewTarWriter(&sink);
  for (const Member& m : members) {
    int type = m.type == 'd' ? AE_IFDIR : m.type == 'l' ? AE_IFLNK : AE_IFREG;
    WriteFixedHeader(a, m.path, type, m.type == 'd' ? 0755 : 0644, m.type == 'f' ? m.data.size() : 0, m.target);
    if (m.type == 'f' && !m.data.empty()) archive_write_data(a, m.data.data(), m.data.size());
  }
  archive_write_close(a);
  archive_write_free(a);
  if (!tail.empty()) sink.Emit(tail.data(), tail.size(), ZSTD_e_continue);
  sink.Finish();
  ZSTD_freeCCtx(sink.cctx);
  return out;
}

const std::vector<std::string>& HostilePaths() {
  static const std::vector<std::string> paths = {
      "a", "a/b", "lib", "lib/x.py", "lib/site.pth", "pyvenv.cfg", "manifest.json", "bin/python", "../evil",
      "/tmp/iu-fuzz-evil", "a/../../evil", "./a", "a//b", "", ".in-use", "l", "l/inside", "d", "d/e"};
  return paths;
}

const std::vector<std::string>& HostileTargets() {
  static const std::vector<std::string> targets = {
      ".", "..", "a", "a/../outside/canary", "a/a/../../outside", "b/../outside/canary", "a/a/a/../../../../outside/canary",
      "../../outside/canary", "../outside/canary", "l/../..", "d/../../..", "/tmp",
      "/etc/passwd", "lib/../pyvenv.cfg", "", "a/./b", std::string(200, 'x')};
  return targets;
}

// A bundle that follows the format closely enough to get past its first checks, with hostile
// members and a manifest that agrees with them, or not.
std::string HostileBundle(std::mt19937_64& rng, const std::string& box_outside, bool clean = false) {
  std::vector<Member> members;
  nlohmann::json files = nlohmann::json::array();
  uint64_t total = 0;
  Manifest runtime;
  runtime.key = "0123456789abcdef";
  runtime.prefix = "/old/store/data/0123456789abcdef.1.2";
  runtime.python_version = EmbeddedPythonVersion();
  runtime.python_abi = EmbeddedPythonAbi();
  runtime.base_prefix = "/usr";
  runtime.backend = "cpu";
  std::string runtime_json = DumpJson(runtime.ToJson());
  if (!clean && Pick(rng, 3) == 0) runtime_json = Mutate(rng, runtime_json);
  members.push_back({"manifest.json", 'f', runtime_json, ""});
  members.push_back({"pyvenv.cfg", 'f', "home = /usr/bin\nprefix = /old/store/data/0123456789abcdef.1.2\n", ""});
  size_t extra = clean ? 0 : Pick(rng, 7);
  for (size_t i = 0; i < extra; ++i) {
    Member m;
    m.path = OneOf(rng, HostilePaths());
    m.type = "fdl"[Pick(rng, 3)];
    if (m.type == 'f') m.data = RandomBytes(rng, 64);
    if (m.type == 'l') m.target = Pick(rng, 8) == 0 ? box_outside + "/canary" : OneOf(rng, HostileTargets());
    members.push_back(m);
  }
  for (const Member& m : members) {
    nlohmann::json f = {{"path", m.path}, {"type", std::string(1, m.type)}, {"mode", 0644}};
    if (m.type == 'f') {
      f["size"] = m.data.size();
      f["sha256"] = !clean && Pick(rng, 6) == 0 ? std::string(64, '0') : Sha256Hex(m.data);
      total += m.data.size();
    }
    if (m.type == 'l') f["target"] = m.target;
    if (clean || Pick(rng, 10) != 0) files.push_back(f);  // sometimes a member is not listed
  }
  nlohmann::json manifest = {
      {"bundle_format", kBundleFormat},
      {"key", "0123456789abcdef"},
      {"backend", "cpu"},
      {"prefix", clean ? runtime.prefix : OneOf(rng, std::vector<std::string>{runtime.prefix, runtime.prefix, "/", "/usr", "/a/../b", "relative"})},
      {"total_size", !clean && Pick(rng, 8) == 0 ? total + 1 : total},
      {"files", files},
      {"relocate", {{"text_files", clean || Pick(rng, 2) ? nlohmann::json{"pyvenv.cfg"} : nlohmann::json{"pyvenv.cfg", "l", "../evil"}}}},
      {"requires", {{"python", {{"abi", EmbeddedPythonAbi()}, {"version", EmbeddedPythonVersion()},
                                {"home", CurrentHome().id}}},
                    {"backend", "cpu"}}},
  };
  std::string manifest_text = DumpJson(manifest);
  if (!clean && Pick(rng, 5) == 0) manifest_text = Mutate(rng, manifest_text);
  members.insert(members.begin(), {std::string(kBundleManifestName), 'f', manifest_text, ""});
  std::string tail = !clean && Pick(rng, 6) == 0 ? RandomBytes(rng, 100) : "";
  return TarZst(members, tail);
}

TEST_CASE("fuzz: bundle readers refuse hostile bundles and write only into the data directory") {
  Sandbox box;
  Facts facts = DetectFacts(DetectOptions());
  SilentProgress progress;
  int accepted = 0;
  ForAWhile("bundle", 30, [&](std::mt19937_64& rng, int run) {
    std::string bytes;
    switch (run % 5) {
      case 0: bytes = RandomBytes(rng, 4096); break;
      case 1: bytes = "\x28\xb5\x2f\xfd" + RandomBytes(rng, 512); break;  // zstd magic, then junk
      case 2: bytes = Mutate(rng, HostileBundle(rng, box.outside)); break;
      case 3: bytes = HostileBundle(rng, box.outside, /*clean=*/run < 5); break;
      default: bytes = HostileBundle(rng, box.outside); break;
    }
    std::string path = box.inputs + "/b.tar.zst";
    Put(path, bytes);
    (void)ReadBundleManifest(path);
    BundleTarget target{"0123456789abcdef", nlohmann::json::object(), "cpu"};
    (void)DumpJson(ExplainBundles({path, box.inputs, box.inputs + "/missing.tar.zst"}, "", target, facts));
    std::string data_dir = box.store + "/data/0123456789abcdef.1." + std::to_string(run);
    REQUIRE(mkdir(data_dir.c_str(), 0755) == 0);
    UnpackOptions options;
    options.launcher = "/usr/bin/true";
    options.threads = 1;
    options.max_bytes = 1 << 20;
    absl::StatusOr<Manifest> unpacked = UnpackBundle(path, data_dir, options, progress);
    if (run == 3) CHECK_MESSAGE(unpacked.ok(), unpacked.status().message());  // the reader does accept a good one
    if (unpacked.ok()) {
      ++accepted;
      (void)DumpJson(unpacked->ToJson());
    }
    RemoveTree(data_dir);
    // An index of hostile entries, too.
    nlohmann::json index = {{"bundles", {{{"file", OneOf(rng, HostilePaths())}, {"manifest", Pick(rng, 2) ? nlohmann::json(5) : nlohmann::json::object()},
                                          {"sha256", Pick(rng, 2) ? nlohmann::json("x") : nlohmann::json(7)}}}}};
    Put(box.inputs + "/index.json", Pick(rng, 3) == 0 ? Mutate(rng, DumpJson(index)) : DumpJson(index));
    (void)ListBundleSource(box.inputs, "fuzz");
    unlink((box.inputs + "/index.json").c_str());
  });
  MESSAGE("bundles unpacked (the rest refused): ", accepted);
  box.CheckNothingEscaped();
}

TEST_CASE("fuzz: link guard never lets a chain of links climb out") {
  // Whatever it accepts, made for real: every accepted link that resolves, resolves inside.
  Sandbox box;
  const std::string in = box.store + "/in";
  char real_in[PATH_MAX];
  ForAWhile("links", 100, [&](std::mt19937_64& rng, int) {
    RemoveTree(in);
    REQUIRE(mkdir(in.c_str(), 0755) == 0);
    REQUIRE(realpath(in.c_str(), real_in) != nullptr);
    LinkGuard guard;
    std::vector<std::string> made;
    for (size_t i = 0, n = 1 + Pick(rng, 6); i < n; ++i) {
      std::string member = OneOf(rng, std::vector<std::string>{"a", "b", "c/d", "c", "e/f/g", "l", "outside"});
      std::string target = OneOf(rng, HostileTargets());
      if (!guard.AddSymlink(member, target).empty()) continue;
      std::string path = in + "/" + member;
      (void)MakeDirs(path.substr(0, path.rfind('/')), "");
      if (symlink(target.c_str(), path.c_str()) == 0) made.push_back(path);
    }
    for (const auto& link : made) {
      char resolved[PATH_MAX];
      if (realpath(link.c_str(), resolved) == nullptr) continue;  // dangling or a loop: reaches nothing
      std::string r = resolved;
      CHECK_MESSAGE((r == real_in || r.rfind(std::string(real_in) + "/", 0) == 0), link, " resolves to ", r);
    }
  });
  RemoveTree(in);
  box.CheckNothingEscaped();
}

// An app file: 64 bytes standing in for the launcher, the payload (header, archive, app.json,
// bundles) and a footer, with a SHA-256 that matches, so the reader gets to the hostile parts.
std::string HostileApp(std::mt19937_64& rng, const std::string& box_outside) {
  std::vector<Member> members = {{"app", 'd', "", ""}, {"app/main.py", 'f', "print(1)\n", ""}};
  for (size_t i = 0, n = Pick(rng, 5); i < n; ++i) {
    Member m;
    m.path = OneOf(rng, std::vector<std::string>{"app/x", "app/l", "app/l/y", "assets/a", "spec.toml", "../evil",
                                                 "app/../../evil", "icon.png", "other/z", "/tmp/iu-fuzz-evil"});
    m.type = "fdl"[Pick(rng, 3)];
    if (m.type == 'f') m.data = RandomBytes(rng, 32);
    if (m.type == 'l') m.target = Pick(rng, 6) == 0 ? box_outside + "/canary" : OneOf(rng, HostileTargets());
    members.push_back(m);
  }
  std::string archive = TarZst(members);
  std::string payload(kAppHeaderSize, '\0');
  payload.replace(0, 8, kAppHeaderMagic, 8);
  const uint64_t archive_offset = payload.size();
  payload += archive;
  nlohmann::json bundles = nlohmann::json::array();
  if (Pick(rng, 3) == 0) {
    uint64_t offset = payload.size();
    payload += RandomBytes(rng, 64);
    bundles.push_back({{"name", OneOf(rng, std::vector<std::string>{"b.tar.zst", "../b", ".hidden", ""})},
                       {"offset", Pick(rng, 4) == 0 ? uint64_t{1} << 63 : offset},
                       {"size", Pick(rng, 4) == 0 ? ~uint64_t{0} : uint64_t{64}}});
  }
  nlohmann::json app_json = {{"app_format", 1},
                             {"name", "fuzz"},
                             {"script", "main.py"},
                             {"spec_summary", {{"requirements", nlohmann::json::array()}}},
                             {"archive", {{"offset", archive_offset}, {"size", archive.size()}}},
                             {"bundles", bundles}};
  std::string manifest = DumpJson(app_json);
  if (Pick(rng, 3) == 0) manifest = Mutate(rng, manifest);
  AppFooter footer;
  footer.payload_offset = 64;
  footer.manifest_offset = payload.size();
  footer.manifest_size = manifest.size();
  payload += manifest;
  footer.payload_size = payload.size();
  footer.sha256 = Sha256Hex(payload);
  std::string file = std::string(64, 'L') + payload + EncodeAppFooter(footer);
  if (Pick(rng, 5) == 0) file = Mutate(rng, file);
  return file;
}

TEST_CASE("fuzz: app readers refuse damaged and hostile apps and write only into the store") {
  Sandbox box;
  SilentProgress progress;
  int accepted = 0;
  ForAWhile("app", 30, [&](std::mt19937_64& rng, int run) {
    std::string bytes = run % 4 == 0 ? RandomBytes(rng, 2048) : HostileApp(rng, box.outside);
    std::string path = box.inputs + "/app";
    Put(path, bytes);
    for (int cut : {0, 1, 2}) {  // also its footer alone, and the file cut short
      std::string tail = bytes.size() >= kAppFooterSize ? bytes.substr(bytes.size() - kAppFooterSize) : bytes;
      (void)DecodeAppFooter(tail, bytes.size() - static_cast<size_t>(cut), path);
    }
    absl::StatusOr<std::optional<AppFile>> file = OpenAppFile(path);
    if (file.ok() && file->has_value()) {
      (void)ReadAppManifest(**file);
      absl::StatusOr<InstalledApp> installed = InstallApp(box.store, **file, absl::ZeroDuration(), progress);
      if (installed.ok()) {
        ++accepted;
        (void)DumpJson(installed->manifest);
      }
    }
    RemoveTree(box.store + "/apps");
  });
  MESSAGE("apps installed (the rest refused): ", accepted);
  box.CheckNothingEscaped();
}

}  // namespace
}  // namespace iu
