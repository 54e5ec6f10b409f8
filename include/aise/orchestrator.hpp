#pragma once
/// @file
/// The orchestrator: agent kinds and supervision, task scheduling and events.
///
/// Scheduling rules:
/// - A submitted task is `pending` until its dependencies succeeded, then
///   `awaiting_approval` (if it requires approval) or `queued`.
/// - Queued tasks are dispatched in priority order (higher first, then
///   submission order) to the **least-loaded** live agent that has the
///   task's capability and a free slot (`concurrency` per agent).
/// - A failed attempt with attempts left goes to `retrying` and is queued
///   again after `retry_initial_backoff · multiplier^(attempt-1)` (capped at
///   `retry_max_backoff`) with ±`retry_jitter` random spread.
/// - A timed-out attempt (per-task `timeout`) is cancelled (its token is
///   set) and counts as a failed attempt with `timeout`.
/// - A task past its `deadline` fails with `timeout`, without retry.
/// - A failed or cancelled task cancels (policy `cancel`, the default) or
///   fails (policy `fail`) every pending dependent, transitively, and
///   cancels its live subtasks (children spawned through its context).
/// - Cancellation works in every non-terminal state; a running handler sees
///   its token set, and its later completion is ignored. The token's flag
///   is set before the change is announced; its `on_cancel` callbacks run
///   just after, outside the orchestrator's lock, so a listener may see the
///   event before a callback has finished.
///
/// Supervision: an agent spawned through the orchestrator that fails (a
/// handler threw, or it called `crash`) loses its running attempts (they
/// fail with `unavailable` and are retried by the rules above) and is
/// restarted under the same name after `restart_initial_backoff ·
/// multiplier^(n-1)`, restored from its last snapshot — unless it failed
/// more than `max_restarts` times within `restart_window`, in which case it
/// stays down (`agent.gave_up`).
///
/// Every state change is written to the store (task row, attempt row and
/// event in one call) before it is announced to event listeners.
///
/// Thread safety: every public member may be called from any thread,
/// including from agent handlers. Members that wait (`wait`) refuse to run
/// on an executor thread. Listeners run on an executor thread, in sequence
/// order, one at a time, after the change they describe is complete; they
/// must not block. Live delivery keeps at most 65,536 undelivered events;
/// beyond that the oldest are dropped (the gap shows in `sequence`) and the
/// store's event log, the source of truth, still has them.
///
/// Errors: `invalid_argument` (bad spec), `not_found` (unknown id or kind),
/// `cycle`, `already_exists`, `illegal_transition` (e.g. approving a task
/// that does not await approval), `unavailable` (a store failure: the
/// change was not made).

#include <aise/agent.hpp>
#include <aise/clock.hpp>
#include <aise/core_export.hpp>
#include <aise/error.hpp>
#include <aise/event.hpp>
#include <aise/store.hpp>
#include <aise/task.hpp>
#include <aise/task_context.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace aise {

class runtime;
class task_dispatcher;

namespace detail {
class orchestrator_impl;
}

/// Creates a fresh agent of one kind.
using agent_factory = std::function<std::unique_ptr<agent>()>;

/// Where the orchestrator does its own work: task completions, timers
/// (timeouts, retries, deadlines, restarts), agent exits, dispatch, and so
/// the store writes they make.
enum class orchestrator_threading {
  /// `own_thread` when the store blocks (store::blocking(): SQL stores),
  /// `executors` otherwise (the in-memory store never waits).
  automatic,
  /// On the runtime's executor threads, inline: the lowest latency.
  executors,
  /// On one thread the orchestrator owns: executor threads never wait for
  /// the store. A handler's `succeed`/`fail` then returns once the
  /// completion is accepted; it is recorded right after (a store that
  /// refuses it is retried every second until it takes it or the attempt
  /// ends otherwise).
  own_thread,
};

/// An agent that could run a task (running, capable, with a free slot).
struct AISE_CORE_EXPORT routing_candidate {
  std::string name;
  std::string kind;
  std::vector<std::string> capabilities;
  std::size_t running = 0;      ///< tasks it runs now
  std::size_t concurrency = 1;  ///< tasks it may run at once
};

/// A routing strategy: which of the capable free agents runs a task. The
/// default (no router) is the least-loaded one. aise::ml ships an
/// embedding router and a learned one (include/aise/routing.hpp).
///
/// Threads: `prepare` runs on the submitting thread before the orchestrator
/// takes its lock (do slow work there: embeddings, model calls); `pick`
/// and `observe` run with the orchestrator's lock held and must be quick
/// and must not call the orchestrator. All three may be called from
/// several threads at once. Nothing may throw (a throwing router counts as
/// no choice).
class AISE_CORE_EXPORT router {
 public:
  virtual ~router() = default;
  /// Sees each task (its id assigned) before it is stored.
  virtual void prepare(const task_spec& task) { (void)task; }
  /// Index of the chosen candidate, or nullopt for the default choice.
  /// `candidates` is never empty and is ordered least loaded first.
  virtual std::optional<std::size_t> pick(const task& t,
                                          const std::vector<routing_candidate>& candidates) = 0;
  /// How an attempt ended (for routers that learn). `succeeded` is false
  /// for failed, timed-out and lost attempts.
  virtual void observe(const task& t, const routing_candidate& agent, bool succeeded) {
    (void)t, (void)agent, (void)succeeded;
  }
};

