// Bundles: which requirements this machine meets (the unit part; packing, unpacking and hostile
// bundles are exercised end to end in tests/e2e/test_bundle.py).
#include "doctest/doctest.h"
#include "inferenceutils/bundle.h"
#include "inferenceutils/python.h"
#include "inferenceutils/python_home.h"

namespace iu {
namespace {

Facts MachineFacts() {
  Facts f;
  f.cpu.arch = "x86_64";
  f.cpu.isa_level = "x86-64-v3+avx_vnni";
  f.cpu.features = {"sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni"};
  f.os.libc = "glibc";
  f.os.libc_version = "2.36";
  f.python.version = EmbeddedPythonVersion();
  f.python.abi_tag = EmbeddedPythonAbi();
  f.python.platform_tag = "manylinux_2_36_x86_64";
  f.python.platform = "linux_x86_64";
  return f;
}

nlohmann::json CpuRequires(const std::string& isa) {
  return {{"backend", "cpu"}, {"arch", "x86_64"}, {"cpu_isa", isa},
          {"python", {{"abi", EmbeddedPythonAbi()}, {"version", EmbeddedPythonVersion()},
                      {"home", CurrentHome().id}}},
          {"platform", "manylinux_2_31_x86_64"}, {"libc", "glibc"}, {"min_glibc", "2.31"}};
}

TEST_CASE("bundle: CPU ISA levels and features") {
  Facts f = MachineFacts();
  CHECK(UnmetRequirement(CpuRequires("x86-64"), f) == "");
  CHECK(UnmetRequirement(CpuRequires("x86-64-v3"), f) == "");
  CHECK(UnmetRequirement(CpuRequires("x86-64-v3+avx_vnni"), f) == "");
  CHECK(UnmetRequirement(CpuRequires("x86-64-v4"), f).find("needs CPU ISA x86-64-v4") == 0);
  CHECK(UnmetRequirement(CpuRequires("x86-64-v2+amx_int8"), f).find("needs CPU feature amx_int8") == 0);
  CHECK(UnmetRequirement(CpuRequires("armv8"), f) != "");
}

TEST_CASE("bundle: platform, glibc and Python") {
  Facts f = MachineFacts();
  nlohmann::json r = CpuRequires("x86-64");
  r["min_glibc"] = "2.39";
  CHECK(UnmetRequirement(r, f) == "needs glibc >= 2.39, this machine has 2.36");
  r = CpuRequires("x86-64");
  r["platform"] = "manylinux_2_31_aarch64";
  CHECK(UnmetRequirement(r, f).find("built for platform") == 0);
  r = CpuRequires("x86-64");
  r["python"]["abi"] = "cp312";
  CHECK(UnmetRequirement(r, f).find("built for Python ABI cp312") == 0);
  r = CpuRequires("x86-64");
  r["python"]["version"] = "3.11.0";
  CHECK(UnmetRequirement(r, f).find("built for Python 3.11.0") == 0);
  r = CpuRequires("x86-64");
  r["python"]["home"] = "3.11.2-0000000000000000";  // another launcher's stdlib
  CHECK(UnmetRequirement(r, f).find("built on the Python home 3.11.2-0000000000000000") == 0);
  r["python"].erase("home");
  r["python"]["executable"] = "/usr/bin/python3.11";  // a bundle of the launcher before its own home
  CHECK(UnmetRequirement(r, f).find("built on the Python home /usr/bin/python3.11") == 0);
}

TEST_CASE("bundle: CUDA compute capabilities and driver") {
  Facts f = MachineFacts();
  nlohmann::json r = CpuRequires("x86-64");
  r["backend"] = "cuda";
  r["cuda"] = {{"compute_capabilities", {"8.0", "9.0"}}, {"min_driver_cuda", "12.4"}};
  CHECK(UnmetRequirement(r, f) == "needs an NVIDIA GPU, none is visible");
  f.nvidia.cuda_version = "13.0";
  f.nvidia.devices = {GpuDevice{0, "A6000", "GPU-1", "8.6", 0}, GpuDevice{1, "H100", "GPU-2", "9.0", 0}};
  CHECK(UnmetRequirement(r, f) == "");  // 8.0 code runs on 8.6
  r["cuda"]["min_driver_cuda"] = "13.1";
  CHECK(UnmetRequirement(r, f) == "needs a driver supporting CUDA 13.1, this driver supports 13.0");
  r["cuda"] = {{"compute_capabilities", {"8.6"}}, {"min_driver_cuda", "12.0"}};
  CHECK(UnmetRequirement(r, f).find("not for GPU 1 (H100, 9.0)") != std::string::npos);
}

}  // namespace
}  // namespace iu
