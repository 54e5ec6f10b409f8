#pragma once
/// @file
/// The demo team inside aise-server (`--demo`): the team example's agents
/// (examples/team: planner, coder, two testers, reviewer) working a sample
/// project, so a fresh server shows something happening. Wiring only: the
/// agents are the example's, the scheduling is the orchestrator's.
///
/// Resumable: the project and its tasks have fixed ids, so a restarted
/// server (same database) finds them, `recover()` brings back what was
/// unfinished, and nothing is submitted twice.
#include <aise/error.hpp>
#include <aise/orchestrator.hpp>

#include <filesystem>
#include <string>

namespace aise::server::demo {

/// The sample project's id and its two top-level tasks.
inline constexpr const char* project_id = "demo";
inline constexpr const char* plan_id = "demo-plan";
inline constexpr const char* merge_id = "demo-merge";

/// Registers the team's agent kinds (call before `orchestrator::recover`, so
/// recovered agents can be re-created). `unavailable` when no C++ compiler
/// (c++, g++, clang++) is on PATH: the testers need one.
result<void> register_kinds(orchestrator& orch);

/// What `start` did.
struct started {
  bool submitted = false;  ///< false: an earlier run had submitted the tasks already.
  std::string merge_state;
};

/// Spawns the seats that are missing, creates the sample project and
/// submits its feature request (plan, then merge awaiting approval) unless
/// an earlier run did. `work_dir` receives the team's files.
result<started> start(orchestrator& orch, const std::filesystem::path& work_dir);

}  // namespace aise::server::demo