/// Orchestrator options, with defaults for an interactive application.
struct AISE_CORE_EXPORT orchestrator_options {
  /// Where state goes; default: a new in-memory store.
  std::shared_ptr<aise::store> store;
  /// Tasks one agent works on at once unless its spawn says otherwise.
  std::size_t default_concurrency = 1;

  duration retry_initial_backoff = std::chrono::milliseconds(200);
  duration retry_max_backoff = std::chrono::seconds(60);
  double retry_multiplier = 2.0;
  double retry_jitter = 0.2;  ///< Fraction of the backoff, 0 … 1.

  int max_restarts = 5;  ///< Restarts allowed within `restart_window`.
  duration restart_window = std::chrono::seconds(60);
  duration restart_initial_backoff = std::chrono::milliseconds(100);
  duration restart_max_backoff = std::chrono::seconds(10);
  double restart_multiplier = 2.0;

  /// Seed of the jitter generator; 0 = random. Fix it for reproducible tests.
  std::uint64_t seed = 0;

  /// Where the orchestrator's own work runs; see orchestrator_threading.
  orchestrator_threading threading = orchestrator_threading::automatic;

  /// Group commit, on the orchestrator's own thread only: the task changes
  /// made while the thread works through what is waiting for it (task
  /// completions, timers, agent exits, and the dispatch they cause) are
  /// written to the store together, with `store::update_tasks`: one
  /// transaction, one commit (one fsync) for the lot. Under load a batch
  /// holds whatever arrived during the previous commit, so throughput
  /// follows the store's commit rate times the batch size, not the commit
  /// rate alone. Events are announced, `when_done` callbacks and
  /// cancellation callbacks run, only after the batch is written. While a
  /// batch cannot be written (the database is unreachable), it is kept and
  /// written again with backoff (50 ms doubling to 2 s), and no new attempt
  /// is started until it is written; `get` already shows the changes. A
  /// batch the store refuses for another reason (a task changed by someone
  /// else: `conflict`) is written change by change; a refused change makes
  /// the orchestrator take the stored task as the truth (logged as an
  /// error). Calls made from other threads (`submit`, `cancel`, …) write
  /// what is still waiting first, then their own changes, before they
  /// return. With `false`, every change is written on its own.
  bool group_commit = true;
  /// Chooses among capable free agents (see router); null: least loaded.
  std::shared_ptr<aise::router> router;

  /// Distribution (include/aise/distribution.hpp, docs/distribution.md):
  /// queued tasks whose capability the dispatcher serves and that no free
  /// local agent takes are handed to worker processes. Such an attempt is
  /// `running` from the hand-off on (agent "queue:<capability>" until its
  /// outcome names the worker's agent); its timeout counts from then. The
  /// store must keep leases (libaise's memory and SQL stores do; across
  /// processes: PostgreSQL). Null: every task runs on this runtime's agents.
  std::shared_ptr<aise::task_dispatcher> dispatcher;
  /// How often the leases of handed-over attempts are checked: an expired
  /// lease is ended (`lost`) and its attempt fails with `unavailable` and is
  /// retried by the task's rules; an outcome recorded in a lease whose
  /// report never arrived is applied. Must be > 0.
  duration lease_check_interval = std::chrono::seconds(2);
};

/// How to spawn an agent of a registered kind.
struct AISE_CORE_EXPORT agent_spawn {
  std::string kind;  ///< Registered kind. Required.
  std::string name;  ///< Address; generated ("<kind>-<n>") when empty.
  std::string project = "default";
  std::size_t concurrency = 0;       ///< Concurrent tasks; 0 = default_concurrency.
  std::size_t mailbox_capacity = 0;  ///< 0 = the runtime's default.
};

/// Status of a supervised agent.
struct AISE_CORE_EXPORT agent_status {
  std::string name;
  std::string kind;
  std::string project;
  std::string status;  ///< "running", "restarting", "stopped", "failed".
  std::vector<std::string> capabilities;
  std::size_t running_tasks = 0;
  std::size_t concurrency = 0;
  int restarts = 0;
};

/// What `orchestrator::recover` found in the store and did.
struct AISE_CORE_EXPORT recovery_report {
  std::size_t tasks = 0;          ///< Unfinished tasks now scheduled by this orchestrator.
  std::size_t lost_attempts = 0;  ///< Attempts that were running when the last owner stopped.
  std::size_t agents = 0;         ///< Agents spawned again (each from its last snapshot).
};

/// Receives stored events.
using event_listener = std::function<void(const event&)>;

