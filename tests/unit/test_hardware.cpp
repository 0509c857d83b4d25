// Hardware detection against fixture roots (tests/fixtures/roots) and the fake NVIDIA driver
// libraries (tests/fixtures/fakecuda), plus the real machine.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "inferenceutils/backend.h"
#include "inferenceutils/hardware.h"
#include "inferenceutils/paths.h"

namespace fs = std::filesystem;
using iu::DetectOptions;
using iu::Facts;

namespace {

std::string Root(const std::string& name) { return std::string(IU_TEST_FIXTURES) + "/roots/" + name; }
std::string FakeLib(const std::string& name) { return std::string(IU_TEST_BINARY_DIR) + "/fixtures/fakecuda/" + name; }

DetectOptions Fixture(const std::string& name) {
  DetectOptions o;
  o.root = Root(name);
  o.cuda_library = FakeLib("libcuda.so.1");
  o.nvml_library = FakeLib("libnvidia-ml.so.1");
  o.env["PATH"] = "";
  return o;
}

// Sets an environment variable for one scope (the fake driver reads FAKE_* at call time).
struct ScopedEnv {
  std::string name;
  ScopedEnv(std::string n, const std::string& value) : name(std::move(n)) { setenv(name.c_str(), value.c_str(), 1); }
  ~ScopedEnv() { unsetenv(name.c_str()); }
};

bool AnyContains(const std::vector<std::string>& lines, const std::string& needle) {
  for (const auto& line : lines) {
    if (line.find(needle) != std::string::npos) return true;
  }
  return false;
}

std::string TempDir() {
  char tmpl[] = "/tmp/iu-hw-test-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  return tmpl;
}

}  // namespace

TEST_CASE("x86 fixture with the fake driver: CPU, memory, OS, two GPUs, nvcc") {
  Facts f = iu::DetectFacts(Fixture("x86-nvidia"));
  CHECK(f.cpu.arch == "x86_64");
  CHECK(f.cpu.vendor == "GenuineIntel");
  CHECK(f.cpu.model_name == "Intel(R) Core(TM) i9-9900K CPU @ 3.60GHz");
  CHECK(f.cpu.logical_cores == 4);
  CHECK(f.cpu.physical_cores == 2);
  CHECK(f.cpu.feature_source == "cpuinfo");
  CHECK(f.cpu.Has("avx2"));
  CHECK(f.cpu.Has("fma"));
  CHECK(f.cpu.Has("f16c"));
  CHECK_FALSE(f.cpu.Has("avx512f"));
  CHECK(f.cpu.isa_level == "x86-64-v3");
  CHECK(f.cpu.cgroup_version == "v2");
  CHECK(f.cpu.cgroup_cpu_quota == 0);
  CHECK(f.memory.total_bytes == 65799628ull * 1024);
  CHECK(f.memory.available_bytes == 48123456ull * 1024);
  CHECK(f.os.kernel == "6.8.0-45-generic");
  CHECK(f.os.distro == "Ubuntu 24.04.1 LTS");
  CHECK(f.python.abi_tag == "cp311");
  CHECK(f.python.platform == "linux_x86_64");

  const iu::NvidiaFacts& nv = f.nvidia;
  CHECK(nv.driver_present);
  CHECK(nv.driver_version == "580.159.03");
  CHECK(nv.cuda_version == "13.0");
  CHECK(nv.api == "cuda");
  REQUIRE(nv.devices.size() == 2);
  CHECK(nv.devices[0].name == "NVIDIA RTX A6000");
  CHECK(nv.devices[0].arch == "8.6");
  CHECK(nv.devices[0].memory_bytes == 48ull << 30);
  CHECK(nv.devices[0].uuid == "GPU-11111111-1111-1111-1111-111111111111");
  CHECK(nv.devices[1].name == "NVIDIA H100 80GB HBM3");
  CHECK(nv.devices[1].arch == "9.0");
  CHECK(nv.devices[1].index == 1);
  CHECK(nv.nvcc_path == "/usr/local/cuda/bin/nvcc");
  CHECK(nv.nvcc_version == "12.4");
  CHECK(f.rocm.devices.empty());
  CHECK_FALSE(f.rocm.kfd_present);
}

