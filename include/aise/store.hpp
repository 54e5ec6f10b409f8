#pragma once
/// @file
/// The store seam: where projects, agents and their snapshots, tasks and
/// their attempts, events and artifact metadata live. libaise ships an
/// in-memory store (below); `aise::sql` adds SQLite and PostgreSQL. Every
/// implementation passes the same conformance suite
/// (tests/conformance/store_suite.hpp, see docs/conformance.md).
///
/// Contract for implementations:
/// - Thread safety: every member may be called from any thread concurrently.
/// - Calls are synchronous and may block (a SQL store waits for its
///   database); callers that must not block run them off their executor.
/// - Atomicity: `insert_tasks`, `update_task` and `update_tasks` write the
///   task rows, the attempt rows and the events of one call in one
///   transaction: all or nothing.
/// - Events: `sequence` is assigned per project at write time, starting at
///   1, with no gaps or duplicates, in commit order.
/// - A `time_point` left at its default (the epoch) is filled from the
///   store's clock (created_at, updated_at, taken_at, `task_update::at`,
///   event `at`).
/// - Errors are values: not_found, already_exists, conflict (a lost
///   compare-and-set), invalid_argument, unavailable (the backend is down).
///   No exception escapes a member function.

#include <aise/clock.hpp>
#include <aise/core_export.hpp>
#include <aise/error.hpp>
#include <aise/event.hpp>
#include <aise/task.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aise {

/// A project: the unit of ownership, event numbering and (later) access control.
struct AISE_CORE_EXPORT project {
  std::string id;  ///< Required, unique.
  std::string name;
  std::string description;
  nlohmann::json metadata = nlohmann::json::object();
  bool archived = false;
  time_point created_at{};
  time_point updated_at{};
};

/// What the store knows about an agent instance.
struct AISE_CORE_EXPORT agent_record {
  std::string id;  ///< The agent's name (its address). Required, unique.
  std::string project = "default";
  std::string kind;
  std::vector<std::string> capabilities;
  /// "starting", "running", "restarting", "stopped", "failed"; "remote" for
  /// an agent of an aise::worker process (alive while `last_heartbeat` is
  /// recent; an orchestrator's recover() never spawns those).
  std::string status;
  int restarts = 0;
  time_point last_heartbeat{};
  time_point created_at{};
};

/// The last saved state of an agent; restored when it restarts.
struct AISE_CORE_EXPORT agent_snapshot {
  std::string agent_id;
  std::uint64_t version = 0;  ///< Assigned by the store: 1, 2, … per agent.
  time_point taken_at{};
  nlohmann::json state;
};

/// Metadata of one stored artifact version (the bytes live in an artifact store).
struct AISE_CORE_EXPORT artifact_meta {
  std::string id;       ///< Required, unique (e.g. "a-…").
  std::string project;  ///< Required.
  std::string task;     ///< Producing task, or empty.
  std::string name;     ///< User-facing name; never used as a file path.
  std::string media_type = "application/octet-stream";
  std::uint64_t size = 0;
  std::string sha256;  ///< Lower-case hex digest of the content.
  int version = 0;     ///< Assigned by the store: 1, 2, … per (project, name).
  time_point created_at{};
};

/// A page of a listing; `next_cursor` is empty on the last page.
template <class T>
struct page {
  std::vector<T> items;
  std::string next_cursor;
};

/// Which tasks `list_tasks` returns. Results are ordered by task id
/// ascending (ids sort by creation within one runtime); `after` is the
/// cursor (the last id of the previous page).
struct AISE_CORE_EXPORT task_filter {
  std::string project;             ///< Empty = every project.
  std::vector<task_state> states;  ///< Empty = every state.
  std::string capability;          ///< Empty = any; matches the effective capability.
  std::string parent;              ///< Empty = any.
  std::string after;               ///< Cursor.
  std::size_t limit = 100;         ///< 1 … 1000; larger values are clamped.
};

/// How many tasks are in each state (`store::count_tasks`).
struct AISE_CORE_EXPORT task_counts {
  /// Indexed by `task_state`'s value (pending = 0 … awaiting_approval = 7).
  std::array<std::uint64_t, 8> by_state{};
  [[nodiscard]] std::uint64_t operator[](task_state s) const noexcept {
    return by_state[static_cast<std::size_t>(s)];
  }
  [[nodiscard]] std::uint64_t& operator[](task_state s) noexcept {
    return by_state[static_cast<std::size_t>(s)];
  }
  /// Every task counted.
  [[nodiscard]] std::uint64_t total() const noexcept;
};