/// The orchestrator. Non-copyable; destroy it before its runtime.
class AISE_CORE_EXPORT orchestrator {
 public:
  /// Creates an orchestrator on `rt`. Fails (throws std::invalid_argument —
  /// a construction-time programming error) on invalid options.
  explicit orchestrator(runtime& rt, orchestrator_options options = {});
  ~orchestrator();
  orchestrator(const orchestrator&) = delete;
  orchestrator& operator=(const orchestrator&) = delete;

  // ---- agents ----
  /// Registers a kind. `already_exists` if registered; `invalid_argument`
  /// for an empty name or factory.
  result<void> register_kind(std::string kind, agent_factory factory);
  /// Registered kinds, sorted.
  [[nodiscard]] std::vector<std::string> kinds() const;
  /// Spawns a supervised agent (restored from its stored snapshot if the
  /// store has one for that name) and returns its name.
  result<std::string> spawn(agent_spawn spec);
  /// Stops a supervised agent for good (no restart); its running attempts
  /// are cancelled and count as failed attempts (`unavailable`), so they
  /// are retried elsewhere while attempts remain.
  result<void> stop_agent(std::string_view name);
  /// Restarts an agent now (stop, then spawn the same name from its snapshot).
  result<void> restart_agent(std::string_view name);
  /// Status of every supervised agent, sorted by name.
  [[nodiscard]] std::vector<agent_status> agents() const;
  result<agent_status> agent_info(std::string_view name) const;

  // ---- tasks ----
  /// Submits one task; returns its id.
  result<std::string> submit(task_spec spec);
  /// Submits a set of tasks atomically; dependencies may name tasks of the
  /// batch or existing tasks. `cycle` for a cyclic batch, `not_found` for
  /// an unknown dependency, `unavailable` for a dependency the store knows
  /// as unfinished but this orchestrator does not schedule; nothing is
  /// stored then. Returns ids in order.
  result<std::vector<std::string>> submit_all(std::vector<task_spec> specs);
  /// Cancels a non-terminal task (and, by policy, its dependents).
  result<void> cancel(std::string_view id, std::string reason = "cancelled by request");
  /// Runs a failed or cancelled task again, as a new task: a copy of its
  /// spec (kind, payload, capability, priority, dependencies, attempts,
  /// timeout, approval) with a new id and no deadline. The original keeps
  /// its state and history; tasks that depended on it are not moved over
  /// (they were cancelled or failed with it). A copy whose dependency
  /// failed is cancelled again by its policy: retry that dependency first.
  /// Returns the new id; `not_found` for an unknown id,
  /// `illegal_transition` for a task that is not failed or cancelled.
  result<std::string> retry(std::string_view id);
  /// Approves a task awaiting approval: it is queued.
  result<void> approve(std::string_view id, std::string by = {});
  /// Rejects a task awaiting approval: it is cancelled with `rejected`.
  result<void> reject(std::string_view id, std::string by = {}, std::string reason = {});
  /// The task's current record.
  result<task> get(std::string_view id) const;
  /// Calls `fn` once when the task is terminal (at once, on the calling
  /// thread, if it already is; otherwise on an executor thread).
  result<void> when_done(std::string_view id, std::function<void(const task&)> fn);
  /// Blocks until the task is terminal or `timeout` (real time) passes.
  /// `invalid_argument` on an executor thread; `timeout` when time runs out
  /// (the abandoned wait leaves nothing behind: polling stays bounded).
  result<task> wait(std::string_view id, std::chrono::milliseconds timeout);

  /// Picks up where the previous process on this store stopped (a crash, a
  /// SIGKILL, a restart): every unfinished task in the store is scheduled
  /// here again. Pending tasks wait for their dependencies (dependencies
  /// that finished meanwhile count with their stored results; a dependency
  /// that failed, or is gone from the store, ends the task by its policy);
  /// queued tasks are queued; retrying tasks retry at their `not_before`;
  /// tasks awaiting approval keep waiting; deadlines are re-armed. A task
  /// that was running lost its attempt with its process: the attempt is
  /// recorded as failed (`unavailable`, "lost: …") and the task retries
  /// while attempts remain (the lost attempt counts), else it fails. Agents
  /// the store lists as running (or restarting) whose kind is registered
  /// and which are not running here yet are spawned again, from their last
  /// snapshot. The event log continues its numbering.
  ///
  /// Call once, after `register_kind` and before new work is submitted;
  /// assumes this is the only orchestrator scheduling the store's tasks
  /// (several orchestrators on one store come with the distribution issue).
  /// Errors: `already_exists` on a second call; a store error as it came.
  result<recovery_report> recover();

  // ---- events ----
  /// Adds a listener of every event from now on; returns its key.
  std::size_t subscribe(event_listener listener);
  /// Removes a listener; once this returns it is not called again. Called
  /// from another thread than the one delivering, it waits for a listener
  /// call in progress (so do not call it while holding a lock a listener
  /// takes); a listener may unsubscribe itself.
  void unsubscribe(std::size_t key);

  /// The store in use.
  [[nodiscard]] aise::store& store() const noexcept;
  /// The runtime in use.
  [[nodiscard]] runtime& rt() const noexcept;

 private:
  std::shared_ptr<detail::orchestrator_impl> impl_;
};

}  // namespace aise
