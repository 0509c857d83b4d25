// Target profiles (target.h): parsing --cuda-arch / --cuda, and a build host deciding as the
// target machines would.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "inferenceutils/backend.h"
#include "inferenceutils/errors.h"
#include "inferenceutils/target.h"

using iu::Facts;
using iu::TargetProfile;

namespace {

const std::string kTable = std::string(IU_TEST_FIXTURES) + "/../../assets/backends.toml";

// A build host: x86-64-v3, a C compiler, nvcc 12.4 with its stub libcuda, no driver, no GPU.
Facts BuildHost() {
  Facts f;
  f.cpu.arch = "x86_64";
  f.cpu.isa_level = "x86-64-v3";
  f.os.system = "linux";
  f.os.libc = "glibc";
  f.os.libc_version = "2.36";
  f.python.abi_tag = "cp311";
  f.python.platform_tag = "manylinux_2_36_x86_64";
  f.python.platform = "linux_x86_64";
  f.tools.c_compiler = "/usr/bin/cc";
  f.nvidia.notes = {"no NVIDIA driver (/proc/driver/nvidia/version absent)"};
  f.nvidia.nvcc_path = "/usr/local/cuda/bin/nvcc";
  f.nvidia.nvcc_version = "12.4";
  f.nvidia.cuda_stubs = "/usr/local/cuda/lib64/stubs";
  return f;
}

}  // namespace

TEST_CASE("--cuda-arch accepts 86, 8.6, sm_86, compute_86; sorted, unique") {
  auto a = iu::ParseCudaArchs("90,sm_86;8.6 compute_75 120");
  REQUIRE(a.ok());
  CHECK(*a == std::vector<std::string>{"7.5", "8.6", "9.0", "12.0"});
  for (const char* bad : {"", ",", "8x", "sm_", "8.66", "1", "abc", "9.0.1", "2000"}) {
    auto r = iu::ParseCudaArchs(bad);
    CHECK_MESSAGE(!r.ok(), bad);
    if (!r.ok()) CHECK(iu::ExitCodeOf(r.status()) == iu::kExitUsage);
  }
  CHECK(*iu::ParseCudaVersion("12.4") == "12.4");
  CHECK(*iu::ParseCudaVersion("13.0") == "13.0");
  for (const char* bad : {"12", "12.", ".4", "twelve", "12.4.1", "-1.0"}) CHECK_MESSAGE(!iu::ParseCudaVersion(bad).ok(), bad);
}

TEST_CASE("TakeTargetArgs takes its options out, both spellings; --cuda alone is refused") {
  std::vector<std::string> args = {"--json", "--cuda-arch", "86,90", "--cuda=12.4", "--rebuild"};
  TargetProfile t;
  REQUIRE(iu::TakeTargetArgs(args, t, "runtime build").ok());
  CHECK(args == std::vector<std::string>{"--json", "--rebuild"});
  CHECK(t.cuda_archs == std::vector<std::string>{"8.6", "9.0"});
  CHECK(t.cuda == "12.4");
  std::vector<std::string> alone = {"--cuda", "12.4"};
  TargetProfile u;
  CHECK_FALSE(iu::TakeTargetArgs(alone, u, "runtime build").ok());
  std::vector<std::string> dangling = {"--cuda-arch"};
  CHECK_FALSE(iu::TakeTargetArgs(dangling, u, "info").ok());
}

TEST_CASE("a build host keys the runtime exactly as a machine with those GPUs would") {
  // The machine: GPUs 8.6 and 9.0, a driver for CUDA 12.4, the same CPU, nvcc and Python.
  Facts machine = BuildHost();
  machine.nvidia.notes.clear();
  machine.nvidia.cuda_stubs.clear();
  machine.nvidia.driver_present = true;
  machine.nvidia.driver_version = "550.54.14";
  machine.nvidia.cuda_version = "12.4";
  machine.nvidia.api = "cuda";
  iu::GpuDevice a, b;
  a.name = "A";
  a.arch = "8.6";
  b.name = "B";
  b.arch = "9.0";
  b.index = 1;
  machine.nvidia.devices = {a, b};
  auto on_machine = iu::Decide(machine, "", kTable);
  REQUIRE(on_machine.ok());
  REQUIRE(on_machine->backend == "cuda");

  Facts host = BuildHost();
  auto alone = iu::Decide(host, "", kTable);
  REQUIRE(alone.ok());
  CHECK(alone->backend == "cpu");  // no GPU here

  TargetProfile target;
  target.cuda_archs = {"8.6", "9.0"};
  auto applied = iu::ApplyTarget(target, host);
  REQUIRE(applied.ok());
  CHECK(applied->cuda == "12.4");  // this nvcc's version
  auto for_target = iu::Decide(host, "cuda", kTable);
  REQUIRE(for_target.ok());
  CHECK(for_target->profile_key == on_machine->profile_key);
  CHECK(for_target->profile == on_machine->profile);
  CHECK(for_target->reasons[0].find("target sm_86, sm_90 with a driver for CUDA 12.4") != std::string::npos);
  // No driver library on the host: the stub on the build's link path, as for any build host.
  CHECK(for_target->build_env.at("LIBRARY_PATH") == "/usr/local/cuda/lib64/stubs");
  CHECK(on_machine->build_env.count("LIBRARY_PATH") == 0);
}

TEST_CASE("a target nvcc cannot serve is refused, saying why") {
  Facts host = BuildHost();
  TargetProfile old_driver;
  old_driver.cuda_archs = {"8.6"};
  old_driver.cuda = "12.0";
  REQUIRE(iu::ApplyTarget(old_driver, host).ok());
  auto d = iu::Decide(host, "cuda", kTable);
  REQUIRE_FALSE(d.ok());
  CHECK(iu::ExitCodeOf(d.status()) == iu::kExitUnavailable);
  CHECK(std::string(d.status().message()).find("nvcc 12.4 is newer than the target's (--cuda) CUDA 12.0") !=
        std::string::npos);

  Facts no_nvcc = BuildHost();
  no_nvcc.nvidia.nvcc_path.clear();
  no_nvcc.nvidia.nvcc_version.clear();
  TargetProfile t;
  t.cuda_archs = {"8.6"};
  auto r = iu::ApplyTarget(t, no_nvcc);
  REQUIRE_FALSE(r.ok());
  CHECK(std::string(r.status().message()).find("give --cuda X.Y") != std::string::npos);
}