/// One compare-and-set change of a task, with its attempt row and event.
struct AISE_CORE_EXPORT task_update {
  std::string id;                      ///< Task id. Required.
  std::uint64_t expected_version = 0;  ///< Must equal the stored version, else `conflict`.
  task_state state = task_state::pending;
  int attempt = 0;
  std::string agent;
  std::optional<nlohmann::json> result;  ///< Replaces the stored result when set.
  std::optional<aise::error> error;      ///< Replaces the stored error when set.
  bool clear_error = false;              ///< Clears the stored error (a new attempt).
  time_point at{};                       ///< Becomes `updated_at`.
  time_point not_before{};
  std::optional<task_attempt> attempt_row;  ///< Inserted or replaced (key: task id + number).
  event_draft event;                        ///< Written in the same transaction.
  /// Optional: an event written just before `event`, in the same
  /// transaction, for a state the task passes through within this change
  /// (the orchestrator sends task.queued along with task.running when it
  /// dispatches a task the moment it becomes ready: one write, not two).
  /// Must name the same project as `event` (else `invalid_argument`); its
  /// sequence is then the returned one minus 1.
  std::optional<event_draft> via_event;
};

/// How much history a store keeps; zero means no limit. Only finished
/// tasks (succeeded, failed, cancelled) are ever dropped, with their
/// attempt rows; events are dropped oldest first per project. Sequences are
/// never reused: `read_events` skips what was dropped (a reader resuming
/// from an older sequence sees the first returned one jump), and
/// `last_sequence` is unaffected. A task whose dependency was dropped cannot
/// be submitted (the dependency is unknown).
struct AISE_CORE_EXPORT retention_policy {
  std::uint64_t max_events_per_project = 0;  ///< The newest N events of each project.
  duration max_event_age{0};                 ///< Events whose `at` is older are dropped.
  std::uint64_t max_finished_tasks = 0;      ///< The N most recently finished tasks.
  duration max_finished_task_age{0};  ///< Finished tasks last changed before this are dropped.
};

/// What one `compact` call dropped.
struct AISE_CORE_EXPORT compaction_stats {
  std::uint64_t events_removed = 0;
  std::uint64_t tasks_removed = 0;
};

/// A shared spending counter (LLM tokens, cost), kept by the store so that
/// every process using it enforces one limit.
struct AISE_CORE_EXPORT budget_state {
  std::string key;
  std::int64_t limit = 0;  ///< 0: no limit
  std::int64_t spent = 0;
};

/// Where a lease of one task attempt stands (see store's lease section).
/// Numeric values are stable (stored).
enum class lease_state : int {
  held = 0,     ///< A worker runs the attempt and renews the lease.
  done = 1,     ///< The worker finished the attempt; `outcome` says how.
  lost = 2,     ///< Expired: the worker stopped renewing (crashed, cut off, stopping).
  revoked = 3,  ///< Ended by the scheduler (cancelled, timed out, recovered elsewhere).
};
/// Stable lower-case name ("held", "done", "lost", "revoked").
AISE_CORE_EXPORT std::string_view to_string(lease_state s) noexcept;

/// Names one attempt of one task.
struct AISE_CORE_EXPORT lease_key {
  std::string task_id;
  int attempt = 0;
  friend bool operator==(const lease_key&, const lease_key&) = default;
};

/// Who runs an attempt in another process (an `aise-worker`), until when,
/// and how it ended. Key: (task_id, attempt).
struct AISE_CORE_EXPORT task_lease {
  std::string task_id;
  int attempt = 0;
  std::string worker;  ///< Empty when the lease was ended before any worker took it.
  lease_state state = lease_state::held;
  time_point acquired_at{};
  time_point expires_at{};  ///< While held: renewed by the worker's heartbeats.
  time_point ended_at{};    ///< When it left `held` (or was created ended).
  /// Set when done: the worker's `task_outcome` as JSON (include/aise/distribution.hpp).
  std::optional<nlohmann::json> outcome;
};

