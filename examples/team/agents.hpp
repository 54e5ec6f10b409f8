#pragma once
/// @file
/// The software team: four agent kinds that turn a feature request into
/// merged code. Each handles one or more task kinds; the orchestrator routes
/// a task to a live agent that has the kind as a capability.
///
/// Data flows between tasks only through results: a step's payload names
/// its inputs as `"inputs": {"<role>": "<task id>"}`, and the handler reads
/// those tasks' results from `task_context::dependency_results()`.
///
///     plan ──spawns──► code ──┬──► test ──┬──► review
///       │                     └──► lint ──┘
///       └───────────────────────────────────────────► merge (needs approval)

#include <aise/agent.hpp>
#include <aise/task_context.hpp>

#include <string>

namespace team {

/// Plans the work. Task kind "plan", payload `{"request", "workdir"}`:
/// spawns the steps code → (test ∥ lint) → review as subtasks (fan-out),
/// waits for all of them (`when_all`, fan-in) and succeeds with
/// `{"summary", "n", "source", "fingerprint", "verdict"}` — or fails with the
/// first failed step's error.
class planner final : public aise::agent {
 public:
  planner();

 private:
  void plan(aise::task_context ctx);
};

/// Writes code. Task kind "code", payload `{"request", "n", "workdir",
/// "file"}`: writes a C++ program printing fib(n) and succeeds with
/// `{"summary", "path", "bytes", "fingerprint"}`. Its first attempt of every
/// task fails on purpose, like a flaky LLM, so the orchestrator retries it.
class coder final : public aise::agent {
 public:
  coder();

 private:
  aise::result<nlohmann::json> write_code(aise::task_context& ctx);
};

/// Builds and runs code with a real compiler, on the runtime's blocking
/// pool so the executor never waits for a compiler.
/// - Task kind "test", input "code": compiles with -std=c++17 -O1, runs the
///   program; succeeds with `{"summary", "stdout", "exit_code", ...}`.
/// - Task kind "lint", input "code": compiles with -Wall -Wextra -Wpedantic
///   -Werror and no output file.
/// A compile error or a failing program fails the task (not retried).
class tester final : public aise::agent {
 public:
  /// `compiler` is the absolute path of a C++ compiler driver (g++, clang++).
  explicit tester(std::string compiler);

 private:
  void test(aise::task_context ctx);
  void lint(aise::task_context ctx);

  std::string compiler_;
};

/// Reviews and merges.
/// - Task kind "review", payload `{"n"}`, inputs "test" and "lint": approves
///   when the program printed exactly "fib(n) = <value>"; fails (`rejected`)
///   otherwise. Succeeds with `{"summary", "verdict"}`.
/// - Task kind "merge", input "plan": checks that the reviewed file is
///   unchanged and copies it into `<workdir>/main/` (the stand-in for the
///   main branch). Succeeds with `{"summary", "merged"}`.
class reviewer final : public aise::agent {
 public:
  reviewer();

 private:
  aise::result<nlohmann::json> review(aise::task_context& ctx);
  aise::result<nlohmann::json> merge(aise::task_context& ctx);
};

}  // namespace team
