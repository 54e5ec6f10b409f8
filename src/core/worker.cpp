// aise::worker: runs attempts handed over by another process's orchestrator
// (include/aise/worker.hpp, docs/distribution.md).
//
// Threads: the source calls in on its thread (deliveries, cancel notices);
// store writes run on a small pool (acquire, finish, renew, snapshots);
// handlers run on the runtime's executors. One mutex guards the state; no
// store call, source call or user code runs under it.
#include <aise/runtime.hpp>
#include <aise/worker.hpp>

#include <algorithm>
#include <array>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <condition_variable>
#include <deque>
#include <fmt/format.h>
#include <map>
#include <mutex>
#include <set>
#include <spdlog/spdlog.h>
#include <stdexcept>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <vector>

#include "agent_core.hpp"
#include "orchestrator_impl.hpp"
#include "runtime_impl.hpp"

namespace aise::detail {

namespace {

std::string default_worker_id() {
  std::array<char, 256> host{};
  if (::gethostname(host.data(), host.size() - 1) != 0) host[0] = '\0';
  return fmt::format("{}-{}", host[0] != '\0' ? host.data() : "worker", ::getpid());
}

std::string key_string(const std::string& task_id, int attempt) {
  return fmt::format("{}#{}", task_id, attempt);
}

const std::string& capability_of(const aise::task& t) {
  return t.capability.empty() ? t.kind : t.capability;
}

constexpr auto restart_initial = std::chrono::milliseconds(100);
constexpr auto restart_max = std::chrono::milliseconds(5000);

}  // namespace

class worker_impl : public run_owner, public std::enable_shared_from_this<worker_impl> {
 public:
  worker_impl(runtime& r, worker_options o)
      : rt_(r), rti_(r.impl()), options_(std::move(o)), pool_(options_.store_threads) {}

  ~worker_impl() override { pool_.join(); }

  result<void> add_agents(std::string kind, agent_factory factory, std::size_t count,
                          std::size_t concurrency) {
    if (kind.empty() || !factory || count == 0 || concurrency == 0) {
      return error(errc::invalid_argument,
                   "add_agents: a kind, a factory, count >= 1 and concurrency >= 1 are required");
    }
    // One instance now, to learn the kind's capabilities; it becomes agent 1.
    std::unique_ptr<agent> first;
    try {
      first = factory();
    } catch (const std::exception& e) {
      return error(errc::handler_failed, fmt::format("factory of '{}' threw: {}", kind, e.what()));
    }
    if (!first)
      return error(errc::handler_failed, fmt::format("factory of '{}' returned null", kind));
    std::lock_guard lock(mutex_);
    if (started_) return error(errc::invalid_argument, "add_agents: the worker already started");
    if (kinds_.count(kind) != 0) {
      return error(errc::already_exists, fmt::format("kind '{}' is added already", kind));
    }
    kinds_.insert(kind);
    std::vector<std::string> caps(first->capabilities().begin(), first->capabilities().end());
    for (std::size_t n = 1; n <= count; ++n) {
      slot s;
      s.name = fmt::format("{}.{}-{}", options_.id, kind, n);
      s.kind = kind;
      s.factory = factory;
      s.concurrency = concurrency;
      s.capabilities = caps;
      if (n == 1) s.first = std::move(first);
      slots_.push_back(std::move(s));
    }
    return {};
  }

  std::vector<std::string> capabilities() const {
    std::lock_guard lock(mutex_);
    std::set<std::string> caps;
    for (const auto& s : slots_) caps.insert(s.capabilities.begin(), s.capabilities.end());
    return {caps.begin(), caps.end()};
  }

