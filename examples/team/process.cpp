#include "process.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string_view>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;  // NOLINT: POSIX declares it nowhere; posix_spawn wants it.

namespace team {

namespace {

using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

// How often a running child is checked for the deadline and `should_stop`.
constexpr milliseconds poll_interval(20);

// Owns a file descriptor.
class unique_fd {
 public:
  unique_fd() = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  ~unique_fd() { reset(); }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;

  [[nodiscard]] int get() const noexcept { return fd_; }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

struct pipe_ends {
  unique_fd read;
  unique_fd write;
};

// Both ends are close-on-exec from the start: two testers spawn compilers
// concurrently, and a pipe end leaking into the other's child would keep our
// read end from ever seeing end-of-file. The child's stdout/stderr are made
// by dup2 in the spawn file actions, which clears the flag on the copy.
aise::result<void> open_pipe(pipe_ends& p) {
  int fds[2] = {-1, -1};
#if defined(__APPLE__)
  // No pipe2 here: a small window in which a concurrent spawn can inherit the ends.
  if (::pipe(fds) != 0) return aise::fail(aise::errc::unavailable, std::strerror(errno));
  ::fcntl(fds[0], F_SETFD, FD_CLOEXEC);
  ::fcntl(fds[1], F_SETFD, FD_CLOEXEC);
#else
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return aise::fail(aise::errc::unavailable, fmt::format("pipe: {}", std::strerror(errno)));
  }
#endif
  p.read.reset(fds[0]);
  p.write.reset(fds[1]);
  return aise::ok();
}

// RAII for the posix_spawn attribute and file-action objects.
struct spawn_setup {
  posix_spawn_file_actions_t actions{};
  posix_spawnattr_t attr{};
  spawn_setup() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
  }
  ~spawn_setup() {
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
  }
  spawn_setup(const spawn_setup&) = delete;
  spawn_setup& operator=(const spawn_setup&) = delete;
};

}  // namespace

std::string process_result::describe_end() const {
  if (timed_out) return fmt::format("timed out after {} ms", elapsed.count());
  if (stopped) return "stopped (the task was cancelled)";
  if (term_signal != 0) return fmt::format("killed by signal {}", term_signal);
  return fmt::format("exit {}", exit_code);
}

aise::result<process_result> run_process(const process_spec& spec) {
  if (spec.argv.empty()) return aise::fail(aise::errc::invalid_argument, "run_process: empty argv");

  pipe_ends out;
  pipe_ends err;
  if (auto r = open_pipe(out); !r) return r.error();
  if (auto r = open_pipe(err); !r) return r.error();

  spawn_setup setup;
  posix_spawn_file_actions_addopen(&setup.actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&setup.actions, out.write.get(), STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&setup.actions, err.write.get(), STDERR_FILENO);
  // Own process group (so one kill reaches the whole tree), no inherited
  // signal mask from our worker thread, default SIGPIPE even if we ignore it.
  sigset_t no_signals;
  sigemptyset(&no_signals);
  sigset_t reset_to_default;
  sigemptyset(&reset_to_default);
  sigaddset(&reset_to_default, SIGPIPE);
  posix_spawnattr_setflags(&setup.attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&setup.attr, 0);
  posix_spawnattr_setsigmask(&setup.attr, &no_signals);
  posix_spawnattr_setsigdefault(&setup.attr, &reset_to_default);

  std::vector<std::string> args = spec.argv;  // posix_spawn wants mutable char*
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  const auto start = steady::now();
  pid_t pid = -1;
  if (const int rc =
          ::posix_spawn(&pid, argv[0], &setup.actions, &setup.attr, argv.data(), environ);
      rc != 0) {
    return aise::fail(aise::errc::unavailable,
                      fmt::format("cannot start {}: {}", spec.argv[0], std::strerror(rc)));
  }
  // Our copies of the write ends must go, or the read ends never see EOF.
  out.write.reset();
  err.write.reset();

  process_result result;
  std::array<pollfd, 2> fds{{{out.read.get(), POLLIN, 0}, {err.read.get(), POLLIN, 0}}};
  std::array<std::string*, 2> sinks{&result.out, &result.err};
  int open_fds = 2;
  bool reaped = false;
  bool killed = false;
  int status = 0;
  const auto deadline = start + spec.timeout;

  // Read both pipes and reap the child in one loop, checking the deadline
  // and the stop request at least every poll_interval.
  while (!reaped || open_fds > 0) {
    if (!killed) {
      if (spec.should_stop && spec.should_stop()) {
        result.stopped = true;
      } else if (steady::now() >= deadline) {
        result.timed_out = true;
      }
      if (result.stopped || result.timed_out) {
        ::kill(-pid, SIGKILL);
        killed = true;
        open_fds = 0;  // stop reading: output after a kill is of no interest
        for (auto& p : fds) p.fd = -1;
      }
    }

    // With no descriptor left open, poll() just sleeps poll_interval.
    const int ready = ::poll(fds.data(), fds.size(), static_cast<int>(poll_interval.count()));
    if (ready > 0) {
      for (std::size_t i = 0; i < fds.size(); ++i) {
        if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        std::array<char, 4096> buffer{};
        const ssize_t n = ::read(fds[i].fd, buffer.data(), buffer.size());
        if (n > 0) {
          std::string& sink = *sinks[i];
          const std::size_t room = spec.max_output - std::min(spec.max_output, sink.size());
          sink.append(buffer.data(), std::min(room, static_cast<std::size_t>(n)));
        } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
          fds[i].fd = -1;  // end of file (or a broken pipe): poll ignores negative fds
          --open_fds;
        }
      }
    }

    if (!reaped) {
      const pid_t w = ::waitpid(pid, &status, WNOHANG);
      if (w == pid) {
        reaped = true;
      } else if (w < 0 && errno != EINTR) {
        return aise::fail(aise::errc::internal,
                          fmt::format("waitpid({}): {}", pid, std::strerror(errno)));
      }
    }
  }

  result.elapsed = std::chrono::duration_cast<milliseconds>(steady::now() - start);
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.term_signal = WTERMSIG(status);
  }
  return result;
}

std::optional<std::string> find_program(const std::vector<std::string>& names) {
  const char* path = std::getenv("PATH");
  const std::string_view dirs = path != nullptr ? path : "/usr/bin:/bin";
  for (const auto& name : names) {
    std::size_t begin = 0;
    while (begin <= dirs.size()) {
      const std::size_t end = std::min(dirs.find(':', begin), dirs.size());
      // POSIX: an empty PATH entry means the current directory.
      const std::string_view dir = end > begin ? dirs.substr(begin, end - begin) : ".";
      const std::string candidate = fmt::format("{}/{}", dir, name);
      struct stat st {};
      if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
          ::access(candidate.c_str(), X_OK) == 0) {
        return candidate;
      }
      begin = end + 1;
    }
  }
  return std::nullopt;
}

std::string clip(const std::string& text, std::size_t max_lines, std::size_t max_chars) {
  std::size_t cut = std::min(text.size(), max_chars);
  std::size_t lines = 0;
  for (std::size_t i = 0; i < cut; ++i) {
    if (text[i] == '\n' && ++lines == max_lines) {
      cut = i + 1;
      break;
    }
  }
  std::string out = text.substr(0, cut);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  if (cut < text.size()) out += fmt::format("\n[... {} more bytes]", text.size() - cut);
  return out;
}

}  // namespace team
