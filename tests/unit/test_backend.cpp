// The backend decision: a pure function of Facts, the forced backend and assets/backends.toml.
#include <doctest/doctest.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <string>

#include "inferenceutils/backend.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/hardware.h"

using iu::Decide;
using iu::Facts;
using iu::GpuDevice;

namespace {

const std::string kTable = std::string(IU_TEST_FIXTURES) + "/../../assets/backends.toml";

// A Linux x86-64-v3 machine with glibc 2.36, Python 3.11 and a C compiler; no GPU.
Facts CpuMachine() {
  Facts f;
  f.cpu.arch = "x86_64";
  f.cpu.model_name = "Test CPU";
  f.cpu.features = {"sse4_2", "avx", "avx2", "fma", "f16c"};
  f.cpu.isa_level = "x86-64-v3";
  f.memory.total_bytes = 64ull << 30;
  f.memory.available_bytes = 32ull << 30;
  f.os.system = "linux";
  f.os.libc = "glibc";
  f.os.libc_version = "2.36";
  f.python.version = "3.11.2";
  f.python.abi_tag = "cp311";
  f.python.platform_tag = "manylinux_2_36_x86_64";
  f.python.platform = "linux_x86_64";
  f.tools.c_compiler = "/usr/bin/cc";
  f.rocm.notes = {"no AMD GPU driver (/sys/class/kfd/kfd/topology/nodes absent)"};
  f.nvidia.notes = {"no NVIDIA driver (/proc/driver/nvidia/version absent)"};
  return f;
}

GpuDevice Gpu(const std::string& name, const std::string& cc) {
  GpuDevice g;
  g.name = name;
  g.arch = cc;
  return g;
}

// Two GPUs (sm_86, sm_90), driver 580.159.03 for CUDA 13.0, nvcc 12.4.
Facts CudaMachine() {
  Facts f = CpuMachine();
  f.nvidia.notes.clear();
  f.nvidia.driver_present = true;
  f.nvidia.driver_version = "580.159.03";
  f.nvidia.cuda_version = "13.0";
  f.nvidia.api = "cuda";
  f.nvidia.devices = {Gpu("NVIDIA RTX A6000", "8.6"), Gpu("NVIDIA H100 80GB HBM3", "9.0")};
  f.nvidia.devices[1].index = 1;
  f.nvidia.nvcc_path = "/usr/local/cuda/bin/nvcc";
  f.nvidia.nvcc_version = "12.4";
  return f;
}

bool AnyContains(const std::vector<std::string>& lines, const std::string& needle) {
  for (const auto& line : lines) {
    if (line.find(needle) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("cuda with two GPUs: flags, wheels best first, reason") {
  auto d = Decide(CudaMachine(), "", kTable);
  REQUIRE(d.ok());
  CHECK(d->backend == "cuda");
  CHECK_FALSE(d->forced);
  CHECK(d->build_env.at("CMAKE_ARGS") ==
        "-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=86;90 -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc "
        "-DGGML_NATIVE=on");
  CHECK(d->build_env.at("CMAKE_ARGS").find("CUBLAS") == std::string::npos);
  CHECK(d->wheel_tags == std::vector<std::string>{"cu130", "cu125", "cu124", "cu123", "cu122", "cu121"});
  CHECK(d->wheel_indexes.front() == "https://abetlen.github.io/llama-cpp-python/whl/cu130");
  CHECK(d->source_build_possible);
  REQUIRE_FALSE(d->reasons.empty());
  const std::string& why = d->reasons[0];
  CHECK(why.find("NVIDIA RTX A6000 (sm_86), NVIDIA H100 80GB HBM3 (sm_90)") != std::string::npos);
  CHECK(why.find("driver 580.159.03 supports CUDA 13.0") != std::string::npos);
  CHECK(why.find("nvcc 12.4 found") != std::string::npos);
  CHECK(why.substr(why.size() - 8) == "→ cuda");
  CHECK(std::regex_match(d->profile_key, std::regex("cuda-[0-9a-f]{16}")));
  CHECK(d->profile["gpu_targets"] == nlohmann::json::array({"sm_86", "sm_90"}));
  CHECK(d->profile["cuda"] == "13.0");
}

TEST_CASE("wheels follow the driver's CUDA version and the GPUs' compute capabilities") {
  Facts f = CudaMachine();
  f.nvidia.cuda_version = "12.4";
  auto d = Decide(f, "", kTable);
  REQUIRE(d.ok());
  CHECK(d->wheel_tags == std::vector<std::string>{"cu124", "cu123", "cu122", "cu121"});

  f.nvidia.cuda_version = "13.0";
  f.nvidia.devices = {Gpu("NVIDIA GeForce GTX 1080", "6.1")};  // cu130 dropped Pascal
  d = Decide(f, "", kTable);
  REQUIRE(d.ok());
  CHECK(d->wheel_tags.front() == "cu125");

  f.python.abi_tag = "cp39";
  d = Decide(f, "", kTable);
  REQUIRE(d.ok());
  CHECK(d->backend == "cuda");  // nvcc 12.4 can still build for sm_61
  CHECK(d->wheel_tags.empty());
  CHECK(AnyContains(d->reasons, "not cp39"));
}

TEST_CASE("cuda without a way to build falls back to cpu and says why") {
  Facts f = CudaMachine();
  f.nvidia.cuda_version = "12.8";
  f.nvidia.devices = {Gpu("NVIDIA RTX PRO 6000 Blackwell", "12.0")};
  auto d = Decide(f, "", kTable);
  REQUIRE(d.ok());
  CHECK(d->backend == "cpu");
  CHECK(AnyContains(d->reasons, "cuda not usable"));
  CHECK(AnyContains(d->reasons, "nvcc 12.4 cannot target sm_120"));
  CHECK(AnyContains(d->reasons, "cu130 needs a driver for CUDA >= 13.0"));
  CHECK(d->build_env.at("CMAKE_ARGS") == "-DGGML_NATIVE=on");
  CHECK(d->wheel_indexes == std::vector<std::string>{"https://abetlen.github.io/llama-cpp-python/whl/cpu"});
}

TEST_CASE("no nvcc: a prebuilt wheel is enough; nvcc newer than the driver cannot build") {
  Facts f = CudaMachine();
  f.nvidia.nvcc_path.clear();
  f.nvidia.nvcc_version.clear();
  auto d = Decide(f, "", kTable);
  REQUIRE(d.ok());
  CHECK(d->backend == "cuda");
  CHECK_FALSE(d->source_build_possible);
  CHECK(d->build_env.at("CMAKE_ARGS").find("CMAKE_CUDA_COMPILER") == std::string::npos);
  CHECK(AnyContains(d->reasons, "no nvcc"));

  f = CudaMachine();
  f.nvidia.cuda_version = "12.4";
  f.nvidia.nvcc_version = "13.0";
  d = Decide(f, "", kTable);
  REQUIRE(d.ok());
  CHECK(d->backend == "cuda");
  CHECK_FALSE(d->source_build_possible);
  CHECK(AnyContains(d->reasons, "nvcc 13.0 is newer than the driver's CUDA 12.4"));
}

TEST_CASE("the driver's failure reaches the reasons") {
  Facts f = CpuMachine();
  f.nvidia.driver_present = true;
  f.nvidia.driver_version = "580.159.03";
  f.nvidia.notes = {"cuInit failed in libcuda.so.1: error 100 (CUDA_ERROR_NO_DEVICE)"};
  auto d = Decide(f, "", kTable);
  REQUIRE(d.ok());
  CHECK(d->backend == "cpu");
  CHECK(AnyContains(d->reasons, "NVIDIA driver 580.159.03 present but the driver API is unusable: cuInit failed"));
}

TEST_CASE("no driver is named as such even when the toolkit added its own note") {
  Facts f = CpuMachine();
  f.nvidia.nvcc_path = "/usr/local/cuda/bin/nvcc";
  f.nvidia.notes = {"nvcc at /usr/local/cuda/bin/nvcc: version unknown (no version.json)",
                    "no NVIDIA driver (/proc/driver/nvidia/version absent)"};
  auto d = Decide(f, "", kTable);
  REQUIRE(d.ok());
  CHECK(d->backend == "cpu");
  CHECK(AnyContains(d->reasons, "cuda not usable: no NVIDIA driver (/proc/driver/nvidia/version absent)"));
}

TEST_CASE("profile key: only decision-relevant facts") {
  Facts base = CudaMachine();
  std::string key = Decide(base, "", kTable)->profile_key;

  Facts f = base;
  f.memory.available_bytes = 1;
  f.nvidia.driver_version = "580.159.04";
  f.detect_ms = 99;
  f.cpu.model_name = "renamed";
  f.nvidia.devices[0].memory_bytes = 123;
  std::swap(f.nvidia.devices[0], f.nvidia.devices[1]);  // order of the same GPUs
  CHECK(Decide(f, "", kTable)->profile_key == key);

  f = base;
  f.nvidia.devices.push_back(Gpu("NVIDIA L4", "8.9"));
  CHECK(Decide(f, "", kTable)->profile_key != key);
  f = base;
  f.nvidia.cuda_version = "12.8";
  CHECK(Decide(f, "", kTable)->profile_key != key);
  f = base;
  f.python.abi_tag = "cp312";
  CHECK(Decide(f, "", kTable)->profile_key != key);
  f = base;
  f.cpu.isa_level = "x86-64-v4";
  CHECK(Decide(f, "", kTable)->profile_key != key);
  auto cpu = Decide(base, "cpu", kTable);
  REQUIRE(cpu.ok());
  CHECK(cpu->profile_key != key);
  CHECK(cpu->profile_key.rfind("cpu-", 0) == 0);
  CHECK_FALSE(cpu->profile.contains("gpu_targets"));
  // A GPU the cpu runtime does not use does not change the cpu key.
  Facts plain = CpuMachine();
  CHECK(Decide(plain, "", kTable)->profile_key == cpu->profile_key);
  CHECK(iu::ProfileKeyOf(nlohmann::json{{"backend", "cpu"}, {"a", 1}}) ==
        iu::ProfileKeyOf(nlohmann::json::parse(R"({"a":1,"backend":"cpu"})")));
}

TEST_CASE("forced backends") {
  auto unknown = Decide(CpuMachine(), "tpu", kTable);
  REQUIRE_FALSE(unknown.ok());
  CHECK(iu::ExitCodeOf(unknown.status()) == iu::kExitConfig);  // a bad option value (README)
  CHECK(std::string(unknown.status().message()).find("tpu") != std::string::npos);

  auto impossible = Decide(CpuMachine(), "cuda", kTable);
  REQUIRE_FALSE(impossible.ok());
  CHECK(iu::ExitCodeOf(impossible.status()) == iu::kExitUnavailable);
  CHECK(std::string(impossible.status().message()).find("no NVIDIA driver") != std::string::npos);

  auto cpu = Decide(CudaMachine(), "cpu", kTable);
  REQUIRE(cpu.ok());
  CHECK(cpu->backend == "cpu");
  CHECK(cpu->forced);
  CHECK(AnyContains(cpu->reasons, "cuda also usable"));
}

TEST_CASE("rocm: HIP flags with the detected gfx targets") {
  Facts f = CpuMachine();
  f.rocm.kfd_present = true;
  f.rocm.devices = {Gpu("AMD gfx1100", "gfx1100"), Gpu("AMD gfx90a", "gfx90a")};
  f.rocm.hip_path = "/opt/rocm";
  f.rocm.hip_version = "6.2.0";
  f.rocm.hipcc = true;
  auto d = Decide(f, "", kTable);
  REQUIRE(d.ok());
  CHECK(d->backend == "rocm");
  CHECK(d->build_env.at("CMAKE_ARGS") == "-DGGML_HIP=on -DGPU_TARGETS=gfx1100;gfx90a -DGGML_NATIVE=on");
  CHECK(d->build_env.at("HIP_PATH") == "/opt/rocm");
  CHECK(d->wheel_tags == std::vector<std::string>{"rocm"});
  CHECK(d->profile["gpu_targets"] == nlohmann::json::array({"gfx1100", "gfx90a"}));

  f.rocm.devices = {Gpu("AMD gfx1151", "gfx1151")};
  f.rocm.hipcc = false;
  d = Decide(f, "", kTable);
  REQUIRE(d.ok());
  CHECK(d->backend == "cpu");
  CHECK(AnyContains(d->reasons, "rocm not usable"));
  CHECK(AnyContains(d->reasons, "not built for gfx1151"));
}

TEST_CASE("metal on Apple Silicon; Rosetta is refused with the reason") {
  Facts f = CpuMachine();
  f.cpu.arch = "arm64";
  f.os.system = "macos";
  f.os.libc = "libSystem";
  f.python.platform = "macosx_arm64";
  f.python.platform_tag = "macosx_14_0_arm64";
  f.apple.macos = true;
  f.apple.apple_silicon = true;
  f.apple.metal = true;
  f.apple.chip = "Apple M2";
  auto d = Decide(f, "", kTable);
  REQUIRE(d.ok());
  CHECK(d->backend == "metal");
  CHECK(d->build_env.at("CMAKE_ARGS") == "-DGGML_METAL=on");
  CHECK(d->wheel_tags == std::vector<std::string>{"metal"});

  f.cpu.arch = "x86_64";
  f.python.platform = "macosx_x86_64";
  f.apple.rosetta = true;
  f.apple.metal = false;
  d = Decide(f, "", kTable);
  REQUIRE(d.ok());
  CHECK(d->backend == "cpu");
  CHECK(AnyContains(d->reasons, "Rosetta 2"));
}

TEST_CASE("vulkan needs a loader, a hardware driver and glslc or a wheel") {
  Facts f = CpuMachine();
  f.vulkan.loader = "/usr/lib/x86_64-linux-gnu/libvulkan.so.1";
  f.vulkan.icds = {"/usr/share/vulkan/icd.d/lvp_icd.x86_64.json"};
  auto d = Decide(f, "", kTable);
  REQUIRE(d.ok());
  CHECK(d->backend == "cpu");
  CHECK(AnyContains(d->reasons, "only software Vulkan drivers"));
  f.vulkan.icds.push_back("/usr/share/vulkan/icd.d/radeon_icd.x86_64.json");
  f.vulkan.hardware_icd = true;
  d = Decide(f, "", kTable);
  REQUIRE(d.ok());
  CHECK(d->backend == "vulkan");
  CHECK(d->build_env.at("CMAKE_ARGS") == "-DGGML_VULKAN=on -DGGML_NATIVE=on");
}

TEST_CASE("a missing or broken table is a configuration error") {
  auto missing = Decide(CpuMachine(), "", "/nonexistent/backends.toml");
  REQUIRE_FALSE(missing.ok());
  CHECK(iu::ExitCodeOf(missing.status()) == iu::kExitConfig);
  char path[] = "/tmp/iu-table-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  { std::ofstream(path) << "preference = [\"cuda\"]\n"; }  // no [cuda] table
  auto broken = Decide(CpuMachine(), "", path);
  REQUIRE_FALSE(broken.ok());
  CHECK(iu::ExitCodeOf(broken.status()) == iu::kExitConfig);
  unlink(path);
}

TEST_CASE("end to end in-process: fixture root + fake libcuda → cuda for sm_86 and sm_90") {
  iu::DetectOptions o;
  o.root = std::string(IU_TEST_FIXTURES) + "/roots/x86-nvidia";
  o.cuda_library = std::string(IU_TEST_BINARY_DIR) + "/fixtures/fakecuda/libcuda.so.1";
  o.env["PATH"] = "/usr/bin";  // under the root: no compiler there
  Facts f = iu::DetectFacts(o);
  auto d = Decide(f, "", kTable);
  REQUIRE(d.ok());
  CHECK(d->backend == "cuda");
  CHECK(d->build_env.at("CMAKE_ARGS").find("-DCMAKE_CUDA_ARCHITECTURES=86;90") != std::string::npos);
  CHECK_FALSE(d->source_build_possible);  // no C compiler in the fixture root
  CHECK(AnyContains(d->reasons, "no C compiler"));
  CHECK(d->wheel_tags.front() == "cu130");
  CHECK(d->ToJson()["profile_key"] == d->profile_key);
}

TEST_CASE("no driver library: the toolkit's stub libcuda.so on the build's link path only") {
  const std::string cuda = std::string(IU_TEST_FIXTURES) + "/roots/x86-nvidia/usr/local/cuda";
  const std::string stubs = cuda + "/lib64/stubs";
  Facts f = CudaMachine();
  f.nvidia.nvcc_path = cuda + "/bin/nvcc";
  f.nvidia.cuda_stubs = stubs;
  auto d = Decide(f, "", kTable);  // libcuda.so.1 answered: no stub
  REQUIRE(d.ok());
  CHECK(d->build_env.count("LIBRARY_PATH") == 0);
  CHECK(d->build_env.at("CMAKE_ARGS").find("stubs") == std::string::npos);
  const std::string key = d->profile_key;

  f.nvidia.api = "nvml";  // the driver's libcuda.so.1 is not here (a build host)
  d = Decide(f, "", kTable);
  REQUIRE(d.ok());
  CHECK(d->backend == "cuda");
  CHECK(d->build_env.at("LIBRARY_PATH") == stubs);
  const std::string& args = d->build_env.at("CMAKE_ARGS");
  CHECK(args.find("-DCMAKE_EXE_LINKER_FLAGS=-Wl,-L" + stubs + ",--allow-shlib-undefined") != std::string::npos);
  CHECK(args.find("-DCMAKE_SHARED_LINKER_FLAGS=-Wl,-L" + stubs) != std::string::npos);
  CHECK(AnyContains(d->reasons, "stub " + stubs + "/libcuda.so (link path only"));
  CHECK(d->profile_key == key);  // the same runtime, only linked differently

  f.nvidia.cuda_stubs.clear();  // a toolkit without stubs: nothing added
  d = Decide(f, "", kTable);
  REQUIRE(d.ok());
  CHECK(d->build_env.count("LIBRARY_PATH") == 0);
}
