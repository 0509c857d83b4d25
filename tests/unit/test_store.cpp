// The store: lookup, publish, remove while in use, stale cleanup; file locks.
#include <doctest/doctest.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "inferenceutils/errors.h"
#include "inferenceutils/lock.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/store.h"

namespace {

std::string TempDir() {
  char pattern[] = "/tmp/iu-store-test-XXXXXX";
  return mkdtemp(pattern);
}

iu::Manifest SampleManifest(const std::string& key, const std::string& prefix) {
  iu::Manifest m;
  m.key = key;
  m.prefix = prefix;
  m.python_version = "3.11.2";
  m.python_abi = "cp311";
  m.base_prefix = "/usr";
  m.backend = "cpu";
  m.requirements = {"llama-cpp-python"};
  m.preload = {"llama_cpp"};
  m.sys_path = {prefix + "/lib/python3.11/site-packages"};
  return m;
}

std::string Published(const iu::Store& store, const std::string& key) {
  auto data = store.NewDataDir(key);
  REQUIRE(data.ok());
  REQUIRE(iu::WriteFileAtomic(*data + "/manifest.json", SampleManifest(key, *data).ToJson().dump()).ok());
  REQUIRE(store.Publish(key, *data).ok());
  return *data;
}

}  // namespace

TEST_CASE("manifest JSON round trip keeps every field") {
  iu::Manifest m = SampleManifest("abc", "/x");
  m.distributions = {{"llama_cpp_python", "0.3.99"}};
  m.timings = {{"pip", 1.5}};
  m.build_env = {{"CMAKE_ARGS", "-DGGML_NATIVE=on"}};
  auto back = iu::Manifest::FromJson(m.ToJson());
  REQUIRE(back.ok());
  CHECK(back->ToJson() == m.ToJson());
}

TEST_CASE("manifest of another format version is refused") {
  nlohmann::json json = SampleManifest("abc", "/x").ToJson();
  json["format"] = 99;
  CHECK(absl::IsDataLoss(iu::Manifest::FromJson(json).status()));
}

TEST_CASE("lookup: missing, published, corrupt") {
  iu::Store store(TempDir());
  REQUIRE(store.EnsureLayout().ok());
  CHECK(absl::IsNotFound(store.Lookup("k1").status()));

  std::string data = Published(store, "k1");
  auto found = store.Lookup("k1");
  REQUIRE(found.ok());
  CHECK(found->prefix == data);
  CHECK(found->preload == std::vector<std::string>{"llama_cpp"});

  REQUIRE(iu::WriteFileAtomic(data + "/manifest.json", "{not json").ok());
  auto corrupt = store.Lookup("k1");
  CHECK(absl::IsDataLoss(corrupt.status()));
  CHECK(std::string(corrupt.status().message()).find("corrupt manifest") != std::string::npos);
  iu::RemoveTree(store.root());
}

TEST_CASE("an unpublished data directory is invisible and cleaned under the key's lock") {
  iu::Store store(TempDir());
  REQUIRE(store.EnsureLayout().ok());
  auto half_built = store.NewDataDir("k2");
  REQUIRE(half_built.ok());
  CHECK(absl::IsNotFound(store.Lookup("k2").status()));
  CHECK(store.List().empty());
  std::string kept = Published(store, "k3");
  CHECK(store.CleanStale("k2") == 1);
  CHECK_FALSE(iu::PathExists(*half_built));
  CHECK(iu::PathExists(kept));  // a published runtime is never stale
  iu::RemoveTree(store.root());
}

TEST_CASE("publishing again replaces the runtime and deletes the old data") {
  iu::Store store(TempDir());
  REQUIRE(store.EnsureLayout().ok());
  std::string first = Published(store, "k4");
  std::string second = Published(store, "k4");
  CHECK(store.Lookup("k4")->prefix == second);
  CHECK_FALSE(iu::PathExists(first));
  iu::RemoveTree(store.root());
}

TEST_CASE("removing a runtime in use unpublishes it but keeps its files for the user") {
  iu::Store store(TempDir());
  REQUIRE(store.EnsureLayout().ok());
  std::string data = Published(store, "k5");
  int ready[2], go[2];  // child → parent: "holding it"; parent → child: "you may end"
  REQUIRE(pipe(ready) == 0);
  REQUIRE(pipe(go) == 0);
  pid_t child = fork();
  if (child == 0) {  // a "running launcher": holds the in-use lock until told to stop
    iu::MarkInUse(data);
    char c;
    ssize_t ignored = write(ready[1], "x", 1);
    (void)ignored;
    ignored = read(go[0], &c, 1);
    _exit(0);
  }
  char c;
  REQUIRE(read(ready[0], &c, 1) == 1);
  REQUIRE(store.Remove("k5").ok());
  CHECK(absl::IsNotFound(store.Lookup("k5").status()));
  CHECK(iu::PathExists(data + "/manifest.json"));  // still there for the running process
  REQUIRE(write(go[1], "x", 1) == 1);
  int status = 0;
  waitpid(child, &status, 0);
  CHECK(store.CleanStale("k5") == 1);  // unused now: the next cleanup deletes it
  CHECK_FALSE(iu::PathExists(data));
  CHECK(absl::IsNotFound(store.Remove("k5")));
  iu::RemoveTree(store.root());
}

