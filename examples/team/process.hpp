#pragma once
/// @file
/// Runs a program as a child process and captures what it prints.
///
/// The tester agent compiles and runs code with it. The program is started
/// directly (posix_spawn, argument vector, no shell), so nothing in a file
/// name or a request can turn into a shell command. Every run has a deadline
/// and an output bound. Blocking: call it from the runtime's blocking pool
/// (`agent::run_blocking`), never on an executor thread.

#include <aise/error.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace team {

/// What to run and the limits to run it under.
struct process_spec {
  /// argv[0] is the program: an absolute path (it is not looked up on PATH).
  std::vector<std::string> argv;
  /// The child is killed when it runs longer than this.
  std::chrono::milliseconds timeout = std::chrono::seconds(30);
  /// Bytes kept of stdout and of stderr each; the rest is read and dropped.
  std::size_t max_output = 64 * 1024;
  /// Polled every few milliseconds; the child is killed once it returns true
  /// (e.g. the task was cancelled). May be empty.
  std::function<bool()> should_stop;
};

/// How a run ended.
struct process_result {
  int exit_code = -1;      ///< The exit status; -1 when killed by a signal.
  int term_signal = 0;     ///< The signal that ended it, or 0.
  bool timed_out = false;  ///< Killed because `timeout` passed.
  bool stopped = false;    ///< Killed because `should_stop` returned true.
  std::string out;         ///< Captured stdout (at most `max_output` bytes).
  std::string err;         ///< Captured stderr (at most `max_output` bytes).
  std::chrono::milliseconds elapsed{0};

  /// True when the program ran to completion with exit status 0.
  [[nodiscard]] bool succeeded() const noexcept { return exit_code == 0 && !timed_out && !stopped; }
  /// "exit 1", "killed by signal 11", "timed out after 5000 ms", ...
  [[nodiscard]] std::string describe_end() const;
};

/// Runs `spec` to completion. stdin is /dev/null. The child gets its own
/// process group, so a kill on timeout also reaches the programs it started
/// (a compiler driver's cc1plus, as). Returns `invalid_argument` for an empty
/// argv and `unavailable` when the process cannot be started; a program that
/// runs and fails is a successful call with a non-zero `exit_code`.
aise::result<process_result> run_process(const process_spec& spec);

/// The absolute path of the first of `names` found in a directory of $PATH
/// that is an executable file, or nothing.
std::optional<std::string> find_program(const std::vector<std::string>& names);

/// `text` cut to at most `max_lines` lines and `max_chars` characters, with a
/// note saying how much was cut. For error messages built from tool output.
std::string clip(const std::string& text, std::size_t max_lines = 20, std::size_t max_chars = 2000);

}  // namespace team