  result<void> start() {
    std::size_t total_slots = 0;
    {
      std::lock_guard lock(mutex_);
      if (started_) return error(errc::already_exists, "the worker already started");
      if (slots_.empty()) return error(errc::invalid_argument, "the worker has no agents");
      started_ = true;
      started_at_ = rt_.clock().now();
      for (const auto& s : slots_) total_slots += s.concurrency;
    }
    std::weak_ptr<worker_impl> weak = weak_from_this();
    exit_listener_ = rt_.on_agent_exit([weak](const agent_exit& ex) {
      if (auto self = weak.lock()) self->on_agent_exit(ex);
    });
    for (std::size_t i = 0; i < slot_count(); ++i) {
      if (auto r = spawn_slot(i); !r) {
        rt_.logger().error("worker {}: agent not started: {}", options_.id, r.error().describe());
      }
    }
    source_callbacks cb;
    cb.delivery = [weak](task_handoff h, std::unique_ptr<task_delivery> d) {
      auto self = weak.lock();
      if (!self) return;  // the delivery, destroyed unsettled, goes back
      self->on_delivery(std::move(h), std::shared_ptr<task_delivery>(std::move(d)));
    };
    cb.cancel = [weak](lease_key key) {
      if (auto self = weak.lock()) {
        self->abort(key, "cancelled by the orchestrator", /*count_lost=*/false);
      }
    };
    const std::size_t prefetch = options_.prefetch != 0 ? options_.prefetch : 2 * total_slots;
    if (auto r = options_.source->start(capabilities(), prefetch, std::move(cb)); !r) {
      return error(errc::unavailable, fmt::format("worker {}: the task source did not start: {}",
                                                  options_.id, r.error().message()));
    }
    report_agents(false);
    schedule_heartbeat();
    return {};
  }