TEST_CASE("an exclusive lock names its holder and times out with the documented code") {
  std::string dir = TempDir();
  std::string path = dir + "/x.lock";
  auto held = iu::FileLock::Exclusive(path, absl::Seconds(1), [](long) {});
  REQUIRE(held.ok());
  REQUIRE(held->held());
  CHECK(iu::LockHolderPid(path) == getpid());
  pid_t child = fork();
  if (child == 0) {
    long seen = -1;
    auto lock = iu::FileLock::Exclusive(path, absl::Milliseconds(200), [&](long pid) { seen = pid; });
    bool ok = !lock.ok() && iu::ExitCodeOf(lock.status()) == iu::kExitLockTimeout && seen == getppid() &&
              std::string(lock.status().message()).find(std::to_string(getppid())) != std::string::npos;
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  waitpid(child, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  held->Release();
  auto again = iu::FileLock::Exclusive(path, absl::Milliseconds(100), [](long) {});
  CHECK(again.ok());
  iu::RemoveTree(dir);
}

TEST_CASE("a lock is released when its holder dies") {
  std::string dir = TempDir();
  std::string path = dir + "/y.lock";
  pid_t child = fork();
  if (child == 0) {
    auto lock = iu::FileLock::Exclusive(path, absl::Seconds(1), [](long) {});
    _exit(lock.ok() ? 0 : 1);  // exits holding it: the OS releases it
  }
  int status = 0;
  waitpid(child, &status, 0);
  auto lock = iu::FileLock::Exclusive(path, absl::Milliseconds(100), [](long) {});
  CHECK(lock.ok());
  iu::RemoveTree(dir);
}

TEST_CASE("a lock wait ends with an empty lock when give_up says so, and only then") {
  std::string dir = TempDir();
  std::string path = dir + "/z.lock";
  std::string flag = dir + "/builder-started";
  auto held = iu::FileLock::Exclusive(path, absl::Seconds(1), [](long) {});
  REQUIRE(held.ok());
  pid_t child = fork();
  if (child == 0) {
    long waited_for = 0;
    // The flag appears before or while the child waits: either way the busy lock is noted once
    // (on_wait) and give_up ends the wait (ignored, the child would time out after 30 s and fail).
    auto lock = iu::FileLock::ExclusiveUnless(
        path, absl::Seconds(30), [&](long pid) { waited_for = pid; },
        [&] { return iu::PathExists(flag); });
    _exit(lock.ok() && !lock->held() && waited_for == getppid() ? 0 : 1);
  }
  REQUIRE(iu::WriteFileAtomic(flag, "x").ok());
  int status = 0;
  waitpid(child, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  // Without give_up returning true it times out as before.
  pid_t second = fork();
  if (second == 0) {
    auto lock = iu::FileLock::ExclusiveUnless(path, absl::Milliseconds(100), [](long) {}, [] { return false; });
    _exit(!lock.ok() && iu::ExitCodeOf(lock.status()) == iu::kExitLockTimeout ? 0 : 1);
  }
  waitpid(second, &status, 0);
  CHECK(WEXITSTATUS(status) == 0);
  iu::RemoveTree(dir);
}

TEST_CASE("a lock's descriptor kept by a forked child holds the lock after the parent releases it") {
  std::string dir = TempDir();
  std::string path = dir + "/h.lock";
  auto held = iu::FileLock::Exclusive(path, absl::Seconds(1), [](long) {});
  REQUIRE(held.ok());
  int ready[2], done[2];
  REQUIRE(pipe(ready) == 0);
  REQUIRE(pipe(done) == 0);
  pid_t child = fork();
  if (child == 0) {  // the builder: keeps the inherited descriptor until told to end
    close(ready[0]);
    close(done[1]);
    char c = 0;
    (void)!write(ready[1], &c, 1);
    (void)!read(done[0], &c, 1);
    _exit(0);
  }
  close(ready[1]);
  close(done[0]);
  char c;
  REQUIRE(read(ready[0], &c, 1) == 1);
  held->Release();
  auto probe = iu::FileLock::TryExclusive(path);
  REQUIRE(probe.ok());
  CHECK_FALSE(probe->held());  // still the child's
  close(done[1]);
  int status = 0;
  waitpid(child, &status, 0);
  auto after = iu::FileLock::TryExclusive(path);
  REQUIRE(after.ok());
  CHECK(after->held());
  close(ready[0]);
  iu::RemoveTree(dir);
}

TEST_CASE("an unwritable store names the path and the variable to set") {
  std::string dir = TempDir();
  REQUIRE(iu::WriteFileAtomic(dir + "/file", "x").ok());
  iu::Store store(dir + "/file/store");  // below a regular file: fails even for root
  absl::Status status = store.EnsureLayout();
  CHECK(iu::ExitCodeOf(status) == iu::kExitStore);
  CHECK(std::string(status.message()).find(dir + "/file/store") != std::string::npos);
  CHECK(std::string(status.message()).find("INFERENCEUTILS_HOME") != std::string::npos);
  iu::RemoveTree(dir);
}
