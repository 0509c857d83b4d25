// Symlinks in an archive being unpacked (a runtime bundle, an app): whether each one stays
// inside the directory it is unpacked into, judged against the links unpacked before it.
//
// Looking at a link's target text alone is not enough: with `a -> .` unpacked, `a/a/../..` is
// lexically inside but climbs out, and a link created later at a path an earlier target went
// through changes what that target means. So:
//   - a target is walked component by component from the link's directory; ".." may never go
//     above the top, and never follow a component that is (or is below) a symlink already
//     unpacked: what ".." means there is the link's target's parent, not the lexical one;
//   - a new symlink (or anything written) may not sit where an earlier target passed through.
// Not a public interface.
#pragma once

#include <set>
#include <string>
#include <utility>

namespace iu {

class LinkGuard {
 public:
  // `inside`: what the messages call the directory ("the runtime", "the app").
  explicit LinkGuard(std::string inside = "the runtime") : inside_(std::move(inside)) {}
  // Why the symlink `member` -> `target` is refused, "" when it stays inside. Records it.
  std::string AddSymlink(const std::string& member, const std::string& target);
  // A symlink whose absolute target the caller vouches for (a bundle's link to this launcher or
  // its base interpreter): recorded, so nothing goes through it; why it is refused, or "".
  std::string AddTrustedSymlink(const std::string& member);
  // Why a file or folder may not be written at `member`, "" when it may: not below a symlink,
  // and, for a symlink, not at a path an earlier target passed through.
  std::string CheckPath(const std::string& member, bool is_symlink) const;
  bool IsSymlink(const std::string& member) const { return links_.count(member) > 0; }

 private:
  std::string inside_;
  std::set<std::string> links_;      // members that are symlinks
  std::set<std::string> traversed_;  // paths a target went through as a directory
};

// A safe relative member path: no absolute, no "..", no empty or "." components, no NUL;
// "" when it is one, else why not.
std::string UnsafeMemberPath(const std::string& path);

}  // namespace iu
