#include "inferenceutils/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace iu {

std::string TailLines(absl::string_view text, int lines) {
  while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  size_t pos = text.size();
  for (int i = 0; i < lines && pos != absl::string_view::npos && pos > 0; ++i) {
    pos = text.rfind('\n', pos - 1);
  }
  return std::string(pos == absl::string_view::npos || pos == 0 ? text : text.substr(pos + 1));
}

absl::StatusOr<ProcessResult> RunProcess(const ProcessSpec& spec) {
  std::vector<std::string> env_storage;
  for (char** e = environ; *e; ++e) {
    absl::string_view entry(*e);
    absl::string_view name = entry.substr(0, entry.find('='));
    bool drop = spec.set_env.count(std::string(name)) > 0;
    for (const auto& prefix : spec.unset_prefixes) drop = drop || absl::StartsWith(name, prefix);
    if (!drop) env_storage.emplace_back(entry);
  }
  for (const auto& [name, value] : spec.set_env) env_storage.push_back(absl::StrCat(name, "=", value));
  std::vector<char*> envp, argv;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_storage = spec.argv;
  for (auto& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);

  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  // fork+exec rather than posix_spawn: the child asks to be killed when the launcher dies
  // (PR_SET_PDEATHSIG), so a launcher killed mid-build leaves no pip writing on behind it.
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(err)));
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the launcher is already gone
    signal(SIGPIPE, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) dup2(null_fd, 0);
    dup2(pipe_fds[1], 1);
    dup2(pipe_fds[1], 2);
    if (!spec.cwd.empty() && chdir(spec.cwd.c_str()) != 0) _exit(127);
    environ = envp.data();
    if (absl::StrContains(spec.argv[0], "/")) {
      execv(argv[0], argv.data());
    } else {
      execvp(argv[0], argv.data());
    }
    std::string message = absl::StrCat("cannot run ", spec.argv[0], ": ", std::strerror(errno), "\n");
    ssize_t ignored = write(2, message.data(), message.size());
    (void)ignored;
    _exit(127);
  }
  close(pipe_fds[1]);

  ProcessResult result;
  std::string pending;
  char buf[8192];
  while (true) {
    ssize_t n = read(pipe_fds[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    absl::string_view chunk(buf, static_cast<size_t>(n));
    result.output.append(chunk.data(), chunk.size());
    if (spec.log_fd >= 0) {
      ssize_t ignored = write(spec.log_fd, buf, static_cast<size_t>(n));
      (void)ignored;
    }
    if (spec.on_line) {
      pending.append(chunk.data(), chunk.size());
      size_t start = 0, end;
      while ((end = pending.find_first_of("\r\n", start)) != std::string::npos) {
        if (end > start) spec.on_line(absl::string_view(pending).substr(start, end - start));
        start = end + 1;
      }
      pending.erase(0, start);
    }
  }
  close(pipe_fds[0]);
  if (spec.on_line && !pending.empty()) spec.on_line(pending);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

}  // namespace iu