TEST_CASE("the fake driver's devices and CUDA version are configurable") {
  ScopedEnv devices("FAKE_CUDA_DEVICES", "NVIDIA L4|8.9|24");
  ScopedEnv version("FAKE_CUDA_VERSION", "12040");
  Facts f = iu::DetectFacts(Fixture("x86-nvidia"));
  REQUIRE(f.nvidia.devices.size() == 1);
  CHECK(f.nvidia.devices[0].arch == "8.9");
  CHECK(f.nvidia.cuda_version == "12.4");
}

TEST_CASE("cuInit failing: NVML answers when it can, else the facts say why") {
  ScopedEnv fail("FAKE_CUDA_INIT_ERROR", "100");
  SUBCASE("no NVML") {
    DetectOptions o = Fixture("x86-nvidia");
    o.nvml_library = "/nonexistent/libnvidia-ml.so.1";
    Facts f = iu::DetectFacts(o);
    CHECK(f.nvidia.api.empty());
    CHECK(f.nvidia.devices.empty());
    CHECK(AnyContains(f.nvidia.notes, "cuInit failed"));
    CHECK(AnyContains(f.nvidia.notes, "CUDA_ERROR_NO_DEVICE"));
    CHECK(AnyContains(f.nvidia.notes, "cannot load /nonexistent/libnvidia-ml.so.1"));
  }
  SUBCASE("NVML works") {
    Facts f = iu::DetectFacts(Fixture("x86-nvidia"));
    CHECK(f.nvidia.api == "nvml");
    REQUIRE(f.nvidia.devices.size() == 2);
    CHECK(f.nvidia.devices[1].arch == "9.0");
    CHECK(f.nvidia.devices[1].uuid == "GPU-22222222-2222-2222-2222-222222222222");
    CHECK(f.nvidia.cuda_version == "13.0");
    CHECK(f.nvidia.driver_version == "580.159.03");
  }
}

TEST_CASE("a driver library lacking a symbol is reported, not called") {
  DetectOptions o = Fixture("x86-nvidia");
  o.cuda_library = FakeLib("nosym/libcuda.so.1");
  o.nvml_library = FakeLib("nosym/libcuda.so.1");  // lacks nvmlDeviceGetMemoryInfo as well
  Facts f = iu::DetectFacts(o);
  CHECK(f.nvidia.api.empty());
  CHECK(AnyContains(f.nvidia.notes, "lacks cuDeviceTotalMem_v2"));
  CHECK(AnyContains(f.nvidia.notes, "lacks nvmlDeviceGetMemoryInfo"));
}

TEST_CASE("a missing driver library is a note") {
  DetectOptions o = Fixture("x86-nvidia");
  o.cuda_library = "/nonexistent/libcuda.so.1";
  o.nvml_library = "/nonexistent/libnvidia-ml.so.1";
  Facts f = iu::DetectFacts(o);
  CHECK(f.nvidia.driver_present);
  CHECK(f.nvidia.api.empty());
  CHECK(AnyContains(f.nvidia.notes, "cannot load /nonexistent/libcuda.so.1"));
}