  void stop(std::chrono::milliseconds grace) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      stopping_ = true;
      if (heartbeat_timer_ != 0) rt_.cancel_timer(heartbeat_timer_);
      heartbeat_timer_ = 0;
    }
    options_.source->stop();  // no more deliveries; unacknowledged ones go back
    std::vector<lease_key> release;
    {
      std::unique_lock lock(mutex_);
      // Attempts being leased right now are settled by their acquire.
      cv_.wait_for(lock, grace, [this] { return runs_.empty() && acquiring_ == 0; });
      for (auto& [k, r] : runs_) {
        if (r.finishing) continue;  // recorded or being recorded: nothing to give back
        release.push_back(lease_key{r.task_id, r.attempt});
      }
    }
    for (const auto& key : release) abort(key, "the worker is stopping", false);
    const time_point now = rt_.clock().now();
    for (const auto& key : release) {
      auto ended = options_.store->end_lease(key, lease_state::lost, now, false);
      if (ended && ended->state == lease_state::lost) {
        std::lock_guard lock(mutex_);
        ++stats_.released;
      } else if (!ended) {
        rt_.logger().warn("worker {}: lease of {} attempt {} not released ({}); it expires",
                          options_.id, key.task_id, key.attempt, ended.error().describe());
      }
    }
    {
      // Finishes in flight get a moment more to be recorded.
      std::unique_lock lock(mutex_);
      cv_.wait_for(lock, std::chrono::seconds(5), [this] { return runs_.empty(); });
    }
    bool started = false;
    {
      std::lock_guard lock(mutex_);
      started = started_;
    }
    if (started) rt_.remove_exit_listener(exit_listener_);
    std::vector<std::string> names;
    {
      std::lock_guard lock(mutex_);
      for (auto& s : slots_) {
        if (s.restart_timer != 0) rt_.cancel_timer(s.restart_timer);
        s.restart_timer = 0;
        if (s.instance) names.push_back(s.name);
        s.instance.reset();
      }
    }
    for (const auto& n : names) (void)rt_.stop(n);
    pool_.join();
    if (started) report_agents(true);
  }

  worker_stats stats() const {
    std::lock_guard lock(mutex_);
    worker_stats s = stats_;
    s.running = runs_.size();
    return s;
  }

  const std::string& id() const noexcept { return options_.id; }

  // ---- run_owner ----
  result<void> complete(const std::shared_ptr<task_run>& run, std::optional<nlohmann::json> value,
                        std::optional<aise::error> failure, bool retryable,
                        bool escalate) override {
    bool expected = false;
    if (!run->done.compare_exchange_strong(expected, true)) {
      if (run->aborted.load()) {
        return error(errc::cancelled,
                     fmt::format("attempt {} of task {} was cancelled, timed out or lost",
                                 run->task.attempt, run->task.id));
      }
      return error(errc::conflict, fmt::format("attempt {} of task {} is already complete",
                                               run->task.attempt, run->task.id));
    }
    task_outcome out;
    out.task_id = run->task.id;
    out.attempt = run->task.attempt;
    out.worker = options_.id;
    out.agent = run->runner ? run->runner->name() : std::string();
    if (!failure) {
      out.state = task_state::succeeded;
      out.result = value ? std::move(value) : std::optional<nlohmann::json>(nullptr);
    } else {
      out.state = escalate ? task_state::awaiting_approval : task_state::failed;
      out.error = std::move(failure);
      out.retryable = retryable;
    }
    if (run->async && run->runner) {
      agent_core& core = agent_access::core(*run->runner);
      if (core.checkpoint_hook) rti_.post_job(*run->runner, [&core] { core.checkpoint_hook(); });
    }
    release_slot(out.task_id, out.attempt);
    record(std::move(out));
    return {};
  }

  result<std::string> spawn_subtask(task_spec) override {
    return error(errc::unavailable,
                 "subtasks (task_context::spawn) are not available yet for attempts run by an "
                 "aise::worker; see docs/distribution.md");
  }

  result<void> when_done(std::string_view, std::function<void(const task&)>,
                         std::shared_ptr<std::atomic<bool>>) override {
    return error(errc::unavailable,
                 "when_all is not available yet for attempts run by an aise::worker; see "
                 "docs/distribution.md");
  }

  void run_dropped(const std::string& id, int attempt) override {
    // ~task_run: the run is gone, so its outcome is built from what we kept.
    std::string agent_name;
    {
      std::lock_guard lock(mutex_);
      auto it = runs_.find(key_string(id, attempt));
      if (it == runs_.end() || it->second.finishing) return;
      agent_name = it->second.agent;
    }
    task_outcome out;
    out.task_id = id;
    out.attempt = attempt;
    out.worker = options_.id;
    out.agent = agent_name;
    out.state = task_state::failed;
    out.error = error(errc::handler_failed, "the handler dropped the task without completing it");
    release_slot(id, attempt);
    record(std::move(out));
  }

 private:
  struct slot {
    std::string name;
    std::string kind;
    agent_factory factory;
    std::unique_ptr<agent> first;  // made by add_agents, spawned by start
    std::size_t concurrency = 1;
    std::vector<std::string> capabilities;
    std::shared_ptr<agent> instance;  // null while (re)starting
    std::size_t running = 0;
    int failures = 0;  // in a row, for the restart backoff
    int restarts = 0;
    std::uint64_t restart_timer = 0;
  };
  struct active {
    std::string task_id;
    int attempt = 0;
    std::weak_ptr<task_run> run;
    cancellation_token token;
    std::string agent;       // empty while waiting for a free agent
    bool finishing = false;  // completed here: its outcome is being recorded
  };

  std::size_t slot_count() const {
    std::lock_guard lock(mutex_);
    return slots_.size();
  }

  result<void> spawn_slot(std::size_t index) {
    std::unique_ptr<agent> instance;
    agent_factory factory;
    std::string name;
    std::string kind;
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return {};
      slot& s = slots_[index];
      s.restart_timer = 0;
      instance = std::move(s.first);
      factory = s.factory;
      name = s.name;
      kind = s.kind;
    }
    if (!instance) {
      try {
        instance = factory();
      } catch (const std::exception& e) {
        return error(errc::handler_failed,
                     fmt::format("factory of '{}' threw: {}", kind, e.what()));
      }
      if (!instance)
        return error(errc::handler_failed, fmt::format("factory of '{}' returned null", kind));
    }
    std::optional<nlohmann::json> restore;
    if (auto snap = options_.store->load_snapshot(name)) {
      restore = std::move(snap->state);
    } else if (snap.error().code() != errc::not_found) {
      rt_.logger().warn("worker {}: snapshot of '{}' not loaded: {}", options_.id, name,
                        snap.error().describe());
    }
    agent* raw = instance.get();
    std::weak_ptr<worker_impl> weak = weak_from_this();
    auto hook = [weak, raw] {
      if (auto self = weak.lock()) self->checkpoint(*raw);
    };
    auto spawned = rti_.spawn(std::move(instance), spawn_options{name, kind, options_.project, 0},
                              std::move(restore), hook);
    if (!spawned) return spawned.error();
    std::vector<std::shared_ptr<task_run>> to_post;
    {
      std::lock_guard lock(mutex_);
      slots_[index].instance = rti_.find(name);
      if (slots_[index].instance) take_waiting(to_post);
    }
    post_all(std::move(to_post));
    return {};
  }

  void checkpoint(agent& a) {
    nlohmann::json state = agent_access::snapshot(a);
    if (state.is_null()) return;
    agent_snapshot s;
    s.agent_id = a.name();
    s.taken_at = rt_.clock().now();
    s.state = std::move(state);
    boost::asio::post(pool_, [self = shared_from_this(), s = std::move(s)]() mutable {
      const std::string name = s.agent_id;
      if (auto r = self->options_.store->save_snapshot(std::move(s)); !r) {
        self->rt_.logger().error("worker {}: snapshot of '{}' not saved: {}", self->options_.id,
                                 name, r.error().describe());
      }
    });
  }

  void on_agent_exit(const agent_exit& ex) {
    std::vector<std::shared_ptr<task_run>> lost;
    std::size_t index = 0;
    bool ours = false;
    {
      std::lock_guard lock(mutex_);
      for (std::size_t i = 0; i < slots_.size(); ++i) {
        if (slots_[i].name != ex.name) continue;
        ours = true;
        index = i;
        slots_[i].instance.reset();
        for (auto& [k, r] : runs_) {
          if (r.agent != ex.name || r.finishing) continue;
          if (auto run = r.run.lock()) lost.push_back(std::move(run));
        }
      }
    }
    bool restart = false;
    {
      std::lock_guard lock(mutex_);
      restart = ours && !stopping_;
    }
    for (auto& run : lost) {
      (void)complete(run, std::nullopt,
                     error(errc::unavailable,
                           fmt::format("agent '{}' {}", ex.name, ex.failed ? "failed" : "stopped")),
                     true, false);
    }
    if (!restart) return;
    std::lock_guard lock(mutex_);
    slot& s = slots_[index];
    s.failures = ex.failed ? s.failures + 1 : 0;
    ++s.restarts;
    auto delay = restart_initial * (1LL << std::min(s.failures, 6));
    delay = std::min<std::chrono::milliseconds>(delay, restart_max);
    std::weak_ptr<worker_impl> weak = weak_from_this();
    s.restart_timer = rt_.schedule(delay, [weak, index] {
      auto self = weak.lock();
      if (!self) return;
      boost::asio::post(self->pool_, [weak, index] {
        if (auto again = weak.lock()) {
          if (auto r = again->spawn_slot(index); !r) {
            again->rt_.logger().error("worker {}: agent restart failed: {}", again->options_.id,
                                      r.error().describe());
          }
        }
      });
    });
  }

  void on_delivery(task_handoff h, std::shared_ptr<task_delivery> d) {
    const lease_key key{h.task.id, h.task.attempt};
    const std::string k = key_string(key.task_id, key.attempt);
    {
      std::lock_guard lock(mutex_);
      ++stats_.received;
      if (stopping_) {
        d->requeue();
        return;
      }
      if (runs_.count(k) != 0 || acquiring_keys_.count(k) != 0) {
        ++stats_.duplicates;  // delivered again while we hold it
        d->ack();
        return;
      }
      acquiring_keys_.insert(k);
      ++acquiring_;
    }
    enqueue_acquire(pending_acquire{std::move(h), std::move(d), std::chrono::milliseconds(100)});
  }

  // ---- the lease writer ----
  // Lease writes are batched: deliveries and outcomes that arrive while a
  // batch is being written wait for the next one, so under load a single
  // transaction (one commit) takes or finishes many leases
  // (store::acquire_leases / finish_leases). One batch is written at a time.
  struct pending_acquire {
    task_handoff h;
    std::shared_ptr<task_delivery> d;
    std::chrono::milliseconds backoff;
  };
  static constexpr std::size_t max_batch = 512;

  void enqueue_acquire(pending_acquire a) {
    {
      std::lock_guard lock(mutex_);
      acquire_queue_.push_back(std::move(a));
    }
    kick_writer();
  }

  void enqueue_finish(task_outcome out) {
    {
      std::lock_guard lock(mutex_);
      finish_queue_.push_back(std::move(out));
    }
    kick_writer();
  }

  void kick_writer() {
    {
      std::lock_guard lock(mutex_);
      if (writing_ || (acquire_queue_.empty() && finish_queue_.empty())) return;
      writing_ = true;
    }
    boost::asio::post(pool_, [self = shared_from_this()] { self->write_batches(); });
  }

  void write_batches() {
    for (;;) {
      std::vector<pending_acquire> acquires;
      std::vector<task_outcome> finishes;
      {
        std::lock_guard lock(mutex_);
        const std::size_t na = std::min(acquire_queue_.size(), max_batch);
        acquires.assign(
            std::make_move_iterator(acquire_queue_.begin()),
            std::make_move_iterator(acquire_queue_.begin() + static_cast<std::ptrdiff_t>(na)));
        acquire_queue_.erase(acquire_queue_.begin(),
                             acquire_queue_.begin() + static_cast<std::ptrdiff_t>(na));
        const std::size_t nf = std::min(finish_queue_.size(), max_batch);
        finishes.assign(
            std::make_move_iterator(finish_queue_.begin()),
            std::make_move_iterator(finish_queue_.begin() + static_cast<std::ptrdiff_t>(nf)));
        finish_queue_.erase(finish_queue_.begin(),
                            finish_queue_.begin() + static_cast<std::ptrdiff_t>(nf));
        if (acquires.empty() && finishes.empty()) {
          writing_ = false;
          return;
        }
      }
      if (!finishes.empty()) finish_batch(std::move(finishes));
      if (!acquires.empty()) acquire_batch(std::move(acquires));
    }
  }

  void acquire_batch(std::vector<pending_acquire> batch) {
    std::vector<lease_key> keys;
    keys.reserve(batch.size());
    for (const auto& a : batch) keys.push_back(lease_key{a.h.task.id, a.h.task.attempt});
    auto leases =
        options_.store->acquire_leases(keys, options_.id, rt_.clock().now(), options_.lease_ttl);
    for (std::size_t i = 0; i < batch.size(); ++i) {
      result<task_lease> lease = i < leases.size()
                                     ? std::move(leases[i])
                                     : result<task_lease>(error(errc::internal, "no result"));
      acquired(std::move(batch[i]), std::move(lease));
    }
  }

  void acquired(pending_acquire a, result<task_lease> lease) {
    task_handoff& h = a.h;
    std::shared_ptr<task_delivery>& d = a.d;
    const std::chrono::milliseconds backoff = a.backoff;
    const lease_key key{h.task.id, h.task.attempt};
    const std::string k = key_string(key.task_id, key.attempt);
    if (!lease && lease.error().code() == errc::unavailable) {
      bool stop = false;
      {
        std::lock_guard lock(mutex_);
        stop = stopping_;
      }
      if (stop) {
        d->requeue();
        done_acquiring(k);
        return;
      }
      rt_.logger().warn("worker {}: lease of {} attempt {} not taken ({}); again in {} ms",
                        options_.id, key.task_id, key.attempt, lease.error().message(),
                        backoff.count());
      std::weak_ptr<worker_impl> weak = weak_from_this();
      rt_.schedule(backoff, [weak, a = std::move(a)]() mutable {
        if (auto self = weak.lock()) {
          a.backoff = std::min<std::chrono::milliseconds>(a.backoff * 2, restart_max);
          self->enqueue_acquire(std::move(a));
        }
      });
      return;
    }
    d->ack();  // the lease is durable (or the store refused it for good)
    if (lease) {
      bool stop = false;
      {
        std::lock_guard lock(mutex_);
        stop = stopping_;
      }
      if (stop) {
        // Taken while the worker was stopping: given back at once, so
        // another worker runs it without waiting for the lease to expire.
        auto ended = options_.store->end_lease(key, lease_state::lost, rt_.clock().now(), false);
        std::lock_guard lock(mutex_);
        if (ended && ended->state == lease_state::lost) ++stats_.released;
        --acquiring_;
        acquiring_keys_.erase(k);
        cv_.notify_all();
        return;
      }
    }
    if (!lease) {
      std::lock_guard lock(mutex_);
      ++stats_.duplicates;
      --acquiring_;
      acquiring_keys_.erase(k);
      cv_.notify_all();
      return;
    }
    auto run = std::make_shared<task_run>();
    run->owner = weak_from_this();
    run->task = std::move(h.task);
    run->dep_results = std::make_shared<const std::map<std::string, nlohmann::json>>(
        std::move(h.dependency_results));
    std::vector<std::shared_ptr<task_run>> to_post;
    {
      std::lock_guard lock(mutex_);
      ++stats_.leased;
      --acquiring_;
      acquiring_keys_.erase(k);
      active a;
      a.task_id = key.task_id;
      a.attempt = key.attempt;
      a.run = run;
      a.token = run->token;
      runs_.emplace(k, std::move(a));
      waiting_.push_back(std::move(run));
      take_waiting(to_post);
      cv_.notify_all();
    }
    post_all(std::move(to_post));
  }

  void done_acquiring(const std::string& k) {
    std::lock_guard lock(mutex_);
    --acquiring_;
    acquiring_keys_.erase(k);
    cv_.notify_all();
  }

  // Moves waiting runs onto free agents (mutex_ held); the caller posts them.
  void take_waiting(std::vector<std::shared_ptr<task_run>>& out) {
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      const std::string& cap = capability_of((*it)->task);
      slot* best = nullptr;
      for (auto& s : slots_) {
        if (!s.instance || s.running >= s.concurrency) continue;
        if (std::find(s.capabilities.begin(), s.capabilities.end(), cap) == s.capabilities.end())
          continue;
        if (best == nullptr || s.running < best->running) best = &s;
      }
      if (best == nullptr) {
        ++it;
        continue;
      }
      auto r = runs_.find(key_string((*it)->task.id, (*it)->task.attempt));
      if (r == runs_.end() || r->second.finishing) {  // aborted while waiting
        it = waiting_.erase(it);
        continue;
      }
      ++best->running;
      r->second.agent = best->name;
      (*it)->runner = best->instance;
      out.push_back(std::move(*it));
      it = waiting_.erase(it);
    }
  }

  void post_all(std::vector<std::shared_ptr<task_run>> runs) {
    for (auto& run : runs) {
      auto keep = run;  // a refused job drops its copy; this one reports the failure
      if (!post_run(rti_, std::move(run))) {
        (void)complete(
            keep, std::nullopt,
            error(errc::unavailable, fmt::format("agent '{}' stopped", keep->runner->name())), true,
            false);
      }
    }
  }

  void release_slot(const std::string& task_id, int attempt) {
    std::vector<std::shared_ptr<task_run>> to_post;
    {
      std::lock_guard lock(mutex_);
      auto it = runs_.find(key_string(task_id, attempt));
      if (it == runs_.end() || it->second.finishing) return;
      it->second.finishing = true;
      for (auto& s : slots_) {
        if (s.name == it->second.agent && s.running > 0) --s.running;
      }
      take_waiting(to_post);
    }
    post_all(std::move(to_post));
  }

  // Records an outcome in the lease (batched), then reports it; a store
  // that is away is tried again every second (the lease is renewed
  // meanwhile).
  void record(task_outcome out) { enqueue_finish(std::move(out)); }

  void finish_batch(std::vector<task_outcome> batch) {
    std::vector<store::lease_outcome> items;
    items.reserve(batch.size());
    for (const auto& out : batch) {
      items.push_back(store::lease_outcome{lease_key{out.task_id, out.attempt}, to_json(out)});
    }
    auto results = options_.store->finish_leases(items, options_.id, rt_.clock().now());
    for (std::size_t i = 0; i < batch.size(); ++i) {
      result<task_lease> done = i < results.size()
                                    ? std::move(results[i])
                                    : result<task_lease>(error(errc::internal, "no result"));
      finished(std::move(batch[i]), std::move(done));
    }
  }

  void finished(task_outcome out, result<task_lease> done) {
    const lease_key key{out.task_id, out.attempt};
    if (!done && done.error().code() == errc::unavailable) {
      std::weak_ptr<worker_impl> weak = weak_from_this();
      rt_.schedule(std::chrono::seconds(1), [weak, out = std::move(out)]() mutable {
        if (auto self = weak.lock()) self->enqueue_finish(std::move(out));
      });
      return;
    }
    if (done) {
      {
        std::lock_guard lock(mutex_);
        if (out.state == task_state::succeeded) {
          ++stats_.succeeded;
        } else if (out.state == task_state::awaiting_approval) {
          ++stats_.escalated;
        } else {
          ++stats_.failed;
        }
      }
      // Reported from the pool, so that the writer goes on with the next
      // batch while confirms are awaited.
      boost::asio::post(pool_, [self = shared_from_this(), out = std::move(out)] {
        if (auto r = self->options_.source->report(out); !r) {
          self->rt_.logger().warn(
              "worker {}: outcome of {} attempt {} recorded, not reported ({}); the "
              "orchestrator's lease sweep applies it",
              self->options_.id, out.task_id, out.attempt, r.error().message());
          std::lock_guard lock(self->mutex_);
          ++self->stats_.report_failures;
        }
      });
    } else {
      rt_.logger().info("worker {}: outcome of {} attempt {} does not count: {}", options_.id,
                        key.task_id, key.attempt, done.error().message());
    }
    std::lock_guard lock(mutex_);
    if (!done) ++stats_.lost;
    runs_.erase(key_string(key.task_id, key.attempt));
    cv_.notify_all();
  }

  // Stops an attempt whose lease is gone (or the orchestrator cancelled it):
  // its token is set and its completion will not count.
  void abort(const lease_key& key, const char* why, bool count_lost) {
    std::shared_ptr<task_run> run;
    std::optional<cancellation_token> token;
    {
      std::lock_guard lock(mutex_);
      auto it = runs_.find(key_string(key.task_id, key.attempt));
      if (it == runs_.end() || it->second.finishing) return;
      run = it->second.run.lock();
      token = it->second.token;
      if (count_lost) ++stats_.lost;
    }
    rt_.logger().info("worker {}: {} attempt {}: {}", options_.id, key.task_id, key.attempt, why);
    if (run) {
      run->aborted.store(true);
      run->done.store(true);
    }
    release_slot(key.task_id, key.attempt);
    {
      std::lock_guard lock(mutex_);
      runs_.erase(key_string(key.task_id, key.attempt));
      waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), run), waiting_.end());
      cv_.notify_all();
    }
    if (token) token->cancel();
  }

  void schedule_heartbeat() {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    std::weak_ptr<worker_impl> weak = weak_from_this();
    heartbeat_timer_ = rt_.schedule(options_.heartbeat_interval, [weak] {
      auto self = weak.lock();
      if (!self) return;
      boost::asio::post(self->pool_, [weak] {
        if (auto again = weak.lock()) again->heartbeat();
      });
    });
  }

  // Agent records with the heartbeat: status "remote" (alive in a worker
  // process; an orchestrator's recover() never spawns those) or "stopped".
  void report_agents(bool stopped) {
    std::vector<agent_record> records;
    const time_point now = rt_.clock().now();
    {
      std::lock_guard lock(mutex_);
      for (const auto& s : slots_) {
        agent_record r;
        r.id = s.name;
        r.project = options_.project;
        r.kind = s.kind;
        r.capabilities = s.capabilities;
        r.status = stopped ? "stopped" : "remote";
        r.restarts = s.restarts;
        r.last_heartbeat = now;
        r.created_at = started_at_;
        records.push_back(std::move(r));
      }
    }
    for (auto& r : records) {
      if (auto put = options_.store->put_agent(std::move(r)); !put) {
        rt_.logger().warn("worker {}: agent record not written: {}", options_.id,
                          put.error().describe());
        return;
      }
    }
  }

  void heartbeat() {
    std::vector<lease_key> keys;
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      keys.reserve(runs_.size());
      for (const auto& [k, r] : runs_) keys.push_back(lease_key{r.task_id, r.attempt});
    }
    report_agents(false);
    if (!keys.empty()) {
      auto lost =
          options_.store->renew_leases(options_.id, keys, rt_.clock().now(), options_.lease_ttl);
      if (!lost) {
        rt_.logger().warn("worker {}: leases not renewed: {}", options_.id,
                          lost.error().describe());
      } else {
        for (const auto& key : *lost) abort(key, "its lease was lost or revoked", true);
      }
    }
    schedule_heartbeat();
  }

  runtime& rt_;
  runtime_impl& rti_;
  worker_options options_;
  boost::asio::thread_pool pool_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::set<std::string> kinds_;
  std::vector<slot> slots_;
  std::unordered_map<std::string, active> runs_;   // leased, by "task#attempt"
  std::deque<std::shared_ptr<task_run>> waiting_;  // leased, no free agent yet
  std::set<std::string> acquiring_keys_;
  std::deque<pending_acquire> acquire_queue_;  // the lease writer's input
  std::deque<task_outcome> finish_queue_;
  bool writing_ = false;  // a write_batches is running
  std::size_t acquiring_ = 0;
  worker_stats stats_;
  std::size_t exit_listener_ = 0;
  std::uint64_t heartbeat_timer_ = 0;
  bool started_ = false;
  bool stopping_ = false;
  time_point started_at_{};
};

}  // namespace aise::detail

