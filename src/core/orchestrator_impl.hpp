#pragma once
// The private half of aise::orchestrator. One mutex guards the scheduling
// state; store writes happen under it so that the order of stored events is
// the order of changes. Anything that may call user code (cancellation
// callbacks, completion callbacks, listeners) runs after the lock is released.

#include <aise/distribution.hpp>
#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace aise::detail {

class orchestrator_impl;
class runtime_impl;

// Sets a token's flag now and hands back its callbacks, for callers that
// must run them later (the orchestrator: after releasing its lock).
struct cancellation_access {
  static std::vector<std::function<void()>> mark(const cancellation_token& t);
};

struct task_run;

// Whoever answers for a run: the orchestrator (local attempts) or an
// aise::worker (attempts handed over by another process's orchestrator).
class run_owner {
 public:
  virtual ~run_owner() = default;
  virtual result<void> complete(const std::shared_ptr<task_run>& run,
                                std::optional<nlohmann::json> value,
                                std::optional<aise::error> failure, bool retryable,
                                bool escalate) = 0;
  virtual result<std::string> spawn_subtask(task_spec spec) = 0;
  virtual result<void> when_done(std::string_view id, std::function<void(const task&)> fn,
                                 std::shared_ptr<std::atomic<bool>> gone) = 0;
  // The last context of an uncompleted run went away (called from
  // ~task_run, possibly under the owner's own lock: never re-enter it).
  virtual void run_dropped(const std::string& id, int attempt) = 0;
};

// One attempt of one task, shared by the task_context copies a handler holds.
struct task_run {
  std::weak_ptr<run_owner> owner;
  aise::task task;
  std::shared_ptr<const std::map<std::string, nlohmann::json>> dep_results;
  cancellation_token token;
  std::shared_ptr<agent> runner;
  std::atomic<bool> done{false};
  std::atomic<bool> aborted{false};  // ended from outside: cancelled, timed out, agent lost
  bool async = false;

  task_run() = default;
  task_run(const task_run&) = delete;
  task_run& operator=(const task_run&) = delete;
  ~task_run();
};

// Runs `run` on its agent (`run->runner`): finds the handler for the
// task's kind and calls it on the agent's strand, completing the attempt
// as a synchronous handler's return value says. False when the agent's
// mailbox refused the job (the agent is stopping).
bool post_run(runtime_impl& rti, std::shared_ptr<task_run> run);

class orchestrator_impl : public run_owner, public std::enable_shared_from_this<orchestrator_impl> {
 public:
  orchestrator_impl(runtime& rt, orchestrator_options options);
  ~orchestrator_impl() override;
  void start();  // after construction: hooks that need shared_from_this
  void close();  // before destruction: unhook from the runtime

  // agents
  result<void> register_kind(std::string kind, agent_factory factory);
  std::vector<std::string> kinds() const;
  result<std::string> spawn(agent_spawn spec);
  result<void> stop_agent(std::string_view name);
  result<void> restart_agent(std::string_view name);
  std::vector<agent_status> agents() const;
  result<agent_status> agent_info(std::string_view name) const;

  // tasks
  result<std::vector<std::string>> submit_all(std::vector<task_spec> specs);
  result<void> cancel(std::string_view id, std::string reason);
  result<void> approve(std::string_view id, std::string by);
  result<void> reject(std::string_view id, std::string by, std::string reason);
  result<task> get(std::string_view id) const;
  result<void> when_done(std::string_view id, std::function<void(const task&)> fn,
                         std::shared_ptr<std::atomic<bool>> gone) override;
  result<void> when_done(std::string_view id, std::function<void(const task&)> fn) {
    return when_done(id, std::move(fn), nullptr);
  }
  result<recovery_report> recover();
  // task_context::spawn: with the orchestrator on its own thread, checked
  // now and submitted there (drain_spawns), so the caller never waits for
  // the store; otherwise submit_all.
  result<std::string> spawn_subtask(task_spec spec) override;

  // attempts (task_context)
  // `escalate`: the attempt ends and the task waits for approval (failure
  // is the reason); approve runs it again.
  result<void> complete(const std::shared_ptr<task_run>& run, std::optional<nlohmann::json> value,
                        std::optional<aise::error> failure, bool retryable, bool escalate) override;
  void run_dropped(const std::string& id, int attempt) override;