TEST_CASE("CUDA_VISIBLE_DEVICES rules") {
  std::vector<std::string> uuids = {"GPU-aaaa1111-0000-0000-0000-000000000000",
                                    "GPU-aaaa2222-0000-0000-0000-000000000000",
                                    "GPU-bbbb3333-0000-0000-0000-000000000000"};
  using V = std::vector<int>;
  CHECK(iu::ApplyCudaVisibleDevices("", uuids) == V{});
  CHECK(iu::ApplyCudaVisibleDevices("  ", uuids) == V{});
  CHECK(iu::ApplyCudaVisibleDevices("1,0", uuids) == V{1, 0});
  CHECK(iu::ApplyCudaVisibleDevices("2, 1", uuids) == V{2, 1});
  CHECK(iu::ApplyCudaVisibleDevices("0,5,1", uuids) == V{0});      // invalid index ends the list
  CHECK(iu::ApplyCudaVisibleDevices("-1,0", uuids) == V{});
  CHECK(iu::ApplyCudaVisibleDevices("foo,1", uuids) == V{});
  CHECK(iu::ApplyCudaVisibleDevices("0,0,1", uuids) == V{0});      // a repeat ends it too
  CHECK(iu::ApplyCudaVisibleDevices("GPU-bbbb", uuids) == V{2});   // unique prefix
  CHECK(iu::ApplyCudaVisibleDevices("GPU-BBBB3333,0", uuids) == V{2, 0});
  CHECK(iu::ApplyCudaVisibleDevices("GPU-aaaa", uuids) == V{});    // ambiguous prefix
  CHECK(iu::ApplyCudaVisibleDevices("MIG-GPU-bbbb3333-0000-0000-0000-000000000000/1/0", uuids) == V{2});
  CHECK(iu::ApplyCudaVisibleDevices("MIG-deadbeef", uuids) == V{});
}

TEST_CASE("NVML devices are matched to CUDA_VISIBLE_DEVICES by UUID and renumbered") {
  DetectOptions o = Fixture("x86-nvidia");
  o.cuda_library = "/nonexistent/libcuda.so.1";
  o.env["CUDA_VISIBLE_DEVICES"] = "GPU-2222,0";
  Facts f = iu::DetectFacts(o);
  CHECK(f.nvidia.api == "nvml");
  CHECK(f.nvidia.visible_devices_set);
  REQUIRE(f.nvidia.devices.size() == 2);
  CHECK(f.nvidia.devices[0].name == "NVIDIA H100 80GB HBM3");
  CHECK(f.nvidia.devices[0].index == 0);
  CHECK(f.nvidia.devices[1].name == "NVIDIA RTX A6000");
  CHECK(f.nvidia.devices[1].index == 1);

  o.env["CUDA_VISIBLE_DEVICES"] = "";
  CHECK(iu::DetectFacts(o).nvidia.devices.empty());
}

TEST_CASE("AMD ROCm fixture: GPU nodes, CPU node skipped, visibility variables, HIP install") {
  DetectOptions o = Fixture("amd-rocm");
  Facts f = iu::DetectFacts(o);
  CHECK(f.cpu.vendor == "AuthenticAMD");
  CHECK(f.cpu.isa_level == "x86-64-v4+avx512_vnni+avx512_bf16");
  CHECK(f.rocm.kfd_present);
  REQUIRE(f.rocm.devices.size() == 2);
  CHECK(f.rocm.devices[0].arch == "gfx1100");
  CHECK(f.rocm.devices[0].memory_bytes == 25753026560ull);
  CHECK(f.rocm.devices[1].arch == "gfx90a");
  CHECK(f.rocm.hip_path == "/opt/rocm");
  CHECK(f.rocm.hip_version == "6.2.0");
  CHECK(f.rocm.hipcc);
  CHECK_FALSE(f.nvidia.driver_present);

  o.env["ROCR_VISIBLE_DEVICES"] = "1";
  Facts one = iu::DetectFacts(o);
  REQUIRE(one.rocm.devices.size() == 1);
  CHECK(one.rocm.devices[0].arch == "gfx90a");
  CHECK(one.rocm.devices[0].index == 0);
  o.env.erase("ROCR_VISIBLE_DEVICES");
  o.env["HIP_VISIBLE_DEVICES"] = "";
  CHECK(iu::DetectFacts(o).rocm.devices.empty());
}

TEST_CASE("gfx names from gfx_target_version") {
  CHECK(iu::GfxName(90010) == "gfx90a");
  CHECK(iu::GfxName(110000) == "gfx1100");
  CHECK(iu::GfxName(90402) == "gfx942");
  CHECK(iu::GfxName(100300) == "gfx1030");
  CHECK(iu::GfxName(0).empty());
}