namespace aise {

worker::worker(runtime& rt, worker_options options) {
  if (!options.store) throw std::invalid_argument("worker_options: a store is required");
  if (!options.source) throw std::invalid_argument("worker_options: a task source is required");
  if (options.lease_ttl <= duration::zero() || options.heartbeat_interval <= duration::zero() ||
      options.heartbeat_interval * 2 >= options.lease_ttl) {
    throw std::invalid_argument("worker_options: need 0 < heartbeat_interval < lease_ttl / 2");
  }
  if (options.store_threads == 0) throw std::invalid_argument("worker_options: store_threads >= 1");
  if (options.id.empty()) options.id = detail::default_worker_id();
  impl_ = std::make_shared<detail::worker_impl>(rt, std::move(options));
}

worker::~worker() {
  impl_->stop(std::chrono::milliseconds(0));
}

result<void> worker::add_agents(std::string kind, agent_factory factory, std::size_t count,
                                std::size_t concurrency) {
  return impl_->add_agents(std::move(kind), std::move(factory), count, concurrency);
}

result<void> worker::start() {
  return impl_->start();
}

void worker::stop(std::chrono::milliseconds grace) {
  impl_->stop(grace);
}

worker_stats worker::stats() const {
  return impl_->stats();
}

const std::string& worker::id() const noexcept {
  return impl_->id();
}

std::vector<std::string> worker::capabilities() const {
  return impl_->capabilities();
}

}  // namespace aise
