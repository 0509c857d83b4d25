#include "inferenceutils/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <ctime>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace iu {
namespace {

// Ctrl-C while a child runs: the handler only notes it; RunProcess stops the child's whole
// process group and reports the interruption (the caller cleans up and exits 130).
volatile sig_atomic_t g_interrupted = 0;
void NoteInterrupt(int) { g_interrupted = 1; }

}  // namespace

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
    // A process group of its own: Ctrl-C reaches the launcher only, which stops the whole
    // group (pip and the compilers it started), instead of each of them dying on its own.
    setpgid(0, 0);
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
  setpgid(pid, pid);  // also here: no window in which a Ctrl-C reaches the child's old group

  struct sigaction on_interrupt = {}, previous = {};
  on_interrupt.sa_handler = NoteInterrupt;
  sigemptyset(&on_interrupt.sa_mask);
  on_interrupt.sa_flags = 0;  // no SA_RESTART: the read below returns EINTR
  g_interrupted = 0;
  sigaction(SIGINT, &on_interrupt, &previous);
  struct RestoreSigint {
    struct sigaction* previous;
    ~RestoreSigint() { sigaction(SIGINT, previous, nullptr); }
  } restore{&previous};

  ProcessResult result;
  std::string pending;
  char buf[8192];
  int64_t kill_at = -1;  // after a Ctrl-C: when the group gets SIGKILL if it has not ended
  auto now_ms = [] {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
  };
  while (true) {
    if (g_interrupted && !result.interrupted) {
      result.interrupted = true;
      kill(-pid, SIGINT);  // pip cleans up its temporary directories on KeyboardInterrupt
      kill_at = now_ms() + 3000;
    }
    int wait_ms = 200;  // the flag is looked at this often, whatever the child prints
    if (kill_at >= 0) {
      int64_t left = kill_at - now_ms();
      if (left <= 0) {
        kill(-pid, SIGKILL);
        kill_at = -1;
      } else {
        wait_ms = static_cast<int>(std::min<int64_t>(wait_ms, left));
      }
    }
    struct pollfd ready = {pipe_fds[0], POLLIN, 0};
    int polled = poll(&ready, 1, wait_ms);
    if (polled < 0 && errno == EINTR) continue;
    if (polled == 0) continue;
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
  if (result.interrupted) kill(-pid, SIGKILL);  // whatever of the group is left
  if (g_interrupted) result.interrupted = true;  // a Ctrl-C as the child ended
  return result;
}

}  // namespace iu