TEST_CASE("Arm fixture: architecture inferred from cpuinfo, NEON/dotprod/i8mm/SVE") {
  Facts f = iu::DetectFacts(Fixture("arm64"));
  CHECK(f.cpu.arch == "aarch64");
  CHECK(f.cpu.vendor == "ARM");
  CHECK(f.cpu.model_name == "Neoverse-V2");
  CHECK(f.cpu.logical_cores == 4);
  CHECK(f.cpu.features == std::vector<std::string>{"neon", "dotprod", "i8mm", "sve", "sve2"});
  CHECK(f.cpu.isa_level == "armv8+dotprod+i8mm+sve");
  CHECK(f.python.platform == "linux_aarch64");
}

TEST_CASE("cgroup v2: the most restrictive cpu.max along the path, memory.max") {
  Facts f = iu::DetectFacts(Fixture("cgroup-v2"));
  CHECK(f.cpu.cgroup_version == "v2");
  CHECK(f.cpu.logical_cores == 8);
  CHECK(f.cpu.cgroup_cpu_quota == doctest::Approx(1.5));
  CHECK(f.cpu.usable_cores == 2);
  CHECK(f.memory.cgroup_limit_bytes == 2147483648ull);
}

TEST_CASE("cgroup v1: cfs quota at a namespaced mount, unlimited memory") {
  Facts f = iu::DetectFacts(Fixture("cgroup-v1"));
  CHECK(f.cpu.cgroup_version == "v1");
  CHECK(f.cpu.cgroup_cpu_quota == doctest::Approx(2.0));
  CHECK(f.cpu.logical_cores == 4);
  CHECK(f.cpu.usable_cores == 2);
  CHECK(f.memory.cgroup_limit_bytes == 0);
}

TEST_CASE("malformed /proc files: stated notes, a cpu decision, no crash") {
  DetectOptions o = Fixture("malformed");
  o.cuda_library = "/nonexistent/libcuda.so.1";
  o.nvml_library = "/nonexistent/libnvidia-ml.so.1";
  Facts f = iu::DetectFacts(o);
  CHECK(AnyContains(f.notes, "no 'processor' entries"));
  CHECK(AnyContains(f.notes, "cannot count CPUs"));
  CHECK(f.cpu.logical_cores == 1);
  CHECK(f.cpu.features.empty());
  CHECK(f.memory.total_bytes == 0);
  CHECK(f.nvidia.driver_present);
  CHECK(f.nvidia.driver_version.empty());
  auto d = iu::Decide(f, "", std::string(IU_TEST_FIXTURES) + "/../../assets/backends.toml");
  REQUIRE(d.ok());
  CHECK(d->backend == "cpu");
  CHECK(AnyContains(d->reasons, "no 'processor' entries"));
  CHECK(AnyContains(d->reasons, "cuda not usable"));
}

TEST_CASE("unreadable files are notes") {
  std::string root = TempDir();
  fs::create_directories(root + "/proc/cpuinfo/not-a-file");  // reading a directory fails (even as root)
  fs::create_directories(root + "/proc/meminfo");
  DetectOptions o;
  o.root = root;
  Facts f = iu::DetectFacts(o);
  CHECK(AnyContains(f.notes, "cannot read " + root + "/proc/cpuinfo"));
  CHECK(AnyContains(f.notes, "cannot read " + root + "/proc/meminfo"));
  CHECK(f.cpu.logical_cores == 1);
  fs::remove_all(root);
}

TEST_CASE("facts JSON round-trips; bad JSON is an error, not a crash") {
  Facts f = iu::DetectFacts(Fixture("x86-nvidia"));
  nlohmann::json j = f.ToJson();
  CHECK(j["schema_version"] == 1);
  CHECK(j["nvidia"]["devices"][1]["arch"] == "9.0");
  auto back = Facts::FromJson(j);
  REQUIRE(back.ok());
  CHECK(back->ToJson() == j);
  CHECK_FALSE(Facts::FromJson(nlohmann::json{{"schema_version", 99}}).ok());
  CHECK_FALSE(Facts::FromJson(nlohmann::json{{"schema_version", 1}, {"cpu", 5}}).ok());
  CHECK_FALSE(Facts::FromJson(nlohmann::json{{"schema_version", "one"}}).ok());
  CHECK_FALSE(Facts::FromJson(nlohmann::json::array()).ok());
}

