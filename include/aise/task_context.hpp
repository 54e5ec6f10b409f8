#pragma once
/// @file
/// What a task handler gets: the task, its dependencies' results, a
/// cancellation token and the ways to finish, fan out and fan in.
///
/// A `task_context` is a cheap shared handle (copies refer to one attempt).
/// Completion (`succeed`/`fail`) is idempotent per attempt: the first call
/// wins, later ones return `conflict`; a completion after the attempt was
/// cancelled or timed out returns `cancelled` and changes nothing. When the
/// store refuses the change, it returns `unavailable`, nothing changed, and
/// the handler may complete again. (With the orchestrator on its own thread,
/// `orchestrator_threading::own_thread`, the default for SQL stores, a
/// completion returns once accepted and is recorded right after; a refusing
/// store is retried by the orchestrator.) When the
/// last copy is destroyed without a completion, the attempt fails with
/// `handler_failed` ("handler dropped the task"). Every member is
/// thread-safe; continuations (`when_all`) run on the owning agent's strand.

#include <aise/cancellation.hpp>
#include <aise/core_export.hpp>
#include <aise/error.hpp>
#include <aise/task.hpp>

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace aise {

class agent;

namespace detail {
struct task_run;
}

/// Handle to one running attempt of a task.
class AISE_CORE_EXPORT task_context {
 public:
  /// Wraps a run (libaise creates contexts; users receive them).
  explicit task_context(std::shared_ptr<detail::task_run> run);

  /// The task as it was when this attempt started (state running).
  [[nodiscard]] const aise::task& task() const noexcept;
  /// Shorthand for `task().payload`.
  [[nodiscard]] const nlohmann::json& payload() const noexcept;
  /// Results of the dependencies, by task id (all of them succeeded).
  [[nodiscard]] const std::map<std::string, nlohmann::json>& dependency_results() const noexcept;
  /// Set when the task is cancelled or its attempt timed out; handlers
  /// doing long work should check it or register `on_cancel`.
  [[nodiscard]] const cancellation_token& cancellation() const noexcept;
  /// Shorthand for `cancellation().cancelled()`.
  [[nodiscard]] bool cancelled() const noexcept;
  /// The agent running the attempt. Use its members only on its strand.
  [[nodiscard]] agent& self() const noexcept;

  /// Completes the attempt successfully with `result`.
  result<void> succeed(nlohmann::json result = nullptr);
  /// Fails the attempt. A `retryable` failure is retried while attempts
  /// remain (with backoff); otherwise the task fails now.
  result<void> fail(aise::error e, bool retryable = true);
  /// Pauses the task for a human instead of failing it (a budget reached, a
  /// loop detected, a risky step): the attempt ends, the task goes to
  /// `awaiting_approval` with `reason` as its error and in the event's data.
  /// `orchestrator::approve` runs it again (a new attempt, started even when
  /// the task has used its max_attempts; the escalated attempt still counts
  /// toward max_attempts for retries after later failures), `reject`
  /// cancels it.
  /// Errors as for `fail`. A task past its deadline fails instead.
  result<void> escalate(aise::error reason);
  /// True once completed (by this or another copy).
  [[nodiscard]] bool done() const noexcept;

  /// Submits a subtask (fan-out): its parent is this task; a spec whose
  /// project is empty or "default" gets this task's project. Validated like
  /// `orchestrator::submit`. Subtasks are cancelled if this task fails.
  /// With the orchestrator on its own thread (a SQL store) and no id in
  /// `spec`, the fields are checked here, an id is generated and returned,
  /// and the subtask reaches the store from the orchestrator's thread, so
  /// this call never waits for the database; a subtask refused there (an
  /// unknown dependency, a cycle) ends as a failed record with the reason,
  /// which `when_all` and `orchestrator::get` report. While the store is
  /// away, up to 65,536 such subtasks wait (then `unavailable`). Subtasks
  /// may depend on subtasks spawned before them; a task given to
  /// `orchestrator::submit` that depends on a subtask still on its way is
  /// refused (`not_found`), so spawn such dependents here. A spec with
  /// an id of its own is submitted before this returns (the id may be
  /// taken: `already_exists`).
  result<std::string> spawn(task_spec spec);
  /// Fan-in: runs `then` on this agent's strand once every task in `ids`
  /// is terminal, with their final records in the same order. If this
  /// attempt ends first (cancelled, timed out), `then` does not run. Use it
  /// from `on_task_async` handlers: a synchronous handler completes the
  /// task when it returns.
  void when_all(std::vector<std::string> ids,
                std::function<void(task_context&, std::vector<aise::task>)> then);

 private:
  std::shared_ptr<detail::task_run> run_;
};

}  // namespace aise
