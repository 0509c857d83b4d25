// NVIDIA: the driver (/proc/driver/nvidia/version), then the CUDA driver API of libcuda.so.1 or,
// when that fails, NVML (libnvidia-ml.so.1), both loaded with dlopen. And the CUDA toolkit (nvcc)
// for source builds, its version read from files, never by running it.
#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>

#include <cstdio>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "hardware/detect_util.h"
#include "inferenceutils/paths.h"
#include "nlohmann/json.hpp"

namespace iu {

std::vector<int> ApplyCudaVisibleDevices(const std::string& value, const std::vector<std::string>& uuids) {
  std::vector<int> selected;
  std::set<int> seen;
  std::string trimmed = detect::Trim(value);
  if (trimmed.empty()) return selected;
  auto match_prefix = [&](const std::string& prefix) -> int {
    int found = -1;
    for (size_t i = 0; i < uuids.size(); ++i) {
      if (absl::StartsWithIgnoreCase(uuids[i], prefix)) {
        if (found >= 0) return -2;  // ambiguous
        found = static_cast<int>(i);
      }
    }
    return found;
  };
  for (absl::string_view raw : absl::StrSplit(trimmed, ',')) {
    std::string entry = detect::Trim(std::string(raw));
    int index = -1;
    uint64_t n = 0;
    if (detect::ParseU64(entry, &n)) {
      if (n < uuids.size()) index = static_cast<int>(n);
    } else if (absl::StartsWithIgnoreCase(entry, "GPU-") && entry.size() > 4) {
      index = match_prefix(entry);
    } else if (absl::StartsWithIgnoreCase(entry, "MIG-") && entry.size() > 4) {
      // MIG-GPU-<uuid>/<gi>/<ci> names its parent; MIG-<uuid> is a MIG device listed as such.
      std::string rest = entry.substr(4);
      if (absl::StartsWithIgnoreCase(rest, "GPU-")) {
        index = match_prefix(rest.substr(0, rest.find('/')));
      } else {
        index = match_prefix(entry);
      }
    }
    if (index < 0 || seen.count(index)) break;  // an invalid entry ends the list
    seen.insert(index);
    selected.push_back(index);
  }
  return selected;
}

namespace detect {
namespace {

using CUresult = int;
using CUdevice = int;
struct CUuuid {
  unsigned char bytes[16];
};

const char* CudaErrorName(int code) {
  switch (code) {
    case 1: return "CUDA_ERROR_INVALID_VALUE";
    case 2: return "CUDA_ERROR_OUT_OF_MEMORY";
    case 3: return "CUDA_ERROR_NOT_INITIALIZED";
    case 4: return "CUDA_ERROR_DEINITIALIZED";
    case 34: return "CUDA_ERROR_STUB_LIBRARY";
    case 46: return "CUDA_ERROR_DEVICE_UNAVAILABLE";
    case 100: return "CUDA_ERROR_NO_DEVICE";
    case 101: return "CUDA_ERROR_INVALID_DEVICE";
    case 222: return "CUDA_ERROR_UNSUPPORTED_PTX_VERSION";
    case 803: return "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH";
    case 804: return "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE";
    case 999: return "CUDA_ERROR_UNKNOWN";
    default: return "unknown error";
  }
}

std::string FormatUuid(const unsigned char* b) {
  char buf[64];
  std::snprintf(buf, sizeof(buf),
                "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
  return buf;
}

std::string CudaVersionString(int v) {  // 12040 -> "12.4"
  if (v <= 0) return {};
  return absl::StrCat(v / 1000, ".", (v % 1000) / 10);
}

void* OpenLibrary(const std::string& name, std::string* error) {
  dlerror();
  void* handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* e = dlerror();
    *error = absl::StrCat("cannot load ", name, ": ", e ? e : "unknown error");
  }
  return handle;
}

template <typename F>
bool Sym(void* handle, const char* name, F* out, std::vector<std::string>* missing) {
  *out = reinterpret_cast<F>(dlsym(handle, name));
  if (!*out && missing) missing->push_back(name);
  return *out != nullptr;
}

// The CUDA driver API. libcuda applies CUDA_VISIBLE_DEVICES itself.
bool QueryCudaDriver(const DetectOptions& options, NvidiaFacts& nv) {
  std::string lib = options.cuda_library.empty() ? "libcuda.so.1" : options.cuda_library;
  std::string error;
  void* h = OpenLibrary(lib, &error);
  if (!h) {
    nv.notes.push_back(error);
    return false;
  }
  CUresult (*cuInit)(unsigned);
  CUresult (*cuDriverGetVersion)(int*);
  CUresult (*cuDeviceGetCount)(int*);
  CUresult (*cuDeviceGet)(CUdevice*, int);
  CUresult (*cuDeviceGetName)(char*, int, CUdevice);
  CUresult (*cuDeviceGetAttribute)(int*, int, CUdevice);
  CUresult (*cuDeviceTotalMem)(size_t*, CUdevice);
  CUresult (*cuDeviceGetUuid)(CUuuid*, CUdevice) = nullptr;
  std::vector<std::string> missing;
  Sym(h, "cuInit", &cuInit, &missing);
  Sym(h, "cuDriverGetVersion", &cuDriverGetVersion, &missing);
  Sym(h, "cuDeviceGetCount", &cuDeviceGetCount, &missing);
  Sym(h, "cuDeviceGet", &cuDeviceGet, &missing);
  Sym(h, "cuDeviceGetName", &cuDeviceGetName, &missing);
  Sym(h, "cuDeviceGetAttribute", &cuDeviceGetAttribute, &missing);
  Sym(h, "cuDeviceTotalMem_v2", &cuDeviceTotalMem, &missing);
  if (!Sym(h, "cuDeviceGetUuid_v2", &cuDeviceGetUuid, nullptr)) Sym(h, "cuDeviceGetUuid", &cuDeviceGetUuid, nullptr);
  if (!missing.empty()) {
    nv.notes.push_back(absl::StrCat(lib, " lacks ", absl::StrJoin(missing, ", "),
                                    " (not a CUDA driver library, or too old)"));
    return false;
  }
  if (CUresult r = cuInit(0); r != 0) {
    nv.notes.push_back(absl::StrCat("cuInit failed in ", lib, ": error ", r, " (", CudaErrorName(r), ")"));
    return false;
  }
  int version = 0, count = 0;
  if (CUresult r = cuDriverGetVersion(&version); r != 0) {
    nv.notes.push_back(absl::StrCat("cuDriverGetVersion failed: error ", r, " (", CudaErrorName(r), ")"));
    return false;
  }
  if (CUresult r = cuDeviceGetCount(&count); r != 0 || count < 0) {
    nv.notes.push_back(absl::StrCat("cuDeviceGetCount failed: error ", r, " (", CudaErrorName(r), ")"));
    return false;
  }
  nv.cuda_version = CudaVersionString(version);
  nv.api = "cuda";
  nv.library = lib;
  for (int i = 0; i < count && i < 64; ++i) {
    CUdevice dev = 0;
    if (CUresult r = cuDeviceGet(&dev, i); r != 0) {
      nv.notes.push_back(absl::StrCat("cuDeviceGet(", i, ") failed: error ", r, " (", CudaErrorName(r), ")"));
      continue;
    }
    GpuDevice gpu;
    gpu.index = i;
    char name[256] = {};
    if (cuDeviceGetName(name, sizeof(name) - 1, dev) == 0) gpu.name = name;
    int major = 0, minor = 0;
    constexpr int kCcMajor = 75, kCcMinor = 76;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_*
    if (cuDeviceGetAttribute(&major, kCcMajor, dev) != 0 || cuDeviceGetAttribute(&minor, kCcMinor, dev) != 0 ||
        major <= 0) {
      nv.notes.push_back(absl::StrCat("device ", i, " (", gpu.name, "): cannot read its compute capability; skipped"));
      continue;
    }
    gpu.arch = absl::StrCat(major, ".", minor);
    size_t mem = 0;
    if (cuDeviceTotalMem(&mem, dev) == 0) gpu.memory_bytes = mem;
    CUuuid uuid{};
    if (cuDeviceGetUuid && cuDeviceGetUuid(&uuid, dev) == 0) gpu.uuid = FormatUuid(uuid.bytes);
    nv.devices.push_back(gpu);
  }
  return true;
}

// NVML: sees every GPU regardless of CUDA_VISIBLE_DEVICES, so the variable is applied here.
bool QueryNvml(const DetectOptions& options, NvidiaFacts& nv) {
  std::string lib = options.nvml_library.empty() ? "libnvidia-ml.so.1" : options.nvml_library;
  std::string error;
  void* h = OpenLibrary(lib, &error);
  if (!h) {
    nv.notes.push_back(error);
    return false;
  }
  using Dev = void*;
  struct Memory {
    unsigned long long total, free, used;
  };
  int (*init)();
  int (*driver_version)(char*, unsigned);
  int (*cuda_version)(int*) = nullptr;
  int (*count)(unsigned*);
  int (*handle)(unsigned, Dev*);
  int (*name)(Dev, char*, unsigned);
  int (*uuid)(Dev, char*, unsigned);
  int (*cc)(Dev, int*, int*);
  int (*memory)(Dev, Memory*);
  std::vector<std::string> missing;
  Sym(h, "nvmlInit_v2", &init, &missing);
  Sym(h, "nvmlSystemGetDriverVersion", &driver_version, &missing);
  if (!Sym(h, "nvmlSystemGetCudaDriverVersion_v2", &cuda_version, nullptr))
    Sym(h, "nvmlSystemGetCudaDriverVersion", &cuda_version, &missing);
  Sym(h, "nvmlDeviceGetCount_v2", &count, &missing);
  Sym(h, "nvmlDeviceGetHandleByIndex_v2", &handle, &missing);
  Sym(h, "nvmlDeviceGetName", &name, &missing);
  Sym(h, "nvmlDeviceGetUUID", &uuid, &missing);
  Sym(h, "nvmlDeviceGetCudaComputeCapability", &cc, &missing);
  Sym(h, "nvmlDeviceGetMemoryInfo", &memory, &missing);
  if (!missing.empty()) {
    nv.notes.push_back(absl::StrCat(lib, " lacks ", absl::StrJoin(missing, ", ")));
    return false;
  }
  if (int r = init(); r != 0) {
    nv.notes.push_back(absl::StrCat("nvmlInit failed in ", lib, ": error ", r));
    return false;
  }
  int cuda = 0;
  unsigned n = 0;
  if (cuda_version(&cuda) != 0 || count(&n) != 0) {
    nv.notes.push_back(absl::StrCat(lib, ": cannot read the CUDA version or the device count"));
    return false;
  }
  char buf[96] = {};
  if (driver_version(buf, sizeof(buf) - 1) == 0 && nv.driver_version.empty()) nv.driver_version = buf;
  nv.cuda_version = CudaVersionString(cuda);
  nv.api = "nvml";
  nv.library = lib;
  std::vector<GpuDevice> all;
  std::vector<std::string> uuids;
  for (unsigned i = 0; i < n && i < 64; ++i) {
    Dev dev = nullptr;
    GpuDevice gpu;
    int major = 0, minor = 0;
    if (handle(i, &dev) != 0 || cc(dev, &major, &minor) != 0) {
      nv.notes.push_back(absl::StrCat("NVML device ", i, ": cannot read it; skipped"));
      continue;
    }
    gpu.arch = absl::StrCat(major, ".", minor);
    char text[128] = {};
    if (name(dev, text, sizeof(text) - 1) == 0) gpu.name = text;
    char id[96] = {};
    if (uuid(dev, id, sizeof(id) - 1) == 0) gpu.uuid = id;
    Memory mem{};
    if (memory(dev, &mem) == 0) gpu.memory_bytes = mem.total;
    all.push_back(gpu);
    uuids.push_back(gpu.uuid);
  }
  if (nv.visible_devices_set) {
    int next = 0;
    for (int i : ApplyCudaVisibleDevices(nv.visible_devices, uuids)) {
      GpuDevice gpu = all[static_cast<size_t>(i)];
      gpu.index = next++;
      nv.devices.push_back(gpu);
    }
  } else {
    for (size_t i = 0; i < all.size(); ++i) {
      all[i].index = static_cast<int>(i);
      nv.devices.push_back(all[i]);
    }
  }
  return true;
}

std::string MajorMinor(const std::string& version) {
  std::vector<std::string> parts = absl::StrSplit(version, '.');
  if (parts.size() < 2) return version;
  return absl::StrCat(parts[0], ".", parts[1]);
}

// The toolkit's version from files beside nvcc: version.json, version.txt, include/cuda.h.
std::string ToolkitVersion(const std::string& toolkit) {
  std::string text;
  if (ReadSmallFile(toolkit + "/version.json", &text, nullptr, 256 * 1024)) {
    auto json = nlohmann::json::parse(text, nullptr, false);
    if (json.is_object() && json.contains("cuda") && json["cuda"].is_object() &&
        json["cuda"].value("version", "") != "") {
      return MajorMinor(json["cuda"].value("version", ""));
    }
  }
  if (ReadSmallFile(toolkit + "/version.txt", &text, nullptr, 4096)) {
    auto pos = text.find("CUDA Version ");
    if (pos != std::string::npos) return MajorMinor(Trim(text.substr(pos + 13, text.find('\n', pos) - pos - 13)));
  }
  if (ReadSmallFile(toolkit + "/include/cuda.h", &text, nullptr, 64 * 1024)) {
    auto pos = text.find("#define CUDA_VERSION ");
    if (pos != std::string::npos) {
      uint64_t v = 0;
      std::string number = Trim(text.substr(pos + 21, text.find('\n', pos) - pos - 21));
      if (ParseU64(number, &v)) return CudaVersionString(static_cast<int>(v));
    }
  }
  return {};
}

void DetectNvcc(const DetectOptions& options, NvidiaFacts& nv) {
  std::vector<std::string> candidates;
  for (const char* var : {"CUDA_HOME", "CUDA_PATH"}) {
    std::string dir = EnvOf(options, var);
    if (!dir.empty()) candidates.push_back(dir + "/bin/nvcc");
  }
  std::string on_path = FindOnPath(options, "nvcc");
  if (!on_path.empty()) candidates.push_back(on_path);
  candidates.push_back("/usr/local/cuda/bin/nvcc");
  for (const std::string& nvcc : candidates) {
    std::string rooted = Rooted(options, nvcc);
    if (!IsExecutableFile(rooted)) continue;
    char real[PATH_MAX];
    std::string resolved = realpath(rooted.c_str(), real) ? std::string(real) : rooted;
    std::string toolkit = resolved.substr(0, resolved.rfind('/'));
    toolkit = toolkit.substr(0, toolkit.rfind('/'));
    nv.nvcc_path = nvcc;
    if (PathExists(toolkit + "/lib64/stubs/libcuda.so")) nv.cuda_stubs = toolkit + "/lib64/stubs";
    nv.nvcc_version = ToolkitVersion(toolkit);
    if (nv.nvcc_version.empty()) {
      nv.notes.push_back(absl::StrCat("nvcc at ", nvcc, ": version unknown (no version.json, version.txt or include/cuda.h in ",
                                      toolkit, ")"));
    }
    return;
  }
}

}  // namespace

void DetectNvidia(const DetectOptions& options, Facts& facts) {
  NvidiaFacts& nv = facts.nvidia;
  auto it = options.env.find("CUDA_VISIBLE_DEVICES");
  nv.visible_devices_set = it != options.env.end();
  if (nv.visible_devices_set) nv.visible_devices = it->second;
  DetectNvcc(options, nv);

  std::string version_file = Rooted(options, "/proc/driver/nvidia/version");
  std::string text;
  if (ReadSmallFile(version_file, &text, nullptr, 4096)) {
    nv.driver_present = true;
    std::string line = text.substr(0, text.find('\n'));
    for (absl::string_view token : absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty())) {
      if (!token.empty() && absl::ascii_isdigit(static_cast<unsigned char>(token[0])) &&
          token.find('.') != absl::string_view::npos) {
        nv.driver_version = std::string(token);
        break;
      }
    }
  }
  bool wsl = PathExists(Rooted(options, "/dev/dxg"));
  if (!nv.driver_present && options.cuda_library.empty() && options.nvml_library.empty() && !wsl) {
    nv.notes.push_back("no NVIDIA driver (" + std::string("/proc/driver/nvidia/version") + " absent)");
    return;
  }
  if (QueryCudaDriver(options, nv)) return;
  nv.devices.clear();
  if (QueryNvml(options, nv)) {
    nv.notes.push_back("using NVML instead of the CUDA driver API (CUDA_VISIBLE_DEVICES applied by inferenceutils)");
  }
}

}  // namespace detect
}  // namespace iu
