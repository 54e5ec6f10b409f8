#pragma once
/// @file
/// Tasks: what users submit (`task_spec`), what the store keeps (`task`,
/// `task_attempt`) and the state machine that every change goes through.
///
/// State machine (every other change is rejected with `errc::illegal_transition`):
///
///     pending ──► queued ──► running ──► succeeded
///        │  ╲        ▲  ╲       │
///        │   ╲       │   ╲      ├──► retrying ──► queued
///        │    ╲      │    ╲     │
///        │     ╲► awaiting_approval ◄┘ (policy pause, e.g. an LLM budget)
///        └──► failed, cancelled   (from every non-terminal state)
///
/// Exactly: pending → {queued, awaiting_approval, cancelled, failed};
/// awaiting_approval → {queued, cancelled, failed}; queued → {running,
/// awaiting_approval, cancelled, failed}; running → {succeeded, failed,
/// cancelled, retrying, awaiting_approval}; retrying → {queued, cancelled,
/// failed}. Failing a task that never ran happens for a deadline or the
/// `fail` dependency policy.
///
/// - pending: waiting for dependencies.
/// - awaiting_approval: waiting for an external approve (→ queued) or
///   reject (→ cancelled, error `rejected`).
/// - queued: ready, waiting for a capable agent with a free slot.
/// - running: an agent works on attempt `attempt`.
/// - retrying: the attempt failed and another is due after a backoff.
/// - succeeded / failed / cancelled: terminal; the task never changes again.

#include <aise/clock.hpp>
#include <aise/core_export.hpp>
#include <aise/error.hpp>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aise {

/// Where a task is in its life. Numeric values are stable (stored, C API).
enum class task_state : int {
  pending = 0,
  queued = 1,
  running = 2,
  succeeded = 3,
  failed = 4,
  cancelled = 5,
  retrying = 6,
  awaiting_approval = 7,
};

/// Stable lower-case name, e.g. "awaiting_approval".
AISE_CORE_EXPORT std::string_view to_string(task_state s) noexcept;
/// Parses a name written by `to_string`; `invalid_argument` otherwise.
AISE_CORE_EXPORT result<task_state> parse_task_state(std::string_view name);
/// True for succeeded, failed and cancelled.
AISE_CORE_EXPORT bool is_terminal(task_state s) noexcept;
/// True when the state machine allows `from` → `to`.
AISE_CORE_EXPORT bool can_transition(task_state from, task_state to) noexcept;
/// `ok()` when allowed, else `illegal_transition` naming both states.
AISE_CORE_EXPORT result<void> check_transition(task_state from, task_state to);

/// What happens to a task whose dependency failed or was cancelled.
enum class dependency_failure_policy : int {
  cancel = 0,  ///< The dependent is cancelled (the default): it never ran, so it did not fail.
  fail = 1,    ///< The dependent fails with `handler_failed` naming the dependency.
};

/// What a user submits. Only `kind` is required.
struct AISE_CORE_EXPORT task_spec {
  std::string id;                   ///< Optional; generated ("t-…") when empty. Unique.
  std::string project = "default";  ///< Owning project; events are numbered per project.
  std::string kind;                 ///< What to do; agents register handlers per kind. Required.
  std::string capability;           ///< Capability an agent needs; empty means `kind`.
  std::string description;          ///< Free text for humans (and learned routing).
  int priority = 0;                 ///< Higher runs first among ready tasks of one capability.
  nlohmann::json payload;           ///< Input for the handler.
  std::vector<std::string> depends_on;  ///< Ids that must succeed first (a DAG).
  int max_attempts = 1;                 ///< Total attempts allowed (1 = no retry). Must be ≥ 1.
  std::optional<duration>
      timeout;  ///< Per attempt; a running attempt past it fails with `timeout`.
  std::optional<time_point>
      deadline;  ///< Absolute; not finished by then → failed (`timeout`), no retry.
  bool requires_approval = false;  ///< Waits in awaiting_approval before it may run.
  dependency_failure_policy on_dependency_failure = dependency_failure_policy::cancel;
  std::string parent;  ///< Id of the task that spawned this one (fan-out), or empty.
};

/// The stored record of a task: the spec plus what happened to it.
struct AISE_CORE_EXPORT task : task_spec {
  task_state state = task_state::pending;
  int attempt = 0;                       ///< Attempts started so far (the running one included).
  std::string agent;                     ///< Agent of the current or last attempt.
  std::optional<nlohmann::json> result;  ///< Set when succeeded.
  std::optional<aise::error> error;      ///< Set when failed or cancelled (the reason).
  time_point created_at{};
  time_point updated_at{};
  time_point not_before{};    ///< While retrying: the earliest time of the next attempt.
  std::uint64_t version = 0;  ///< Bumped by the store on every change (compare-and-set).
};

/// One attempt of a task: the history the store keeps.
struct AISE_CORE_EXPORT task_attempt {
  std::string task_id;
  int number = 0;  ///< 1-based.
  std::string agent;
  time_point started_at{};
  std::optional<time_point> finished_at;     ///< Empty while running.
  task_state outcome = task_state::running;  ///< running, succeeded, failed or cancelled.
  std::optional<aise::error> error;
};

/// JSON forms (stable field names; used by the server and the event log).
AISE_CORE_EXPORT nlohmann::json to_json(const task& t);
AISE_CORE_EXPORT nlohmann::json to_json(const task_attempt& a);
AISE_CORE_EXPORT nlohmann::json to_json(const aise::error& e);
/// Parses a task spec as a REST client would send it: `kind` required;
/// `timeout_ms`, `deadline` (RFC 3339), `depends_on`, `priority`,
/// `max_attempts`, `requires_approval`, `on_dependency_failure` ("cancel"|"fail")
/// optional. Unknown fields are ignored; wrong types are `invalid_argument`.
AISE_CORE_EXPORT result<task_spec> task_spec_from_json(const nlohmann::json& j);
/// Parses `to_json(task)` back (used by stores that keep JSON).
AISE_CORE_EXPORT result<task> task_from_json(const nlohmann::json& j);
/// Parses `to_json(error)` back into `out` (`invalid_argument` when malformed).
AISE_CORE_EXPORT result<void> error_from_json(const nlohmann::json& j, aise::error& out);
/// Parses an error code name written by `to_string(errc)`; unknown names give `internal`.
AISE_CORE_EXPORT errc parse_errc(std::string_view name) noexcept;

}  // namespace aise