  // Runs `fn` on the orchestrator's own thread when it has one (posted),
  // else now on the calling thread.
  template <class F>
  void engine_call(F&& fn) {
    if (engine_) {
      post_engine(std::forward<F>(fn));
    } else {
      std::forward<F>(fn)();
    }
  }
  // Posts `fn` to the orchestrator's own thread, counted in engine_queued_
  // (group commit lets work already waiting join a batch). The thread is
  // joined before the counter goes away, so handlers may point at it.
  template <class F>
  void post_engine(F fn) {
    engine_queued_.fetch_add(1, std::memory_order_relaxed);
    boost::asio::post(*engine_, [queued = &engine_queued_, fn = std::move(fn)]() mutable {
      queued->fetch_sub(1, std::memory_order_relaxed);
      fn();
    });
  }
  [[nodiscard]] bool has_engine() const noexcept { return engine_ != nullptr; }

  // A runtime timer whose callback `fn(*this)` runs where the orchestrator
  // works (engine_call), and not at all once the orchestrator is gone.
  template <class F>
  std::uint64_t schedule_engine(duration delay, F fn) {
    std::weak_ptr<orchestrator_impl> weak = weak_from_this();
    return rt.schedule(delay, [weak, fn = std::move(fn)]() mutable {
      auto self = weak.lock();
      if (!self) return;
      self->engine_call([weak, fn = std::move(fn)]() mutable {
        if (auto again = weak.lock()) fn(*again);
      });
    });
  }

  // Fails a running attempt whose context was dropped without completion.
  void drop_attempt(const std::string& id, int attempt);

  // events
  std::size_t subscribe(event_listener listener);
  void unsubscribe(std::size_t key);

  runtime& rt;
  runtime_impl& rti;
  orchestrator_options options;

 private:
  struct ready_key {
    int neg_priority;
    std::uint64_t seq;
    std::string id;
    bool operator<(const ready_key& o) const {
      return std::tie(neg_priority, seq, id) < std::tie(o.neg_priority, o.seq, o.id);
    }
  };

  struct task_entry {
    aise::task t;
    std::uint64_t seq = 0;
    std::size_t unmet = 0;
    bool approved = false;
    std::vector<std::string> dependents;
    std::vector<std::string> children;
    std::map<std::string, nlohmann::json> dep_results;  // filled as dependencies succeed
    std::shared_ptr<const std::map<std::string, nlohmann::json>>
        dep_snapshot;  // shared by attempts
    std::weak_ptr<task_run> run;
    std::optional<cancellation_token> token;  // the running attempt's
    // The running attempt was handed to a worker (distribution): its run is
    // held here (no agent holds it). `remote_settled`: the attempt's end
    // came from its lease (an outcome, an expiry), so nothing to revoke.
    std::shared_ptr<task_run> remote_run;
    bool remote_settled = false;
    std::uint64_t timeout_timer = 0;
    std::uint64_t retry_timer = 0;
    std::uint64_t deadline_timer = 0;
    struct waiter {
      std::shared_ptr<std::atomic<bool>> gone;  // set by a wait() that gave up; may be null
      std::function<void(const task&)> fn;
    };
    std::vector<waiter> waiters;
  };

  struct agent_entry {
    std::string name;
    std::string kind;
    std::string project;
    std::vector<std::string> capabilities;
    std::size_t concurrency = 1;
    std::size_t mailbox_capacity = 0;
    std::vector<std::string> running;  // task ids; at most `concurrency`
    std::string status = "starting";
    std::shared_ptr<agent> instance;
    std::deque<time_point> failures;  // within the restart window
    int restarts = 0;
    bool stop_for_good = false;
    bool restart_now = false;
    std::uint64_t restart_timer = 0;
  };

