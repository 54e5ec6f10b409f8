#pragma once
/// @file
/// Events: every agent and task state change, numbered per project.
///
/// Types and their `data`:
/// - "task.<state>" for each task state change (the new state is in the type):
///   task.pending, task.queued, task.awaiting_approval: null (task.queued
///   after an approval: {"approved_by"});
///   task.running: {"attempt", "agent"};
///   task.succeeded: null (the attempt and agent are in its task.running);
///   task.retrying: {"attempt", "agent", "error", "retry_in_ms"};
///   task.failed after an attempt: {"attempt", "agent", "error"};
///   a task ended from outside its handler (cancel, reject, deadline, a
///   failed dependency or parent): {"from", "error"}.
///   `error` is {"code", "message"}.
/// - "agent.started" {"kind", "restarts", "restored"}, "agent.stopped" null,
///   "agent.failed" {"error"}, "agent.restarting" {"attempt", "backoff_ms"}
///   (or {"reason", "backoff_ms"} on request), "agent.gave_up"
///   {"failures_in_window", "max_restarts"}.
/// The store assigns `sequence` (1, 2, 3, … per project, no gaps, no
/// duplicates) when it writes the event; subscribers see events only after
/// they are stored, in sequence order per project.

#include <aise/clock.hpp>
#include <aise/core_export.hpp>
#include <aise/error.hpp>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace aise {

/// An event before the store has numbered it.
struct AISE_CORE_EXPORT event_draft {
  std::string project;  ///< Required.
  std::string type;     ///< e.g. "task.running". Required.
  std::string subject;  ///< Task or agent id.
  time_point at{};      ///< When it happened.
  nlohmann::json data;  ///< Type-specific details (small).
};

/// A stored event.
struct AISE_CORE_EXPORT event : event_draft {
  std::uint64_t sequence = 0;  ///< Per project, starting at 1.
};

/// `{"sequence","project","type","subject","at","data"}`.
AISE_CORE_EXPORT nlohmann::json to_json(const event& e);
/// Parses what `to_json(event)` writes.
AISE_CORE_EXPORT result<event> event_from_json(const nlohmann::json& j);

}  // namespace aise
