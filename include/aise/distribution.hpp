#pragma once
/// @file
/// The distribution seam: how an orchestrator hands task attempts to worker
/// processes and hears how they ended. The orchestrator talks to a
/// `task_dispatcher`; an `aise::worker` (include/aise/worker.hpp) takes
/// attempts from a `task_source`. `aise::rabbitmq` implements both over
/// RabbitMQ (make_rabbitmq_dispatcher / make_rabbitmq_task_source); the
/// interfaces hold no broker type, so another carrier is another pair of
/// implementations.
///
/// The protocol (docs/distribution.md has the failure cases):
/// 1. The orchestrator writes the task as `running` attempt N (agent
///    "queue:<capability>") and only then hands `task_handoff` over; the
///    dispatcher makes it durable (a persistent, confirmed message).
/// 2. A worker receives it, takes the lease (store::acquire_lease: one
///    conditional write), and only then acknowledges the delivery. The
///    broker's consumer timeout therefore never runs while a task runs.
/// 3. The worker runs the attempt on one of its agents and renews its
///    leases (heartbeats). Done, it records the outcome in the lease
///    (store::finish_lease) and reports it (`task_source::report`).
/// 4. The orchestrator applies a reported outcome like a local completion.
///    It also sweeps the leases of the attempts it handed over: an expired
///    lease is ended (`lost`) and the attempt retried by the task's rules;
///    a `done` lease whose report never arrived is applied from the store.
///    Cancelling or timing out an attempt revokes its lease first, so a
///    late outcome of that attempt never counts.
///
/// The store is the truth; messages are the fast path. Every message may
/// arrive twice or not at all without changing what is stored.

#include <aise/core_export.hpp>
#include <aise/error.hpp>
#include <aise/store.hpp>
#include <aise/task.hpp>

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aise {

/// One attempt handed to a worker: the task (state `running`, `attempt` =
/// the attempt to run) and the results of its dependencies.
struct AISE_CORE_EXPORT task_handoff {
  aise::task task;
  std::map<std::string, nlohmann::json> dependency_results;
};

/// How an attempt run by a worker ended.
struct AISE_CORE_EXPORT task_outcome {
  std::string task_id;
  int attempt = 0;
  std::string worker;  ///< The worker process (its lease owner id).
  std::string agent;   ///< The agent inside it that ran the attempt.
  /// succeeded, failed, or awaiting_approval (the handler escalated).
  task_state state = task_state::succeeded;
  std::optional<nlohmann::json> result;  ///< When succeeded.
  std::optional<aise::error> error;      ///< When failed or escalated.
  bool retryable = true;                 ///< For failures: retry while attempts remain.
};

/// JSON forms (the wire format of aise::rabbitmq; stable field names).
AISE_CORE_EXPORT nlohmann::json to_json(const task_handoff& h);
AISE_CORE_EXPORT result<task_handoff> task_handoff_from_json(const nlohmann::json& j);
AISE_CORE_EXPORT nlohmann::json to_json(const task_outcome& o);
AISE_CORE_EXPORT result<task_outcome> task_outcome_from_json(const nlohmann::json& j);

/// What a dispatcher tells its orchestrator. Both may be called from any
/// dispatcher thread, concurrently; they must return quickly.
struct AISE_CORE_EXPORT dispatch_callbacks {
  /// A worker reported an outcome (possibly twice; possibly for an attempt
  /// the orchestrator already ended: it checks).
  std::function<void(task_outcome)> outcome;
  /// A hand-off that cannot be made durable (the broker stayed away past
  /// the dispatcher's buffer bound or deadline): the attempt is treated as
  /// lost (retried by the task's rules).
  std::function<void(lease_key, aise::error)> undeliverable;
};

/// The orchestrator's side of distribution (orchestrator_options::dispatcher).
///
/// Thread safety: every member may be called from any thread. `handoff`
/// and `cancel` must not block on the network: they queue and return (the
/// orchestrator calls them on its own thread, outside its lock).
class AISE_CORE_EXPORT task_dispatcher {
 public:
  virtual ~task_dispatcher() = default;
  /// Whether tasks needing `capability` go to workers. Fixed after start.
  [[nodiscard]] virtual bool serves(std::string_view capability) const = 0;
  /// Starts carrying hand-offs and outcomes. Called once by the
  /// orchestrator that owns it; a dispatcher serves one orchestrator.
  virtual result<void> start(dispatch_callbacks callbacks) = 0;
  /// Hands attempts over. Each is made durable (or reported undeliverable)
  /// asynchronously, in order per capability and priority.
  virtual void handoff(std::vector<task_handoff> batch) = 0;
  /// Tells the worker running `key` (if any) to stop it: best effort; the
  /// lease, revoked before this is called, is what makes it final.
  virtual void cancel(lease_key key) = 0;
  /// A handed-over task failed for good (its last attempt failed with no
  /// attempt left, or was lost): keeps `last` (the final attempt's
  /// hand-off) where operators look for poison work, with `reason` —
  /// RabbitMQ: the dead-letter queue, header `aise-dead-reason`. Best
  /// effort, must not block; the task's failure is in the store regardless.
  /// Default: nothing.
  virtual void dead_letter(task_handoff last, std::string reason) { (void)last, (void)reason; }
  /// Stops: hand-offs still buffered are reported undeliverable; no
  /// callback runs after this returns. Idempotent.
  virtual void stop() = 0;
};

/// A delivered hand-off, to acknowledge once its lease is durable.
class AISE_CORE_EXPORT task_delivery {
 public:
  virtual ~task_delivery() = default;
  /// Removes the message from the broker (after the lease is taken, or
  /// for a stale/duplicate delivery the store refused).
  virtual void ack() = 0;
  /// Moves the message to the dead-letter queue with `reason` attached
  /// (never silently dropped, never redelivered).
  virtual void dead_letter(std::string reason) = 0;
  /// Gives the message back to its queue (a worker stopping before it took
  /// the lease, or a store that was unreachable).
  virtual void requeue() = 0;
};

/// What a source tells its worker; called on the source's thread, one at a
/// time; they must not block long.
struct AISE_CORE_EXPORT source_callbacks {
  /// A hand-off arrived (decoded: undecodable messages are dead-lettered by
  /// the source itself, with the parse error as the reason). The delivery
  /// must be acked, dead-lettered or requeued exactly once; destroying it
  /// unsettled requeues it.
  std::function<void(task_handoff, std::unique_ptr<task_delivery>)> delivery;
  /// The orchestrator asked to stop an attempt (best effort; see
  /// task_dispatcher::cancel).
  std::function<void(lease_key)> cancel;
};

/// The worker's side of distribution (worker_options::source).
///
/// Thread safety: every member may be called from any thread.
class AISE_CORE_EXPORT task_source {
 public:
  virtual ~task_source() = default;
  /// Starts consuming hand-offs for `capabilities`, at most `prefetch`
  /// unacknowledged at once. Called once.
  virtual result<void> start(std::vector<std::string> capabilities, std::size_t prefetch,
                             source_callbacks callbacks) = 0;
  /// Sends an outcome to the orchestrator, durably (confirmed). Fails with
  /// `unavailable` while the carrier is down; the outcome is in the store
  /// already, so the orchestrator's sweep still finds it.
  virtual result<void> report(const task_outcome& outcome) = 0;
  /// Stops consuming; deliveries not yet acknowledged go back to their
  /// queues. No callback runs after this returns. Idempotent.
  virtual void stop() = 0;
};

}  // namespace aise