  // Deferred work collected under the lock and run after it is released.
  struct ops {
    // Takes the lock, then waits while the orchestrator's thread writes a
    // batch without it: a call never holds references into the state across
    // that write, and nothing it writes can overtake the batch.
    explicit ops(orchestrator_impl& self) : lock(self.mutex_) {
      self.flush_cv_.wait(lock, [&self] { return !self.flush_in_flight_; });
    }
    ops(const ops&) = delete;
    ops& operator=(const ops&) = delete;
    ~ops();
    std::unique_lock<std::mutex> lock;
    std::vector<std::function<void()>> after;
    // Set while this call's task changes wait in the group-commit batch:
    // `after` then joins the batch's actions (run once it is written).
    std::vector<std::function<void()>>* park = nullptr;
    // A call from outside the orchestrator's thread whose changes go into
    // the batch; it writes the batch itself before it returns (commit_call).
    bool defer = false;
  };

  const std::string& capability_of(const aise::task& t) const {
    return t.capability.empty() ? t.kind : t.capability;
  }
  // The change of `e` to `to` at `now` (the clock's now when left out).
  task_update base_update(const task_entry& e, task_state to, time_point now = {}) const;
  bool apply(ops& o, task_entry& e, task_update&& u);
  // Group commit (see orchestrator_options::group_commit).
  [[nodiscard]] bool defers(const ops& o) const;
  [[nodiscard]] bool on_engine_thread() const {
    return engine_ != nullptr && std::this_thread::get_id() == engine_id_;
  }
  // Writes the batch; true when nothing is left waiting. mutex_ held; with
  // `release_lock` (the orchestrator's thread) it is released during the
  // write, and calls from other threads that write wait for it.
  bool flush_locked(ops& o, bool release_lock = false);
  void flush_turn();                  // the posted or retried flush
  void schedule_flush(bool backoff);  // mutex_ held
  void defer_call(ops& o) const;      // an outside call whose changes go into the batch
  void commit_call(ops& o);           // ... writes it before it returns
  void resync(ops& o, const std::string& id);
  void drain_spawns();
  void remember_finished(std::shared_ptr<const aise::task> t);
  std::optional<aise::task> spawn_view(const std::string& id) const;
  void make_ready(ops& o, task_entry& e);
  void enqueue_ready(task_entry& e);
  void queue_and_dispatch(ops& o, task_entry& e);  // e is queued in the store
  // `t`: the task to run (for the router), when known.
  agent_entry* pick_agent(const std::string& capability, const aise::task* t = nullptr);
  void observe_attempt(const task_entry& e, bool succeeded);
  void dispatch(ops& o, const std::string& capability);
  void dispatch_for(ops& o, const agent_entry& a);
  bool start_attempt(ops& o, task_entry& e, agent_entry& a);
  // Distribution (options.dispatcher): hand-off, outcomes, lease sweep.
  [[nodiscard]] bool serves_remote(const std::string& capability) const;
  std::shared_ptr<const std::map<std::string, nlohmann::json>> dep_snapshot(task_entry& e);
  bool start_remote(ops& o, task_entry& e);
  void adopt_remote(task_entry& e);  // a running remote attempt found by recover()
  void queue_handoff(ops& o, const task_entry& e);
  void end_remote(ops& o, task_entry& e);  // from release_slot
  void revoke_remote(const lease_key& key);
  void on_remote_outcome(task_outcome out);
  void on_remote_lost(const lease_key& key, aise::error why, bool revoke);
  void sweep_leases();
  void schedule_sweep();
  bool finish_attempt(ops& o, task_entry& e, std::optional<nlohmann::json> value,
                      std::optional<aise::error> failure, bool retryable, bool escalate = false);
  bool abort_task(ops& o, task_entry& e, task_state to, aise::error why);
  void end_doomed(ops& o, const std::vector<std::pair<std::string, aise::error>>& doomed);
  // Frees the agent slot of e's attempt; returns that agent's entry, if any.
  agent_entry* release_slot(ops& o, task_entry& e, bool redispatch);
  // Sets the token's flag now (so it is set before the change is visible)
  // and runs its callbacks after the lock is released.
  static void cancel_token(ops& o, const cancellation_token& token);
  static void abort_run(ops& o, task_entry& e);
  void on_terminal(ops& o, const std::string& task_id);  // may be the entry's own id
  void on_timeout(const std::string& id, int attempt);
  void on_retry_due(const std::string& id, int attempt);
  void on_deadline(const std::string& id);
  duration retry_backoff(int attempt);
  void emit(event ev);
  void deliver_events();
  void agent_event(ops& o, const agent_entry& a, const std::string& type, nlohmann::json data);
  void on_agent_exit(const agent_exit& ex);
  result<std::string> start_agent(const std::string& name, bool restart);
  void index_agent(agent_entry& a);
  void unindex_agent(const agent_entry& a);
  agent_status status_of(const agent_entry& a) const;
  void checkpoint(agent& a);