/// The store interface. See the file comment for the contract.
class AISE_CORE_EXPORT store {
 public:
  virtual ~store() = default;

  /// A short name for logs ("memory", "sqlite", "postgresql").
  [[nodiscard]] virtual std::string_view backend() const noexcept = 0;
  /// Whether calls may wait on I/O (a database, a disk). The orchestrator
  /// keeps the runtime's executor threads free of such stores by doing its
  /// own work on a thread of its own (orchestrator_options::threading).
  [[nodiscard]] virtual bool blocking() const noexcept { return true; }

  // ---- projects ----
  /// Inserts `p` (created_at/updated_at kept if set, else now). `already_exists` on a taken id.
  virtual result<project> create_project(project p) = 0;
  virtual result<project> get_project(std::string_view id) = 0;
  /// Projects ordered by id, after cursor `after`, at most `limit` (clamped to 1 … 1000).
  virtual result<page<project>> list_projects(std::string_view after, std::size_t limit) = 0;
  /// Replaces name, description, metadata, archived, updated_at. `not_found` if absent.
  virtual result<project> update_project(project p) = 0;

  // ---- agents ----
  /// Inserts or replaces the record with `a.id`.
  virtual result<void> put_agent(agent_record a) = 0;
  virtual result<agent_record> get_agent(std::string_view id) = 0;
  /// Agents of `project` (every project when empty), ordered by id.
  virtual result<std::vector<agent_record>> list_agents(std::string_view project) = 0;
  /// Stores a new snapshot version for `s.agent_id` (version assigned); returns it.
  virtual result<agent_snapshot> save_snapshot(agent_snapshot s) = 0;
  /// The latest snapshot, or `not_found` when the agent has none.
  virtual result<agent_snapshot> load_snapshot(std::string_view agent_id) = 0;

  // ---- tasks ----
  /// Inserts tasks (version set to 1) and events in one transaction.
  /// `already_exists` when an id is taken; `invalid_argument` for a task
  /// without id, project or kind. Returns the sequence assigned to each
  /// event, in the order of `events` (read them back with `read_events`).
  /// A sink: the store may move from `events` (their JSON moves, not
  /// copies); the overload below copies for callers that keep theirs.
  virtual result<std::vector<std::uint64_t>> insert_tasks(const std::vector<task>& tasks,
                                                          std::vector<event_draft>&& events) = 0;
  result<std::vector<std::uint64_t>> insert_tasks(const std::vector<task>& tasks,
                                                  const std::vector<event_draft>& events) {
    return insert_tasks(tasks, std::vector<event_draft>(events));
  }
  /// Applies `u` if the stored version equals `u.expected_version`
  /// (`conflict` otherwise, `not_found` for an unknown id); bumps the
  /// version; writes the attempt row and the event (after `via_event`, if
  /// set). Returns the sequence of `event`. A sink (C++ Core Guidelines
  /// F.18): the store may move from `u`, so its strings and JSON move, not
  /// copy; `u` is unspecified afterwards, also on an error. A caller that
  /// also announces the event keeps its own copy of the draft. The overload
  /// below copies for callers that keep `u`.
  virtual result<std::uint64_t> update_task(task_update&& u) = 0;
  result<std::uint64_t> update_task(const task_update& u) { return update_task(task_update(u)); }

  /// Applies a batch of changes in order, in ONE transaction: all or
  /// nothing. Each change is checked against the version the earlier
  /// changes of the batch leave (a task may change several times in one
  /// batch). The first failing change's error (`conflict`, `not_found`,
  /// `invalid_argument`, `unavailable`) is returned and nothing of the batch
  /// is written; its events take no sequences. Returns the sequence of each
  /// change's `event`, in batch order. `batch` is not modified, so a caller
  /// can try the same batch again after `unavailable`. The orchestrator's
  /// group commit writes everything one turn of its thread changed this
  /// way: one commit, one fsync. An empty batch writes nothing.
  virtual result<std::vector<std::uint64_t>> update_tasks(
      const std::vector<task_update>& batch) = 0;
  virtual result<task> get_task(std::string_view id) = 0;
  virtual result<page<task>> list_tasks(const task_filter& f) = 0;
  /// How many tasks of `project` (every project when empty) are in each
  /// state: for gauges and dashboards (aise-server's /metrics). libaise's
  /// stores answer from their indexes (SQL: one GROUP BY on the state
  /// index; memory: one pass under its lock); the default implementation
  /// pages through `list_tasks`, correct for any store but slow for big ones.
  /// Errors: those of the backend (`unavailable`).
  virtual result<task_counts> count_tasks(std::string_view project);
  /// Attempts of a task ordered by number; empty for a task never started;
  /// `not_found` for an unknown task.
  virtual result<std::vector<task_attempt>> list_attempts(std::string_view task_id) = 0;

