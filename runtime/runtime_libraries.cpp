// The libraries a runtime loads before its preload: ELF names read from the files, the spec's
// list resolved, the runtime's NVIDIA libraries picked by what needs them, dependencies first.
#include "inferenceutils/runtime_libraries.h"
#include "inferenceutils/json_text.h"

#include <dirent.h>
#include <elf.h>
#include <fcntl.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "inferenceutils/errors.h"
#include "nlohmann/json.hpp"

namespace iu {
namespace {

bool ReadAt(int fd, uint64_t offset, void* out, size_t size) {
  ssize_t n = pread(fd, out, size, static_cast<off_t>(offset));
  return n >= 0 && static_cast<size_t>(n) == size;
}

std::string Basename(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::vector<std::string> Glob(const std::string& pattern) {
  std::vector<std::string> out;
  glob_t matches;
  if (glob(pattern.c_str(), 0, nullptr, &matches) == 0) {
    for (size_t i = 0; i < matches.gl_pathc; ++i) out.push_back(matches.gl_pathv[i]);
  }
  globfree(&matches);
  return out;
}

void Walk(const std::string& dir, const std::function<void(const std::string&)>& on_file) {
  DIR* d = opendir(dir.c_str());
  if (!d) return;
  std::vector<std::string> names;
  while (dirent* entry = readdir(d)) {
    if (std::strcmp(entry->d_name, ".") != 0 && std::strcmp(entry->d_name, "..") != 0) names.push_back(entry->d_name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    std::string path = dir + "/" + name;
    struct stat st;
    if (lstat(path.c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      Walk(path, on_file);
    } else if (S_ISREG(st.st_mode)) {
      on_file(path);
    }
  }
}

}  // namespace

absl::StatusOr<ElfDynamic> ReadElfDynamic(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  auto not_elf = [&](const char* why) { return absl::InvalidArgumentError(absl::StrCat(path, ": ", why)); };

  Elf64_Ehdr header;
  if (!ReadAt(fd, 0, &header, sizeof(header)) || std::memcmp(header.e_ident, ELFMAG, SELFMAG) != 0) {
    return not_elf("not an ELF file");
  }
  const unsigned char native_order = (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__) ? ELFDATA2LSB : ELFDATA2MSB;
  if (header.e_ident[EI_CLASS] != ELFCLASS64 || header.e_ident[EI_DATA] != native_order) {
    return not_elf("not a 64-bit ELF file of this machine");
  }
  if (header.e_phentsize != sizeof(Elf64_Phdr) || header.e_phnum == 0 || header.e_phnum > 4096) {
    return not_elf("no program headers");
  }
  std::vector<Elf64_Phdr> segments(header.e_phnum);
  if (!ReadAt(fd, header.e_phoff, segments.data(), segments.size() * sizeof(Elf64_Phdr))) {
    return not_elf("truncated program headers");
  }
  const Elf64_Phdr* dynamic = nullptr;
  for (const auto& segment : segments) {
    if (segment.p_type == PT_DYNAMIC) dynamic = &segment;
  }
  if (!dynamic) return not_elf("no dynamic section");
  size_t count = dynamic->p_filesz / sizeof(Elf64_Dyn);
  if (count == 0 || count > (1u << 16)) return not_elf("bad dynamic section");
  std::vector<Elf64_Dyn> entries(count);
  if (!ReadAt(fd, dynamic->p_offset, entries.data(), count * sizeof(Elf64_Dyn))) return not_elf("truncated dynamic section");

  uint64_t strtab = 0, strsz = 0;
  std::vector<uint64_t> needed;
  int64_t soname = -1, runpath = -1, rpath = -1;
  for (const auto& entry : entries) {
    if (entry.d_tag == DT_NULL) break;
    if (entry.d_tag == DT_STRTAB) strtab = entry.d_un.d_ptr;
    if (entry.d_tag == DT_STRSZ) strsz = entry.d_un.d_val;
    if (entry.d_tag == DT_NEEDED) needed.push_back(entry.d_un.d_val);
    if (entry.d_tag == DT_SONAME) soname = static_cast<int64_t>(entry.d_un.d_val);
    if (entry.d_tag == DT_RUNPATH) runpath = static_cast<int64_t>(entry.d_un.d_val);
    if (entry.d_tag == DT_RPATH) rpath = static_cast<int64_t>(entry.d_un.d_val);
  }
  if (runpath < 0) runpath = rpath;  // the loader ignores DT_RPATH when there is a DT_RUNPATH
  ElfDynamic out;
  if (needed.empty() && soname < 0 && runpath < 0) return out;
  if (strsz == 0 || strsz > (64u << 20)) return not_elf("no string table");
  // The string table's address is a virtual address: find the loaded segment holding it.
  uint64_t strtab_offset = 0;
  bool found = false;
  for (const auto& segment : segments) {
    if (segment.p_type == PT_LOAD && strtab >= segment.p_vaddr && strtab < segment.p_vaddr + segment.p_filesz) {
      strtab_offset = strtab - segment.p_vaddr + segment.p_offset;
      found = true;
      break;
    }
  }
  if (!found) return not_elf("string table outside the file");
  std::string strings(strsz, '\0');
  if (!ReadAt(fd, strtab_offset, strings.data(), strsz)) return not_elf("truncated string table");
  auto string_at = [&](uint64_t offset) -> std::string {
    if (offset >= strings.size()) return {};
    return std::string(strings.c_str() + offset);
  };
  if (soname >= 0) out.soname = string_at(static_cast<uint64_t>(soname));
  for (uint64_t offset : needed) out.needed.push_back(string_at(offset));
  if (runpath >= 0) {
    for (absl::string_view dir : absl::StrSplit(string_at(static_cast<uint64_t>(runpath)), ':', absl::SkipEmpty())) {
      out.runpath.emplace_back(dir);
    }
  }
  return out;
}

std::vector<LibraryFile> DependencyOrder(const std::vector<LibraryFile>& libraries) {
  std::vector<int> state(libraries.size(), 0);  // 0 new, 1 visiting, 2 placed
  std::vector<LibraryFile> out;
  std::function<void(size_t)> visit = [&](size_t i) {
    if (state[i] != 0) return;
    state[i] = 1;
    for (const auto& name : libraries[i].needed) {
      for (size_t j = 0; j < libraries.size(); ++j) {
        if (j == i) continue;
        const LibraryFile& other = libraries[j];
        if ((!other.soname.empty() && other.soname == name) || Basename(other.path) == name) visit(j);
      }
    }
    state[i] = 2;
    out.push_back(libraries[i]);
  };
  for (size_t i = 0; i < libraries.size(); ++i) visit(i);
  return out;
}

std::vector<LibraryFile> SharedObjectsBelow(const std::string& directory) {
  std::vector<LibraryFile> out;
  Walk(directory, [&](const std::string& path) {
    if (!absl::StrContains(Basename(path), ".so")) return;
    absl::StatusOr<ElfDynamic> elf = ReadElfDynamic(path);
    if (!elf.ok()) return;
    out.push_back({path, elf->soname, elf->needed});
  });
  return out;
}

std::string RuntimeSitePackages(const std::string& prefix) {
  std::vector<std::string> found = Glob(prefix + "/lib/python3*/site-packages");
  return found.empty() ? std::string() : found.back();
}

absl::StatusOr<std::vector<std::string>> RuntimeLibraries(const std::string& prefix,
                                                          const std::vector<std::string>& spec_libraries) {
  const std::string site = RuntimeSitePackages(prefix);
  std::vector<LibraryFile> all = site.empty() ? std::vector<LibraryFile>() : SharedObjectsBelow(site);

  std::vector<LibraryFile> chosen;
  std::set<std::string> seen;
  auto add = [&](LibraryFile file) {
    if (seen.insert(file.path).second) chosen.push_back(std::move(file));
  };
  auto describe = [](const std::string& path) {
    LibraryFile file{path, "", {}};
    if (absl::StatusOr<ElfDynamic> elf = ReadElfDynamic(path); elf.ok()) {
      file.soname = elf->soname;
      file.needed = elf->needed;
    }
    return file;
  };

  // The spec's own libraries first, in its order.
  for (const auto& name : spec_libraries) {
    if (name.find('/') == std::string::npos) {
      auto it = std::find_if(all.begin(), all.end(), [&](const LibraryFile& f) {
        return Basename(f.path) == name || f.soname == name;
      });
      if (it != all.end()) {
        add(*it);
      } else {
        add({name, name, {}});  // the dynamic loader's search finds it (or the start says it cannot)
      }
      continue;
    }
    std::string pattern = name[0] == '/' ? name : absl::StrCat(prefix, "/", name);
    std::vector<std::string> matches = Glob(pattern);
    if (matches.empty()) {
      return WithExit(absl::NotFoundError(absl::StrCat(
                          "the spec's library '", name, "' is not there (looked for ", pattern,
                          "); fix the path in the spec's `libraries` (absolute, or relative to the runtime)")),
                      kExitConfig);
    }
    for (const auto& match : matches) add(describe(match));
  }

  // The runtime's NVIDIA libraries that something else in it needs, and what those need.
  const std::string nvidia = site + "/nvidia/";
  std::vector<LibraryFile> candidates;
  std::set<std::string> wanted;
  for (const auto& file : all) {
    bool in_nvidia_lib = absl::StartsWith(file.path, nvidia) &&
                         absl::EndsWith(file.path.substr(0, file.path.rfind('/')), "/lib") &&
                         std::count(file.path.begin() + static_cast<long>(nvidia.size()), file.path.end(), '/') == 2;
    if (in_nvidia_lib) {
      candidates.push_back(file);
    } else {
      wanted.insert(file.needed.begin(), file.needed.end());
    }
  }
  for (const auto& file : chosen) wanted.insert(file.needed.begin(), file.needed.end());
  std::vector<bool> picked(candidates.size(), false);
  for (bool grew = true; grew;) {
    grew = false;
    for (size_t i = 0; i < candidates.size(); ++i) {
      const LibraryFile& file = candidates[i];
      if (picked[i] || !(wanted.count(file.soname) || wanted.count(Basename(file.path)))) continue;
      picked[i] = true;
      grew = true;
      wanted.insert(file.needed.begin(), file.needed.end());
    }
  }
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (picked[i]) add(candidates[i]);
  }

  std::vector<std::string> out;
  for (const auto& file : DependencyOrder(chosen)) out.push_back(file.path);
  return out;
}

std::string LoadLibrariesPython(const std::vector<std::string>& libraries) {
  if (libraries.empty()) return {};
  std::vector<std::string> literals;
  for (const auto& library : libraries) literals.push_back(PythonStr(library));  // any bytes, kept
  std::string list = absl::StrCat("[", absl::StrJoin(literals, ","), "]");
  return absl::StrCat("import ctypes as _iu_c, os as _iu_o\nfor _iu_p in ", list,
                      ":\n    _iu_c.CDLL(_iu_p, mode=_iu_o.RTLD_NOW | _iu_o.RTLD_GLOBAL)\n"
                      "del _iu_c, _iu_o, _iu_p\n");
}

}  // namespace iu