TEST_CASE("facts cache: written, reused, invalidated by its inputs, optional") {
  std::string tmp = TempDir();
  std::string root = tmp + "/root", store = tmp + "/store";
  fs::copy(Root("x86-nvidia"), root, fs::copy_options::recursive);
  DetectOptions o = Fixture("x86-nvidia");
  o.root = root;

  Facts first = iu::LoadOrDetectFacts(store, o);
  CHECK(first.source == "detected");
  CHECK(iu::IsRegularFile(store + "/facts.json"));
  Facts second = iu::LoadOrDetectFacts(store, o);
  CHECK(second.source == "cache");
  CHECK(second.nvidia.devices.size() == 2);
  second.source = first.source;
  CHECK(second.ToJson() == first.ToJson());

  std::string fp = iu::FactsFingerprint(o);
  { std::ofstream(root + "/proc/driver/nvidia/version") << "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  590.10.01\n"; }
  CHECK(iu::FactsFingerprint(o) != fp);
  Facts third = iu::LoadOrDetectFacts(store, o);
  CHECK(third.source == "detected");
  CHECK(third.nvidia.driver_version == "590.10.01");
  CHECK(iu::LoadOrDetectFacts(store, o).source == "cache");

  DetectOptions visible = o;
  visible.env["CUDA_VISIBLE_DEVICES"] = "1";
  CHECK(iu::FactsFingerprint(visible) != iu::FactsFingerprint(o));
  { std::ofstream(root + "/proc/sys/kernel/osrelease") << "6.9.0\n"; }
  CHECK(iu::LoadOrDetectFacts(store, o).source == "detected");

  { std::ofstream(store + "/facts.json") << "{ not json"; }
  CHECK(iu::LoadOrDetectFacts(store, o).source == "detected");
  CHECK(iu::LoadOrDetectFacts(store, o).source == "cache");

  // A store that cannot be created: detection still answers.
  { std::ofstream(tmp + "/a-file") << "x"; }
  Facts unwritable = iu::LoadOrDetectFacts(tmp + "/a-file/store", o);
  CHECK(unwritable.source == "detected");
  CHECK(unwritable.nvidia.devices.size() == 2);
  fs::remove_all(tmp);
}

TEST_CASE("the real machine: detection works and agrees with /proc/cpuinfo") {
  DetectOptions o = iu::DetectOptionsFromEnv();
  o.root = "/";
  o.cuda_library.clear();
  o.nvml_library.clear();
  Facts f = iu::DetectFacts(o);
  CHECK_FALSE(f.cpu.arch.empty());
  CHECK(f.cpu.logical_cores >= 1);
  CHECK(f.cpu.usable_cores >= 1);
  CHECK(f.memory.total_bytes > 0);
  CHECK_FALSE(f.os.kernel.empty());
  CHECK(f.python.abi_tag == "cp311");
#if defined(__x86_64__)
  CHECK(f.cpu.feature_source == "cpuid");
  std::string cpuinfo = iu::ReadFile("/proc/cpuinfo").value_or("");
  auto flags_start = cpuinfo.find("\nflags");
  REQUIRE(flags_start != std::string::npos);
  std::string flags = " " + cpuinfo.substr(cpuinfo.find(':', flags_start) + 1,
                                           cpuinfo.find('\n', flags_start + 1) - cpuinfo.find(':', flags_start) - 1) + " ";
  for (const char* feature : {"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"}) {
    INFO(feature);
    CHECK(f.cpu.Has(feature) == (flags.find(std::string(" ") + feature + " ") != std::string::npos));
  }
#endif
}