  // ---- events ----
  /// Appends one event outside a task change (agent events).
  virtual result<event> append_event(event_draft e) = 0;
  /// Events of `project` with sequence > `after_sequence`, ascending, at
  /// most `limit`; events dropped by retention are skipped.
  virtual result<std::vector<event>> read_events(std::string_view project,
                                                 std::uint64_t after_sequence,
                                                 std::size_t limit) = 0;
  /// Highest sequence of `project`, 0 when it has no events (also after
  /// retention dropped them: numbering goes on).
  virtual result<std::uint64_t> last_sequence(std::string_view project) = 0;

  // ---- retention ----
  /// Drops what `policy` does not keep, now (see retention_policy). Stores
  /// may also apply a retention of their own on writes (the in-memory store
  /// does, see memory_store_options).
  virtual result<compaction_stats> compact(const retention_policy& policy) = 0;

  // ---- artifact metadata ----
  /// Inserts `a` with version = 1 + the highest version of (project, name).
  virtual result<artifact_meta> put_artifact(artifact_meta a) = 0;
  virtual result<artifact_meta> get_artifact(std::string_view id) = 0;
  /// Latest version of every name in `project`, ordered by name.
  virtual result<std::vector<artifact_meta>> list_artifacts(std::string_view project) = 0;
  /// Every version of (project, name), ascending.
  virtual result<std::vector<artifact_meta>> artifact_versions(std::string_view project,
                                                               std::string_view name) = 0;
  /// Whether any artifact version (of any project) has this content digest:
  /// the artifact store's garbage collector keeps exactly those blobs.
  virtual result<bool> artifact_digest_in_use(std::string_view sha256) = 0;

  // ---- budgets ----
  // Counters shared by every process using the store (aise::llm keeps its
  // token budgets here). The default implementations report `unavailable`:
  // a store written before budgets existed keeps compiling; libaise's own
  // stores implement them (conformance case "budgets").

  /// Sets the limit of `key` (0 removes it), creating the counter at 0
  /// spent when missing. `invalid_argument` for an empty key or a
  /// negative limit.
  virtual result<budget_state> set_budget_limit(std::string key, std::int64_t limit);
  /// Adds `amount` (negative: gives back) to what `key` has spent, in one
  /// atomic step, creating the counter (no limit) when missing. With
  /// `within_limit`, a charge that would take a limited counter past its
  /// limit is refused with `limit_exceeded` and nothing is added: of
  /// concurrent callers (threads or processes) exactly those fitting under
  /// the limit succeed. Returns the counter after the charge.
  virtual result<budget_state> charge_budget(std::string key, std::int64_t amount,
                                             bool within_limit);
  /// `not_found` when the counter was never set or charged.
  virtual result<budget_state> get_budget(std::string_view key);

  // ---- leases ----
  // How one attempt run by a worker process is owned. The scheduler (the
  // orchestrator) writes the task rows; a worker writes only its lease row,
  // so the two never race on a task's version. Every decision about an
  // attempt is one conditional write on its lease row, which makes it
  // exactly one: a worker's completion and the scheduler's expiry or
  // revocation cannot both win. Default implementations report
  // `unavailable` (like budgets); libaise's stores implement them
  // (conformance case "leases"). Times are the caller's `now` (the worker's
  // and scheduler's clocks; keep hosts in NTP sync, and keep `ttl` well
  // above the clock skew).

