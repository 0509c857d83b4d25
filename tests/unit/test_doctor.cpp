// doctor's checks and the runtime's library list: ELF names, dependency order, RuntimeLibraries,
// duplicate / outside / shadowed findings, the environment, ld.so.conf.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "inferenceutils/doctor.h"
#include "inferenceutils/store.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/libraries.h"
#include "inferenceutils/paths.h"
#include "inferenceutils/runtime_libraries.h"

namespace {

std::string TempDir() {
  char pattern[] = "/tmp/iu-doctor-test-XXXXXX";
  return mkdtemp(pattern);
}

std::string LoadedPath(const std::string& soname_prefix) {
  for (const auto& library : iu::LoadedLibraries()) {
    if (library.path.find("/" + soname_prefix) != std::string::npos) return iu::ResolvedPath(library.path);
  }
  return "";
}

void Copy(const std::string& from, const std::string& to) {
  REQUIRE(iu::MakeDirs(to.substr(0, to.rfind('/')), "").ok());
  std::ifstream in(from, std::ios::binary);
  std::ofstream out(to, std::ios::binary);
  out << in.rdbuf();
}

void Touch(const std::string& path, const std::string& text = "not an ELF file\n") {
  REQUIRE(iu::MakeDirs(path.substr(0, path.rfind('/')), "").ok());
  std::ofstream(path) << text;
}

bool Has(const std::vector<iu::Finding>& findings, const std::string& code, const std::string& severity) {
  for (const auto& f : findings) {
    if (f.code == code && f.severity == severity) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("ReadElfDynamic reads SONAME and DT_NEEDED from the file") {
  std::string libc = LoadedPath("libc.so.6");
  REQUIRE(!libc.empty());
  auto elf = iu::ReadElfDynamic(libc);
  REQUIRE(elf.ok());
  CHECK(elf->soname == "libc.so.6");
  auto self = iu::ReadElfDynamic("/proc/self/exe");
  REQUIRE(self.ok());
  CHECK(self->soname.empty());
  CHECK(std::find(self->needed.begin(), self->needed.end(), "libc.so.6") != self->needed.end());
  CHECK(elf->runpath.empty());

  std::string dir = TempDir();
  Touch(dir + "/text.so");
  CHECK(!iu::ReadElfDynamic(dir + "/text.so").ok());
  CHECK(!iu::ReadElfDynamic(dir + "/missing.so").ok());
  iu::RemoveTree(dir);
}

TEST_CASE("DependencyOrder puts what a library needs before it and keeps the rest in order") {
  std::vector<iu::LibraryFile> in = {
      {"/r/nvidia/cublas/lib/libcublas.so.12", "libcublas.so.12", {"libcublasLt.so.12", "libcudart.so.12"}},
      {"/r/nvidia/cublas/lib/libcublasLt.so.12", "libcublasLt.so.12", {}},
      {"/r/other.so", "", {}},
      {"/r/nvidia/cuda_runtime/lib/libcudart.so.12", "libcudart.so.12", {"libc.so.6"}},
  };
  std::vector<std::string> order;
  for (const auto& f : iu::DependencyOrder(in)) order.push_back(f.path);
  CHECK(order == std::vector<std::string>{"/r/nvidia/cublas/lib/libcublasLt.so.12",
                                          "/r/nvidia/cuda_runtime/lib/libcudart.so.12",
                                          "/r/nvidia/cublas/lib/libcublas.so.12", "/r/other.so"});
  // A cycle does not loop; every library appears once.
  std::vector<iu::LibraryFile> cycle = {{"/a", "a", {"b"}}, {"/b", "b", {"a"}}};
  CHECK(iu::DependencyOrder(cycle).size() == 2);
}

TEST_CASE("RuntimeLibraries resolves the spec's names and picks the NVIDIA libraries something needs") {
  std::string prefix = TempDir();
  std::string site = prefix + "/lib/python3.11/site-packages";
  // A consumer that needs libc.so.6 by SONAME (this test binary), an nvidia-* wheel shipping a
  // libc.so.6 (needed: loaded) and a libffi.so.8 (needed by nothing: left alone).
  Copy("/proc/self/exe", site + "/consumer/_ext.so");
  Copy(LoadedPath("libc.so.6"), site + "/nvidia/fake_libc/lib/libc.so.6");
  std::string ffi = LoadedPath("libffi.so");
  if (!ffi.empty()) Copy(ffi, site + "/nvidia/fake_ffi/lib/libffi.so.8");
  Touch(prefix + "/extra/libextra.so");

  auto none = iu::RuntimeLibraries(prefix, {});
  REQUIRE(none.ok());
  CHECK(*none == std::vector<std::string>{site + "/nvidia/fake_libc/lib/libc.so.6"});

  auto named = iu::RuntimeLibraries(prefix, {"extra/libextra.so", "libnotinruntime.so.1", prefix + "/extra/*.so"});
  REQUIRE(named.ok());
  CHECK(*named == std::vector<std::string>{prefix + "/extra/libextra.so", "libnotinruntime.so.1",
                                           site + "/nvidia/fake_libc/lib/libc.so.6"});

  auto missing = iu::RuntimeLibraries(prefix, {"lib/nothing/libx.so"});
  REQUIRE(!missing.ok());
  CHECK(iu::ExitCodeOf(missing.status()) == iu::kExitConfig);
  CHECK(std::string(missing.status().message()).find("lib/nothing/libx.so") != std::string::npos);
  iu::RemoveTree(prefix);
}

TEST_CASE("LoadLibrariesPython loads in order, globally") {
  CHECK(iu::LoadLibrariesPython({}).empty());
  std::string code = iu::LoadLibrariesPython({"/a/libx.so.1", "/b/liby.so.2"});
  CHECK(code.find("[\"/a/libx.so.1\",\"/b/liby.so.2\"]") != std::string::npos);
  CHECK(code.find("RTLD_GLOBAL") != std::string::npos);
}

TEST_CASE("LibraryOrigin") {
  std::vector<std::string> system = {"/usr/lib", "/lib"};
  CHECK(iu::LibraryOrigin("/store/data/k/lib/x.so", "/store/data/k", system) == "runtime");
  CHECK(iu::LibraryOrigin("/store/data/k2/lib/x.so", "/store/data/k", system) == "outside");
  CHECK(iu::LibraryOrigin("/usr/lib/x86_64-linux-gnu/libc.so.6", "/store/data/k", system) == "system");
  CHECK(iu::LibraryOrigin("/usr/library/x.so", "/store/data/k", system) == "outside");
}

TEST_CASE("CheckLibraries: duplicates, outside and shadowed copies name both paths") {
  iu::LibraryCheck check;
  check.runtime_prefix = "/rt";
  check.system_dirs = {"/usr/lib"};
  const std::string mine = "/rt/lib/python3.11/site-packages/backend/libx.so.1";
  const std::string theirs = "/rt/lib/python3.11/site-packages/framework/libx.so.1";

  SUBCASE("healthy") {
    check.loaded = {{"/usr/lib/libc.so.6", "libc.so.6"}, {mine, "libx.so.1"}, {"/rt/lib/ext.so", ""}};
    check.shipped = {{mine, "libx.so.1", {}}};
    CHECK(iu::CheckLibraries(check).empty());
  }
  SUBCASE("shadowed: the framework's copy never loads") {
    check.loaded = {{mine, "libx.so.1"}};
    check.shipped = {{mine, "libx.so.1", {}}, {theirs, "libx.so.1", {}}};
    auto findings = iu::CheckLibraries(check);
    REQUIRE(findings.size() == 1);
    CHECK(findings[0].code == "shadowed");
    CHECK(findings[0].severity == "warning");
    CHECK(findings[0].message.find(mine) != std::string::npos);
    CHECK(findings[0].message.find(theirs) != std::string::npos);
    CHECK(!iu::HasProblems(findings));
  }
  SUBCASE("an LD_PRELOADed copy from outside, loaded twice") {
    check.loaded = {{"/tmp/x/libx.so.1", "libx.so.1"}, {mine, "libx.so.1"}};
    check.shipped = {{mine, "libx.so.1", {}}};
    check.env = {{"LD_PRELOAD", "/tmp/x/libx.so.1"}};
    auto findings = iu::CheckLibraries(check);
    CHECK(Has(findings, "duplicate", "error"));
    CHECK(Has(findings, "outside", "error"));
    for (const auto& f : findings) {
      CHECK(f.message.find("/tmp/x/libx.so.1") != std::string::npos);
      CHECK(f.message.find(mine) != std::string::npos);
      CHECK(f.fix.find("LD_PRELOAD") != std::string::npos);
    }
    CHECK(iu::HasProblems(findings));
  }
  SUBCASE("from a directory on LD_LIBRARY_PATH") {
    check.loaded = {{"/opt/cuda/lib64/libcudart.so.12", "libcudart.so.12"}};
    check.env = {{"LD_LIBRARY_PATH", "/opt/cuda/lib64"}};
    auto findings = iu::CheckLibraries(check);
    REQUIRE(findings.size() == 1);
    CHECK(findings[0].code == "outside");
    CHECK(findings[0].fix.find("remove /opt/cuda/lib64 from LD_LIBRARY_PATH") != std::string::npos);
  }
}

TEST_CASE("CheckResolutions: an object of the runtime that got another copy than its own") {
  iu::LibraryCheck check;
  check.runtime_prefix = "/rt";
  check.system_dirs = {"/usr/lib"};
  const std::string site = "/rt/lib/python3.11/site-packages/";
  const std::string v2 = site + "backend/libx.so.1", v1 = site + "framework/libx.so.1";
  const std::string ext = site + "framework/_framework.so";
  check.own = {{ext, "libx.so.1", v1}, {site + "framework/_other.so", "libx.so.1", v1}};

  SUBCASE("its own copy is the one loaded: nothing to say") {
    check.loaded = {{v1, "libx.so.1"}, {ext, ""}};
    CHECK(iu::CheckResolutions(check).empty());
  }
  SUBCASE("the preload's copy was loaded first: one warning naming the object and both copies") {
    check.loaded = {{v2, "libx.so.1"}, {site + "backend/_backend.so", ""}, {ext, ""}};
    auto findings = iu::CheckResolutions(check);
    REQUIRE(findings.size() == 1);
    CHECK(findings[0].code == "resolved_elsewhere");
    CHECK(findings[0].severity == "warning");
    CHECK(findings[0].message.find("framework/_framework.so (and 1 more)") != std::string::npos);
    CHECK(findings[0].message.find(v1) != std::string::npos);
    CHECK(findings[0].message.find(v2) != std::string::npos);
    CHECK(findings[0].fix.find("framework") != std::string::npos);
    CHECK(findings[0].paths == std::vector<std::string>{ext, v1, v2});
    // CheckLibraries says it once: the copy is not also reported as shadowed.
    check.shipped = {{v2, "libx.so.1", {}}, {v1, "libx.so.1", {}}};
    auto all = iu::CheckLibraries(check);
    REQUIRE(all.size() == 1);
    CHECK(all[0].code == "resolved_elsewhere");
  }
  SUBCASE("an LD_PRELOADed copy won: the fix is about LD_PRELOAD") {
    check.loaded = {{"/tmp/x/libx.so.1", "libx.so.1"}, {ext, ""}};
    check.env = {{"LD_PRELOAD", "/tmp/x/libx.so.1"}};
    auto findings = iu::CheckResolutions(check);
    REQUIRE(findings.size() == 1);
    CHECK(findings[0].fix.find("LD_PRELOAD") != std::string::npos);
  }
  SUBCASE("nothing with that SONAME is loaded (the object was not loaded either)") {
    check.loaded = {{"/usr/lib/libc.so.6", "libc.so.6"}};
    CHECK(iu::CheckResolutions(check).empty());
  }
}

TEST_CASE("CheckEnvironment") {
  CHECK(iu::CheckEnvironment({}).empty());
  auto findings = iu::CheckEnvironment({{"LD_PRELOAD", "/a.so /b.so"}, {"LD_LIBRARY_PATH", "/x:/y"}, {"CUDA_VISIBLE_DEVICES", ""}});
  CHECK(Has(findings, "ld_preload", "warning"));
  CHECK(Has(findings, "ld_library_path", "warning"));
  CHECK(Has(findings, "cuda_visible_devices", "warning"));
  for (const auto& f : findings) CHECK(!f.fix.empty());
  CHECK(Has(iu::CheckEnvironment({{"CUDA_VISIBLE_DEVICES", "0,1"}}), "cuda_visible_devices", "info"));
  CHECK(!iu::HasProblems(iu::CheckEnvironment({{"LD_LIBRARY_PATH", "/x"}})));
  // An LD_PRELOADed allocator from the system is no problem by itself; a copy it brings is (CheckLibraries).
  CHECK(!iu::HasProblems(iu::CheckEnvironment({{"LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}})));
  CHECK(iu::CheckEnvironment({{"LD_PRELOAD", ""}}).empty());
}

TEST_CASE("CheckBackend") {
  CHECK(iu::CheckBackend({}, "cuda", true).empty());
  CHECK(iu::CheckBackend({}, "cpu", false).empty());
  CHECK(iu::CheckBackend({}, "cuda", std::nullopt).empty());
  CHECK(Has(iu::CheckBackend({}, "cuda", false), "backend", "warning"));
  auto failed = iu::CheckBackend({{"llama_cpp", "ImportError: x.so: undefined symbol: f"}}, "cpu", std::nullopt);
  REQUIRE(failed.size() == 1);
  CHECK(failed[0].severity == "error");
  CHECK(failed[0].message.find("llama_cpp") != std::string::npos);
}

TEST_CASE("LdSoConfDirs follows includes") {
  std::string dir = TempDir();
  Touch(dir + "/ld.so.conf.d/a.conf", "# cuda\n/usr/local/cuda/lib64\n");
  Touch(dir + "/ld.so.conf.d/b.conf", "/opt/b/lib:/opt/c/lib\n");
  auto dirs = iu::LdSoConfDirs("include ld.so.conf.d/*.conf\n/usr/local/lib # local\n", dir);
  CHECK(dirs == std::vector<std::string>{"/usr/local/cuda/lib64", "/opt/b/lib", "/opt/c/lib", "/usr/local/lib"});
  auto system = iu::SystemLibraryDirs(dir + "/missing.conf");
  CHECK(std::find(system.begin(), system.end(), "/usr/lib") != system.end());
  iu::RemoveTree(dir);
}
