#pragma once
/// @file
/// `aise::worker`: runs task attempts handed over by an orchestrator in
/// another process (include/aise/distribution.hpp). The `aise-worker`
/// executable is a thin main around it; embed it to host your own kinds.
///
/// ```cpp
/// aise::runtime rt;
/// aise::worker_options wo;
/// wo.store = *aise::sql::open_store("postgresql://…");   // shared with the orchestrator
/// wo.source = *aise::make_rabbitmq_task_source(rabbitmq_task_options{…});
/// aise::worker w(rt, wo);
/// w.add_agents("coder", [] { return std::make_unique<coder>(); }, 4);
/// w.start();
/// …                                   // until SIGTERM
/// w.stop(std::chrono::seconds(30));   // finish or release what runs
/// ```
///
/// For each delivered attempt the worker takes the lease in the store
/// (store::acquire_lease), acknowledges the delivery only then, runs the
/// attempt on a free agent with the task's capability (the handler sees
/// the same `task_context` as under an orchestrator: the task, its
/// dependencies' results, a cancellation token), renews the leases of
/// everything it holds every `heartbeat_interval`, records the outcome in
/// the lease (store::finish_lease) and reports it to the orchestrator. A
/// duplicate or stale delivery (another worker holds the attempt, or it
/// ended) is acknowledged and dropped. A lease found lost or revoked at a
/// heartbeat, or a cancel notice, cancels the attempt's token; its later
/// completion returns `cancelled` and does not count.
///
/// Agents: `add_agents` spawns `count` agents of a kind on the runtime, each
/// named "<worker id>.<kind>-<n>", restored from its last snapshot in the
/// store and snapshotted after each synchronous task (as the orchestrator
/// does). An agent that fails loses its running attempts (they fail with
/// `unavailable`, retryable) and is spawned again after a backoff (100 ms
/// doubling to 5 s).
///
/// Status: the worker writes an agent record per agent (status "remote",
/// `last_heartbeat` = now) at start and with every heartbeat, and "stopped"
/// when it stops; `store::list_agents` shows workers' agents beside the
/// orchestrator's.
///
/// Not yet for handed-over attempts: `task_context::spawn` and `when_all`
/// (subtasks) return / fail with `unavailable` naming this limitation.
///
/// Thread safety: every member may be called from any thread. Errors:
/// `invalid_argument` (bad arguments), `already_exists` (start twice, a
/// kind added twice), `unavailable` (the source did not start).

#include <aise/clock.hpp>
#include <aise/core_export.hpp>
#include <aise/distribution.hpp>
#include <aise/error.hpp>
#include <aise/orchestrator.hpp>
#include <aise/store.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace aise {

class runtime;

namespace detail {
class worker_impl;
}

/// Worker options. `store` and `source` are required.
struct AISE_CORE_EXPORT worker_options {
  /// The lease owner name; unique among live workers. Default:
  /// "<host name>-<process id>".
  std::string id;
  /// The store the orchestrator uses (PostgreSQL across machines).
  std::shared_ptr<aise::store> store;
  /// Where hand-offs come from (make_rabbitmq_task_source).
  std::shared_ptr<task_source> source;
  /// How long a lease lives without a heartbeat: a worker that dies holds
  /// its attempts at most this long before the orchestrator retries them.
  duration lease_ttl = std::chrono::seconds(30);
  /// How often held leases are renewed; must be below lease_ttl / 2.
  duration heartbeat_interval = std::chrono::seconds(10);
  /// Threads doing the worker's store work and reports: one writes lease
  /// batches (acquire, finish), the others renew leases, save snapshots and
  /// report outcomes (each report waits for the broker's confirm).
  std::size_t store_threads = 8;
  /// Unacknowledged deliveries at a time; 0: twice the agents' total slots.
  /// Deliveries beyond the free slots are leased at once and wait in the
  /// worker (their leases renewed), so a slot never waits for the broker;
  /// a worker that dies holds them until their leases expire.
  std::size_t prefetch = 0;
  /// Project of the agents the worker spawns (their events and records).
  std::string project = "default";
};

/// Counters since start; a snapshot.
struct AISE_CORE_EXPORT worker_stats {
  std::uint64_t received = 0;    ///< Deliveries.
  std::uint64_t leased = 0;      ///< Leases taken (attempts started here).
  std::uint64_t duplicates = 0;  ///< Deliveries dropped: stale or someone else's.
  std::uint64_t succeeded = 0;   ///< Outcomes recorded, by kind.
  std::uint64_t failed = 0;
  std::uint64_t escalated = 0;
  std::uint64_t lost = 0;      ///< Attempts whose lease was lost or revoked under them.
  std::uint64_t released = 0;  ///< Attempts given back by stop().
  std::uint64_t report_failures =
      0;                    ///< Outcomes recorded but not reported (the sweep finds them).
  std::size_t running = 0;  ///< Attempts held now.
};

/// A worker process's engine. Non-copyable; destroy it before its runtime.
class AISE_CORE_EXPORT worker {
 public:
  /// Throws std::invalid_argument for missing store/source or bad timings.
  worker(runtime& rt, worker_options options);
  /// Stops (no grace) if still running.
  ~worker();
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;

  /// Hosts `count` agents of `kind`, each running up to `concurrency`
  /// attempts at once. Before `start`. The capabilities the worker
  /// consumes are those of its agents.
  result<void> add_agents(std::string kind, agent_factory factory, std::size_t count = 1,
                          std::size_t concurrency = 1);
  /// Spawns the agents and starts consuming. Once.
  result<void> start();
  /// Stops consuming (deliveries not yet leased go back to the broker),
  /// lets running attempts finish for up to `grace`, then cancels the rest
  /// and ends their leases (`lost`) so the orchestrator retries them at
  /// once; stops the agents. Idempotent; blocks (not on an executor thread).
  void stop(std::chrono::milliseconds grace);

  [[nodiscard]] worker_stats stats() const;
  [[nodiscard]] const std::string& id() const noexcept;
  /// The capabilities consumed (known after add_agents), sorted.
  [[nodiscard]] std::vector<std::string> capabilities() const;

 private:
  std::shared_ptr<detail::worker_impl> impl_;
};

}  // namespace aise