  /// Takes attempt `key.attempt` of task `key.task_id` for `worker` until
  /// `now + ttl`, in one transaction with a check of the task row: the task
  /// must be `running` that very attempt (`not_found` for an unknown task,
  /// `conflict` naming its state and attempt otherwise: a stale or
  /// duplicated delivery). A lease already held by the same worker is
  /// renewed and returned (the broker delivered it again); any other
  /// existing row is `conflict` (another worker holds or held it, or the
  /// scheduler ended it before anyone took it). `invalid_argument` for an
  /// empty worker, attempt < 1 or ttl ≤ 0.
  virtual result<task_lease> acquire_lease(const lease_key& key, std::string_view worker,
                                           time_point now, duration ttl);
  /// Heartbeat: every lease in `keys` still held by `worker` expires at
  /// `now + ttl` from now on, in one statement. Returns the keys that are
  /// NOT held by `worker` any more (lost, revoked, unknown): the worker
  /// stops those attempts.
  virtual result<std::vector<lease_key>> renew_leases(std::string_view worker,
                                                      const std::vector<lease_key>& keys,
                                                      time_point now, duration ttl);
  /// Ends a lease `worker` holds with the attempt's `outcome` (held → done),
  /// even if past `expires_at`, as long as nobody ended it first. Again
  /// with the same worker after it is done: ok, the first outcome stays
  /// (idempotent). `conflict` when it was lost or revoked (the scheduler
  /// retried or cancelled the attempt: this outcome does not count) or is
  /// held by another worker; `not_found` when there is no such lease.
  virtual result<task_lease> finish_lease(const lease_key& key, std::string_view worker,
                                          nlohmann::json outcome, time_point now);
  /// The scheduler's side: moves a held lease to `to` (`lost` or `revoked`;
  /// else `invalid_argument`); with `only_if_expired`, only when
  /// `expires_at < now` (a live lease is returned unchanged). When no row
  /// exists yet, creates one in state `to` with no worker, so a delivery
  /// still in the broker can never be taken later. A lease already done,
  /// lost or revoked is returned unchanged. Returns the row as it is after
  /// the call: the caller reads `state` to know who won.
  virtual result<task_lease> end_lease(const lease_key& key, lease_state to, time_point now,
                                       bool only_if_expired);
  /// Many `acquire_lease` calls in ONE transaction (one commit): a worker
  /// takes the leases of a burst of deliveries together. One result per
  /// key, in order, each as `acquire_lease` would answer; a failure of the
  /// store itself (`unavailable`) fails every key. The default calls
  /// `acquire_lease` per key.
  virtual std::vector<result<task_lease>> acquire_leases(const std::vector<lease_key>& keys,
                                                         std::string_view worker, time_point now,
                                                         duration ttl);
  /// One outcome to record: the lease and the outcome JSON.
  struct lease_outcome {
    lease_key key;
    nlohmann::json outcome;
  };
  /// Many `finish_lease` calls in ONE transaction, one result per item in
  /// order (as `finish_lease` would answer); a store failure fails all.
  /// The default calls `finish_lease` per item.
  virtual std::vector<result<task_lease>> finish_leases(const std::vector<lease_outcome>& items,
                                                        std::string_view worker, time_point now);
  /// Every lease row of the given tasks (all attempts), ordered by task id
  /// then attempt. Unknown ids are skipped. At most 1,000 ids per call
  /// (`invalid_argument` beyond).
  virtual result<std::vector<task_lease>> get_leases(const std::vector<std::string>& task_ids);
};

/// Options of the in-memory store.
struct AISE_CORE_EXPORT memory_store_options {
  /// Clock for timestamps the store fills in; default: the system clock.
  std::shared_ptr<aise::clock> clock;
  /// Applied on every write, by count only (ages: call `compact`). The
  /// counts may be exceeded by an eighth before the store drops back to
  /// them, so the work is amortized. The defaults keep a long-running
  /// process at a few tens of MB of history; zero keeps everything.
  retention_policy retention{.max_events_per_project = 100'000, .max_finished_tasks = 10'000};
};

/// An in-memory store: fast, thread-safe (one mutex), gone when the process
/// ends. The embedded default until `aise::sql` is linked; ideal for tests.
/// It keeps what its retention allows (see memory_store_options) and the
/// latest 16 snapshots per agent; use a SQL store to keep history across
/// restarts.
AISE_CORE_EXPORT std::shared_ptr<store> make_memory_store(memory_store_options options = {});

}  // namespace aise