  std::shared_ptr<aise::store> store_;
  mutable std::mutex mutex_;
  std::unordered_set<std::string> remote_running_;  // ids of handed-over running attempts
  std::uint64_t sweep_timer_ = 0;
  std::unordered_map<std::string, task_entry> tasks_;
  std::unordered_map<std::string, std::set<ready_key>> ready_;
  std::map<std::string, agent_entry, std::less<>> agents_;
  std::unordered_map<std::string, std::vector<agent_entry*>> capable_;
  std::map<std::string, agent_factory, std::less<>> kinds_;
  std::unordered_map<std::string, std::size_t> name_counters_;
  std::uint64_t next_seq_ = 1;
  std::mt19937_64 rng_;
  std::size_t exit_listener_ = 0;
  bool closed_ = false;
  bool recovered_ = false;

  // The orchestrator's own thread (orchestrator_threading::own_thread).
  // Work posted to it captures weak pointers only, so a queue that outlives
  // the thread never keeps the orchestrator alive.
  std::unique_ptr<boost::asio::io_context> engine_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>>
      engine_guard_;
  std::thread engine_thread_;
  std::thread::id engine_id_;  // set once, before any work is posted

  // Subtasks on their way to the orchestrator's thread (spawn_subtask).
  // Lock order: mutex_ before spawn_mutex_.
  mutable std::mutex spawn_mutex_;
  std::vector<task_spec> spawn_queue_;
  // Ids queued or being submitted, with the when_done callbacks waiting.
  std::unordered_map<std::string, std::vector<std::function<void(const task&)>>> spawning_;
  std::map<std::string, aise::task> failed_spawns_;   // refused on the way; bounded
  std::unordered_map<std::string, int> spawn_tries_;  // orchestrator's thread only
  bool spawn_drain_posted_ = false;
  bool spawn_closed_ = false;
  std::atomic<int> engine_queued_{0};  // posted to the thread, not yet run

  // The group-commit batch (mutex_): changes in the order they were made,
  // the events to announce after the write, the actions to run after it.
  struct announcement {
    std::optional<event> via;
    std::optional<event> main;
  };
  std::vector<task_update> batch_;
  std::vector<announcement> batch_events_;
  std::vector<std::function<void()>> batch_after_;
  // Tasks that finished lately (own thread only; see remember_finished).
  struct finished_entry {
    std::shared_ptr<const aise::task> task;
    std::uint64_t generation = 0;  // of the batch holding its last change; 0: written
  };
  std::unordered_map<std::string, finished_entry> finished_;
  std::deque<std::string> finished_order_;
  std::uint64_t written_generation_ = 0;  // batches up to this one are in the store
  std::uint64_t batch_generation_ = 0;    // batches taken for writing so far
  bool flush_in_flight_ = false;          // a batch is being written without the lock
  std::condition_variable flush_cv_;
  bool flush_scheduled_ = false;  // a flush_turn is posted or its retry timer armed
  int flush_failures_ = 0;        // in a row; > 0: no new attempts start
  int flush_yields_ = 0;          // flush_turn let waiting work go first, in a row
  void finish_completion(const std::shared_ptr<task_run>& run, std::optional<nlohmann::json> value,
                         std::optional<aise::error> failure, bool retryable, bool escalate = false);

  // Live event delivery (the store's event log is the source of truth).
  std::mutex events_mutex_;
  std::deque<event> outbox_;
  bool delivering_ = false;
  struct listener_entry {
    event_listener fn;
    std::atomic<bool> active{true};
  };
  std::size_t next_listener_ = 1;
  std::vector<std::pair<std::size_t, std::shared_ptr<listener_entry>>> listeners_;
  std::mutex delivery_mutex_;  // held while listeners run
  std::atomic<std::thread::id> delivering_thread_{};
  std::atomic<bool> has_listeners_{false};
  std::uint64_t dropped_events_ = 0;
};

}  // namespace aise::detail
