#include "link_guard.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace iu {

std::string UnsafeMemberPath(const std::string& path) {
  if (path.empty()) return "empty path";
  if (path[0] == '/') return "absolute path";
  if (path.find('\0') != std::string::npos) return "NUL in path";
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part == "..") return "path has a '..' component";
    if (part.empty() || part == ".") return "path has an empty or '.' component";
  }
  return "";
}

std::string LinkGuard::CheckPath(const std::string& member, bool is_symlink) const {
  for (size_t slash = member.find('/'); slash != std::string::npos; slash = member.find('/', slash + 1)) {
    if (links_.count(member.substr(0, slash))) return "path goes through a symlink";
  }
  if (is_symlink && traversed_.count(member)) return "symlink where an earlier symlink's target passes through";
  return "";
}

std::string LinkGuard::AddTrustedSymlink(const std::string& member) {
  if (std::string why = CheckPath(member, true); !why.empty()) return why;
  links_.insert(member);
  return "";
}

std::string LinkGuard::AddSymlink(const std::string& member, const std::string& target) {
  auto refuse = [&](absl::string_view why) { return absl::StrCat("symlink to '", target, "' ", why); };
  if (target.empty()) return refuse("has an empty target");
  if (target[0] == '/') return refuse(absl::StrCat("points outside ", inside_));
  if (target.find('\0') != std::string::npos) return refuse("has a NUL in its target");
  std::vector<std::string> parts = absl::StrSplit(member, '/');
  parts.pop_back();
  bool through_link = false;  // a component so far is a symlink (or below one)
  std::vector<std::string> seen;
  std::vector<absl::string_view> steps = absl::StrSplit(target, '/');
  for (size_t i = 0; i < steps.size(); ++i) {
    absl::string_view p = steps[i];
    if (p.empty() || p == ".") continue;
    if (p == "..") {
      if (through_link) return refuse(absl::StrCat("climbs ('..') out of a symlink, which may lead outside ", inside_));
      if (parts.empty()) return refuse(absl::StrCat("points outside ", inside_));
      parts.pop_back();
    } else {
      parts.emplace_back(p);
    }
    std::string here = absl::StrJoin(parts, "/");
    if (links_.count(here)) through_link = true;
    // Every step but the last is gone through as a directory.
    bool last = true;
    for (size_t j = i + 1; j < steps.size(); ++j) {
      if (!steps[j].empty() && steps[j] != ".") last = false;
    }
    if (!last && !here.empty()) seen.push_back(here);
  }
  if (std::string why = CheckPath(member, true); !why.empty()) return why;
  links_.insert(member);
  traversed_.insert(seen.begin(), seen.end());
  return "";
}

}  // namespace iu
