#include <aise/runtime.hpp>

#include <algorithm>
#include <array>
#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <future>
#include <spdlog/logger.h>
#include <thread>

#include "agent_core.hpp"
#include "orchestrator_impl.hpp"
#include "runtime_impl.hpp"

namespace aise::detail {

namespace {
// Live delivery keeps at most this many undelivered events; beyond it the
// oldest are dropped (listeners see the gap in `sequence` and can read the
// missing ones from the store's event log).
constexpr std::size_t max_outbox = 65536;

// "task.<state>" for each state, built once (no formatting on the hot path).
const std::string& event_type_of(task_state s) {
  static const std::array<std::string, 8> types = [] {
    std::array<std::string, 8> t;
    for (int i = 0; i < 8; ++i)
      t[i] = fmt::format("task.{}", to_string(static_cast<task_state>(i)));
    return t;
  }();
  return types[static_cast<std::size_t>(s)];
}

// {"attempt": n, "agent": name}, built without an initializer list (which
// nlohmann::json copies element by element).
nlohmann::json attempt_data(int attempt, const std::string& agent) {
  nlohmann::json d(nlohmann::json::value_t::object);
  d.emplace("attempt", attempt);
  d.emplace("agent", agent);
  return d;
}

nlohmann::json error_json(const aise::error& e) {
  return {{"code", to_string(e.code())}, {"message", e.message()}};
}
}  // namespace

task_run::~task_run() {
  if (done.exchange(true)) return;
  if (auto o = owner.lock()) {
    try {
      o->run_dropped(task.id, task.attempt);
    } catch (...) {  // NOLINT(bugprone-empty-catch): nothing may escape a destructor
    }
  }
}

// This may run under the orchestrator's lock (a job refused by a closed
// mailbox inside start_attempt): never re-enter it here, post instead.
void orchestrator_impl::run_dropped(const std::string& id, int attempt) {
  std::weak_ptr<orchestrator_impl> weak = weak_from_this();
  auto drop = [weak, id, attempt] {
    if (auto self = weak.lock()) self->drop_attempt(id, attempt);
  };
  if (has_engine()) {
    engine_call(std::move(drop));
  } else {
    boost::asio::post(rti.io(), std::move(drop));
  }
}

orchestrator_impl::ops::~ops() {
  if (park != nullptr && lock.owns_lock()) {
    // This call's changes are not written yet: its actions run after them.
    for (auto& fn : after) park->push_back(std::move(fn));
    after.clear();
  }
  if (lock.owns_lock()) lock.unlock();
  for (auto& fn : after) {
    try {
      fn();
    } catch (...) {  // NOLINT(bugprone-empty-catch): user callbacks must not throw; contained
    }
  }
}

orchestrator_impl::orchestrator_impl(runtime& r, orchestrator_options opts)
    : rt(r), rti(r.impl()), options(std::move(opts)) {
  if (options.default_concurrency == 0) {
    throw std::invalid_argument("orchestrator_options: default_concurrency must be >= 1");
  }
  if (options.retry_multiplier < 1.0 || options.restart_multiplier < 1.0) {
    throw std::invalid_argument("orchestrator_options: multipliers must be >= 1");
  }
  if (options.retry_jitter < 0.0 || options.retry_jitter > 1.0) {
    throw std::invalid_argument("orchestrator_options: retry_jitter must be within 0 … 1");
  }
  if (options.lease_check_interval <= duration::zero()) {
    throw std::invalid_argument("orchestrator_options: lease_check_interval must be > 0");
  }
  if (options.max_restarts < 0) {
    throw std::invalid_argument("orchestrator_options: max_restarts must be >= 0");
  }
  if (!options.store) options.store = make_memory_store(memory_store_options{rt.clock_ptr()});
  store_ = options.store;
  rng_.seed(options.seed != 0 ? options.seed : std::random_device{}());
  const bool own_thread =
      options.threading == orchestrator_threading::own_thread ||
      (options.threading == orchestrator_threading::automatic && store_->blocking());
  if (own_thread) {
    engine_ = std::make_unique<boost::asio::io_context>(1);
    engine_guard_.emplace(boost::asio::make_work_guard(*engine_));
    engine_thread_ = std::thread([io = engine_.get(), &log = rt.logger()] {
      for (;;) {
        try {
          io->run();
          return;
        } catch (const std::exception& e) {  // contained: the thread goes on
          log.error("orchestrator thread: {}", e.what());
        } catch (...) {
          log.error("orchestrator thread: unknown exception");
        }
      }
    });
    engine_id_ = engine_thread_.get_id();
  }
}

orchestrator_impl::~orchestrator_impl() {
  // close() joins the thread; this only covers a destruction without close().
  if (engine_thread_.joinable()) {
    engine_guard_.reset();
    if (engine_) engine_->stop();
    if (engine_thread_.get_id() == std::this_thread::get_id()) {
      engine_thread_.detach();
    } else {
      engine_thread_.join();
    }
  }
}

void orchestrator_impl::start() {
  std::weak_ptr<orchestrator_impl> weak = weak_from_this();
  exit_listener_ = rt.on_agent_exit([weak](const agent_exit& ex) {
    if (auto self = weak.lock()) {
      self->engine_call([weak, ex] {
        if (auto again = weak.lock()) again->on_agent_exit(ex);
      });
    }
  });
  if (options.dispatcher) {
    dispatch_callbacks cb;
    cb.outcome = [weak](task_outcome out) {
      if (auto self = weak.lock()) {
        self->engine_call([weak, out = std::move(out)]() mutable {
          if (auto again = weak.lock()) again->on_remote_outcome(std::move(out));
        });
      }
    };
    cb.undeliverable = [weak](lease_key key, aise::error why) {
      if (auto self = weak.lock()) {
        self->engine_call([weak, key = std::move(key), why = std::move(why)]() mutable {
          if (auto again = weak.lock()) again->on_remote_lost(key, std::move(why), true);
        });
      }
    };
    if (auto started = options.dispatcher->start(std::move(cb)); !started) {
      throw std::invalid_argument("orchestrator_options: the dispatcher did not start: " +
                                  started.error().describe());
    }
    std::lock_guard lock(mutex_);
    schedule_sweep();
  }
}

void orchestrator_impl::close() {
  rt.remove_exit_listener(exit_listener_);
  std::vector<std::string> names;
  std::vector<cancellation_token> tokens;
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
    {
      std::lock_guard spawn_lock(spawn_mutex_);
      spawn_closed_ = true;  // what is queued is still submitted (the thread drains it)
    }
    for (auto& [n, a] : agents_) {
      a.stop_for_good = true;
      if (a.restart_timer != 0) rt.cancel_timer(a.restart_timer);
      if (a.instance) names.push_back(n);
    }
    for (auto& [id, e] : tasks_) {
      for (auto t : {e.timeout_timer, e.retry_timer, e.deadline_timer}) {
        if (t != 0) rt.cancel_timer(t);
      }
      if (e.t.state == task_state::running && e.token) tokens.push_back(*e.token);
    }
  }
  for (auto& t : tokens) t.cancel();
  for (auto& n : names) (void)rt.stop(n);
  // The orchestrator's own thread finishes what was queued, then ends.
  if (engine_) {
    engine_guard_.reset();
    if (engine_thread_.joinable() && engine_thread_.get_id() != std::this_thread::get_id())
      engine_thread_.join();
    ops o(*this);
    if (!flush_locked(o)) {
      rt.logger().warn(
          "orchestrator closed with {} task changes the store did not take; the tasks "
          "resume from their stored state when the orchestrator recovers",
          batch_.size());
      // Callbacks that waited for them (when_done, cancellation) still run.
      o.after.insert(o.after.end(), std::make_move_iterator(batch_after_.begin()),
                     std::make_move_iterator(batch_after_.end()));
      batch_after_.clear();
      o.park = nullptr;
    }
  }
  if (options.dispatcher) {
    {
      std::lock_guard lock(mutex_);
      if (sweep_timer_ != 0) rt.cancel_timer(sweep_timer_);
      sweep_timer_ = 0;
    }
    // Attempts handed over keep running on their workers; the next
    // orchestrator's recover() adopts them.
    options.dispatcher->stop();
  }
  if (engine_) {
    // Subtasks still queued (a retry timer that will not fire now) end as
    // failed records, their waiters told.
    drain_spawns();
  }
}

// ----------------------------------------------------------------- agents --

result<void> orchestrator_impl::register_kind(std::string kind, agent_factory factory) {
  if (kind.empty()) return error(errc::invalid_argument, "register_kind: empty kind");
  if (!factory) return error(errc::invalid_argument, "register_kind: empty factory");
  std::lock_guard lock(mutex_);
  if (!kinds_.emplace(kind, std::move(factory)).second) {
    return error(errc::already_exists, fmt::format("agent kind '{}' is registered", kind));
  }
  return {};
}

std::vector<std::string> orchestrator_impl::kinds() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  for (const auto& [k, f] : kinds_) out.push_back(k);
  return out;
}

result<std::string> orchestrator_impl::spawn(agent_spawn spec) {
  {
    std::lock_guard lock(mutex_);
    if (closed_) return error(errc::unavailable, "spawn: the orchestrator is closing");
    if (kinds_.find(spec.kind) == kinds_.end()) {
      return error(errc::not_found, fmt::format("spawn: unknown agent kind '{}'", spec.kind));
    }
    if (spec.name.empty()) {
      do {
        spec.name = fmt::format("{}-{}", spec.kind, ++name_counters_[spec.kind]);
      } while (agents_.count(spec.name) != 0 || rt.has_agent(spec.name));
    }
    if (agents_.count(spec.name) != 0) {
      return error(errc::already_exists, fmt::format("an agent named '{}' exists", spec.name));
    }
    agent_entry a;
    a.name = spec.name;
    a.kind = spec.kind;
    a.project = spec.project.empty() ? std::string("default") : spec.project;
    a.concurrency = spec.concurrency != 0 ? spec.concurrency : options.default_concurrency;
    a.mailbox_capacity = spec.mailbox_capacity;
    agents_.emplace(spec.name, std::move(a));
  }
  auto started = start_agent(spec.name, false);
  if (!started) {
    std::lock_guard lock(mutex_);
    agents_.erase(spec.name);
  }
  return started;
}

// Creates an instance from the kind's factory, restores its snapshot and
// starts it. Runs without the lock: factories and restore are user code.
result<std::string> orchestrator_impl::start_agent(const std::string& name, bool restart) {
  agent_factory factory;
  std::string kind;
  std::string project;
  std::size_t mailbox = 0;
  {
    std::lock_guard lock(mutex_);
    auto it = agents_.find(name);
    if (it == agents_.end()) return error(errc::not_found, fmt::format("no agent '{}'", name));
    kind = it->second.kind;
    project = it->second.project;
    mailbox = it->second.mailbox_capacity;
    factory = kinds_.at(kind);
    it->second.restart_timer = 0;
  }
  std::unique_ptr<agent> instance;
  try {
    instance = factory();
  } catch (const std::exception& e) {
    return error(errc::handler_failed,
                 fmt::format("factory of kind '{}' threw: {}", kind, e.what()));
  } catch (...) {
    return error(errc::handler_failed,
                 fmt::format("factory of kind '{}' threw a non-exception", kind));
  }
  if (!instance)
    return error(errc::handler_failed, fmt::format("factory of kind '{}' returned null", kind));

  std::optional<nlohmann::json> restore;
  if (auto snap = store_->load_snapshot(name)) {
    restore = std::move(snap->state);
  } else if (snap.error().code() != errc::not_found) {
    return snap.error();
  }
  agent* raw = instance.get();
  std::weak_ptr<orchestrator_impl> weak = weak_from_this();
  auto hook = [weak, raw] {
    if (auto self = weak.lock()) self->checkpoint(*raw);
  };
  std::vector<std::string> caps(raw->capabilities().begin(), raw->capabilities().end());
  auto spawned = rti.spawn(std::move(instance), spawn_options{name, kind, project, mailbox},
                           std::move(restore), hook);
  if (!spawned) return spawned.error();

  ops o(*this);
  auto it = agents_.find(name);
  if (it == agents_.end()) return name;
  agent_entry& a = it->second;
  if (a.stop_for_good || closed_) {  // stopped while it was being spawned
    o.after.push_back([this, name] { (void)rt.stop(name); });
    return name;
  }
  a.instance = rti.find(name);
  if (!a.instance) return name;  // it already exited; the exit listener handled it
  a.capabilities = std::move(caps);
  a.status = "running";
  agent_record rec;
  rec.id = name;
  rec.project = project;
  rec.kind = kind;
  rec.capabilities = a.capabilities;
  rec.status = a.status;
  rec.restarts = a.restarts;
  rec.last_heartbeat = rt.clock().now();
  rec.created_at = rec.last_heartbeat;
  if (auto put = store_->put_agent(rec); !put) {
    rt.logger().error("store: agent '{}' not recorded: {}", name, put.error().describe());
  }
  agent_event(o, a, "agent.started",
              {{"kind", kind}, {"restarts", a.restarts}, {"restored", restart}});
  index_agent(a);
  defer_call(o);
  dispatch_for(o, a);
  commit_call(o);
  return name;
}

void orchestrator_impl::index_agent(agent_entry& a) {
  for (const auto& c : a.capabilities) capable_[c].push_back(&a);
}

void orchestrator_impl::unindex_agent(const agent_entry& a) {
  for (const auto& c : a.capabilities) {
    auto it = capable_.find(c);
    if (it == capable_.end()) continue;
    std::erase(it->second, &a);
    if (it->second.empty()) capable_.erase(it);
  }
}

result<void> orchestrator_impl::stop_agent(std::string_view name) {
  {
    ops o(*this);
    auto it = agents_.find(name);
    if (it == agents_.end()) return error(errc::not_found, fmt::format("no agent '{}'", name));
    agent_entry& a = it->second;
    a.stop_for_good = true;
    if (!a.instance) {  // down (restarting or failed): just mark it stopped
      if (a.restart_timer != 0) rt.cancel_timer(a.restart_timer);
      a.restart_timer = 0;
      a.status = "stopped";
      agent_event(o, a, "agent.stopped", nullptr);
      return {};
    }
    a.status = "stopping";  // dispatch feeds nothing more to it
  }
  return rt.stop(name);
}

result<void> orchestrator_impl::restart_agent(std::string_view name) {
  {
    std::lock_guard lock(mutex_);
    auto it = agents_.find(name);
    if (it == agents_.end()) return error(errc::not_found, fmt::format("no agent '{}'", name));
    agent_entry& a = it->second;
    if (!a.instance) {
      if (a.restart_timer != 0) rt.cancel_timer(a.restart_timer);
      a.stop_for_good = false;
      a.failures.clear();
    } else {
      a.restart_now = true;
      a.status = "stopping";
    }
    if (!a.instance) {
      // Down: start it again now, outside the lock.
    } else {
      return rt.stop(name);
    }
  }
  auto r = start_agent(std::string(name), true);
  if (!r) return r.error();
  return {};
}

agent_status orchestrator_impl::status_of(const agent_entry& a) const {
  return agent_status{a.name,         a.kind,           a.project,     a.status,
                      a.capabilities, a.running.size(), a.concurrency, a.restarts};
}

std::vector<agent_status> orchestrator_impl::agents() const {
  std::lock_guard lock(mutex_);
  std::vector<agent_status> out;
  for (const auto& [n, a] : agents_) out.push_back(status_of(a));
  return out;
}

result<agent_status> orchestrator_impl::agent_info(std::string_view name) const {
  std::lock_guard lock(mutex_);
  auto it = agents_.find(name);
  if (it == agents_.end()) return error(errc::not_found, fmt::format("no agent '{}'", name));
  return status_of(it->second);
}

void orchestrator_impl::checkpoint(agent& a) {
  nlohmann::json state = agent_access::snapshot(a);
  if (state.is_null()) return;
  agent_snapshot s;
  s.agent_id = a.name();
  s.taken_at = rt.clock().now();
  s.state = std::move(state);
  // Taken here, on the agent's strand; saved where the orchestrator works
  // (after the completion it follows, before a restart that reads it).
  engine_call([weak = weak_from_this(), s = std::move(s)]() mutable {
    auto self = weak.lock();
    if (!self) return;
    const std::string name = s.agent_id;
    if (auto r = self->store_->save_snapshot(std::move(s)); !r) {
      self->rt.logger().error("store: snapshot of '{}' not saved: {}", name, r.error().describe());
    }
  });
}

void orchestrator_impl::on_agent_exit(const agent_exit& ex) {
  std::string restart_name;
  {
    ops o(*this);
    auto it = agents_.find(ex.name);
    if (it == agents_.end()) return;
    agent_entry& a = it->second;
    unindex_agent(a);
    a.instance.reset();
    // Its attempts are lost with it: fail them (retryable) so they run elsewhere.
    const std::vector<std::string> lost(a.running.begin(), a.running.end());
    for (const auto& id : lost) {
      auto t = tasks_.find(id);
      if (t == tasks_.end()) continue;
      abort_run(o, t->second);
      finish_attempt(o, t->second, std::nullopt,
                     error(errc::unavailable,
                           fmt::format("agent '{}' {}", ex.name, ex.failed ? "failed" : "stopped")),
                     true);
    }
    a.running.clear();
    const time_point now = rt.clock().now();
    if (closed_ || a.stop_for_good) {
      a.status = "stopped";
      agent_event(o, a, "agent.stopped", nullptr);
    } else if (a.restart_now) {
      a.restart_now = false;
      a.status = "restarting";
      agent_event(o, a, "agent.restarting", {{"reason", "restart requested"}, {"backoff_ms", 0}});
      restart_name = a.name;
    } else if (!ex.failed) {
      a.status = "stopped";
      agent_event(o, a, "agent.stopped", nullptr);
    } else {
      a.failures.push_back(now);
      while (!a.failures.empty() && a.failures.front() < now - options.restart_window) {
        a.failures.pop_front();
      }
      nlohmann::json why = ex.reason ? error_json(*ex.reason) : nlohmann::json(nullptr);
      agent_event(o, a, "agent.failed", {{"error", why}});
      if (static_cast<int>(a.failures.size()) > options.max_restarts) {
        a.status = "failed";
        agent_event(
            o, a, "agent.gave_up",
            {{"failures_in_window", a.failures.size()}, {"max_restarts", options.max_restarts}});
      } else {
        const auto n = static_cast<int>(a.failures.size());
        double backoff = static_cast<double>(options.restart_initial_backoff.count()) *
                         std::pow(options.restart_multiplier, n - 1);
        backoff = std::min(backoff, static_cast<double>(options.restart_max_backoff.count()));
        const duration delay(static_cast<duration::rep>(backoff));
        a.status = "restarting";
        agent_event(
            o, a, "agent.restarting",
            {{"attempt", n},
             {"backoff_ms", std::chrono::duration_cast<std::chrono::milliseconds>(delay).count()}});
        std::string name = a.name;
        a.restart_timer = schedule_engine(delay, [name](orchestrator_impl& target) {
          auto self = target.shared_from_this();
          {
            std::lock_guard lock(self->mutex_);
            auto it2 = self->agents_.find(name);
            if (it2 == self->agents_.end() || it2->second.stop_for_good || self->closed_) return;
            ++it2->second.restarts;
          }
          if (auto r = self->start_agent(name, true); !r) {
            self->rt.logger().error("restart of agent '{}' failed: {}", name, r.error().describe());
          }
        });
      }
    }
    agent_record rec;
    rec.id = a.name;
    rec.project = a.project;
    rec.kind = a.kind;
    rec.capabilities = a.capabilities;
    rec.status = a.status;
    rec.restarts = a.restarts;
    rec.last_heartbeat = now;
    (void)store_->put_agent(rec);
  }
  if (!restart_name.empty()) {
    if (auto r = start_agent(restart_name, true); !r) {
      rt.logger().error("restart of agent '{}' failed: {}", restart_name, r.error().describe());
    }
  }
}

// ------------------------------------------------------------------ tasks --

result<std::vector<std::string>> orchestrator_impl::submit_all(std::vector<task_spec> specs) {
  if (specs.empty()) return std::vector<std::string>{};
  if (options.router) {
    // Outside the lock: a router may do slow work here (embeddings).
    for (auto& s : specs) {
      if (s.id.empty()) s.id = rti.make_id("t");
      try {
        options.router->prepare(s);
      } catch (...) {  // NOLINT(bugprone-empty-catch): a throwing router prepares nothing
      }
    }
  }
  ops o(*this);
  if (closed_) return error(errc::unavailable, "submit: the orchestrator is closing");
  const time_point now = rt.clock().now();

  for (std::size_t i = 0; i < specs.size(); ++i) {
    task_spec& s = specs[i];
    if (s.kind.empty())
      return error(errc::invalid_argument, fmt::format("task {}: kind is required", i));
    if (s.project.empty())
      return error(errc::invalid_argument, fmt::format("task {}: project is required", i));
    if (s.max_attempts < 1) {
      return error(errc::invalid_argument, fmt::format("task {}: max_attempts must be >= 1", i));
    }
    if (s.timeout && s.timeout->count() <= 0) {
      return error(errc::invalid_argument, fmt::format("task {}: timeout must be positive", i));
    }
    if (s.id.empty()) s.id = rti.make_id("t");
    if (tasks_.count(s.id) != 0) {
      return error(errc::already_exists, fmt::format("task id '{}' is taken", s.id));
    }
  }
  // The batch's ids, sorted, for lookups by id (one allocation, not a node per task).
  std::vector<std::pair<std::string_view, std::size_t>> batch;
  batch.reserve(specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i) batch.emplace_back(specs[i].id, i);
  std::sort(batch.begin(), batch.end());
  for (std::size_t i = 1; i < batch.size(); ++i) {
    if (batch[i].first == batch[i - 1].first) {
      return error(errc::already_exists, fmt::format("task id '{}' is taken", batch[i].first));
    }
  }
  auto in_batch = [&batch](std::string_view id) -> std::optional<std::size_t> {
    auto it =
        std::lower_bound(batch.begin(), batch.end(), id,
                         [](const auto& entry, std::string_view v) { return entry.first < v; });
    if (it == batch.end() || it->first != id) return std::nullopt;
    return it->second;
  };
  // Dependencies: in the batch, live here, or finished (in the store).
  std::unordered_map<std::string, aise::task> finished;
  bool only_backward = true;  // every in-batch dependency names an earlier task: no cycle
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const task_spec& s = specs[i];
    for (const auto& d : s.depends_on) {
      if (auto b = in_batch(d)) {
        if (*b >= i) only_backward = false;
        continue;
      }
      if (tasks_.count(d) != 0 || finished.count(d) != 0) continue;
      if (auto f = finished_.find(d); f != finished_.end()) {
        finished.emplace(d, *f->second.task);
        continue;
      }
      auto stored = store_->get_task(d);
      if (!stored) {
        if (stored.error().code() == errc::not_found) {
          return error(errc::not_found,
                       fmt::format("task '{}' depends on unknown task '{}'", s.id, d));
        }
        return stored.error();
      }
      if (!is_terminal(stored->state)) {
        return error(errc::unavailable,
                     fmt::format("task '{}' depends on '{}', which is {} but not scheduled by this "
                                 "orchestrator",
                                 s.id, d, to_string(stored->state)));
      }
      finished.emplace(d, std::move(stored.value()));
    }
  }
  // Cycles can only run through the batch: Kahn's algorithm over its edges
  // (not needed when every edge points back to an earlier task).
  if (!only_backward) {
    std::vector<std::size_t> indegree(specs.size(), 0);
    std::vector<std::vector<std::size_t>> out(specs.size());
    for (std::size_t i = 0; i < specs.size(); ++i) {
      for (const auto& d : specs[i].depends_on) {
        if (auto b = in_batch(d)) {
          out[*b].push_back(i);
          ++indegree[i];
        }
      }
    }
    std::vector<std::size_t> stack;
    for (std::size_t i = 0; i < specs.size(); ++i) {
      if (indegree[i] == 0) stack.push_back(i);
    }
    std::size_t seen = 0;
    while (!stack.empty()) {
      const std::size_t i = stack.back();
      stack.pop_back();
      ++seen;
      for (auto j : out[i]) {
        if (--indegree[j] == 0) stack.push_back(j);
      }
    }
    if (seen != specs.size()) {
      std::vector<std::string> in_cycle;
      for (std::size_t i = 0; i < specs.size(); ++i) {
        if (indegree[i] != 0) in_cycle.push_back(specs[i].id);
      }
      return error(errc::cycle,
                   fmt::format("dependency cycle among tasks: {}", fmt::join(in_cycle, ", ")));
    }
  }

  std::vector<aise::task> records;
  std::vector<event_draft> drafts;
  records.reserve(specs.size());
  drafts.reserve(specs.size());
  for (auto& s : specs) {
    aise::task& t = records.emplace_back();
    static_cast<task_spec&>(t) = std::move(s);
    // A task that waits for nothing is ready at once: it is stored queued,
    // its pending and queued events with it (one write, not two).
    const bool ready = t.depends_on.empty() && !t.requires_approval;
    t.state = ready ? task_state::queued : task_state::pending;
    t.created_at = now;
    t.updated_at = now;
    drafts.push_back(event_draft{t.project, std::string(event_type_of(task_state::pending)), t.id,
                                 now, nullptr});
    if (ready)
      drafts.push_back(event_draft{t.project, std::string(event_type_of(task_state::queued)), t.id,
                                   now, nullptr});
  }
  // Listeners get copies of the drafts; the store gets the drafts themselves.
  std::vector<event> announced;
  if (has_listeners_.load(std::memory_order_acquire)) {
    announced.reserve(drafts.size());
    for (const auto& d : drafts) announced.push_back(event{d});
  }
  auto stored = store_->insert_tasks(records, std::move(drafts));
  if (!stored) return stored.error();

  std::vector<std::string> ids;
  ids.reserve(records.size());
  std::vector<task_entry*> entries;  // nodes keep their addresses until erased
  entries.reserve(records.size());
  for (auto& t : records) {
    ids.push_back(t.id);
    task_entry& e = tasks_.try_emplace(ids.back()).first->second;
    e.seq = next_seq_++;
    e.t = std::move(t);
    e.t.version = 1;
    entries.push_back(&e);
  }
  for (std::size_t i = 0; i < announced.size() && i < stored->size(); ++i) {
    announced[i].sequence = (*stored)[i];
    emit(std::move(announced[i]));
  }

  // Wire dependencies and parents, then let whatever is ready go.
  std::vector<std::pair<std::string, aise::error>> doomed;
  for (task_entry* entry : entries) {
    task_entry& e = *entry;
    const std::string& id = e.t.id;
    for (const auto& d : e.t.depends_on) {
      if (auto f = finished.find(d); f != finished.end()) {
        if (f->second.state == task_state::succeeded) {
          e.dep_results[d] = f->second.result.value_or(nullptr);
        } else if (is_terminal(f->second.state)) {
          doomed.emplace_back(id, error(errc::cancelled, fmt::format("dependency '{}' {}", d,
                                                                     to_string(f->second.state))));
        }
        continue;
      }
      tasks_.at(d).dependents.push_back(id);
      ++e.unmet;
    }
    if (!e.t.parent.empty()) {
      if (auto p = tasks_.find(e.t.parent); p != tasks_.end()) {
        p->second.children.push_back(id);
      } else if (auto pt = finished_.count(e.t.parent) != 0
                               ? result<aise::task>(*finished_.at(e.t.parent).task)
                               : store_->get_task(e.t.parent);
                 pt && is_terminal(pt->state) && pt->state != task_state::succeeded) {
        // Spawned by a handler still running after its task ended.
        doomed.emplace_back(
            id, error(errc::cancelled,
                      fmt::format("parent task '{}' {}", e.t.parent, to_string(pt->state))));
      }
    }
    if (e.t.deadline) {
      e.deadline_timer = schedule_engine(*e.t.deadline - now,
                                         [id](orchestrator_impl& self) { self.on_deadline(id); });
    }
  }
  // The changes that follow (dispatch, doomed tasks) are written together.
  defer_call(o);
  end_doomed(o, doomed);
  for (const auto& id : ids) {
    auto it = tasks_.find(id);
    if (it == tasks_.end()) continue;
    task_entry& e = it->second;
    if (e.t.state == task_state::queued) {
      queue_and_dispatch(o, e);
    } else if (e.t.state == task_state::pending && e.unmet == 0) {
      make_ready(o, e);
    }
  }
  commit_call(o);  // the tasks are stored; a failure here only delays their dispatch
  return ids;
}

// ------------------------------------------------------ subtasks (fan-out) --

result<std::string> orchestrator_impl::spawn_subtask(task_spec spec) {
  // A subtask with an id of its own is submitted here and now: that id may
  // be taken, and the caller hears so at once (a generated one cannot be).
  if (engine_ == nullptr || on_engine_thread() || !spec.id.empty()) {
    std::vector<task_spec> one;
    one.push_back(std::move(spec));
    auto ids = submit_all(std::move(one));
    if (!ids) return ids.error();
    return std::move(ids->front());
  }
  // From a handler, with the orchestrator on its own thread: checked here,
  // submitted there (the handler's executor never waits for the store).
  if (spec.kind.empty()) return error(errc::invalid_argument, "subtask: kind is required");
  if (spec.project.empty()) return error(errc::invalid_argument, "subtask: project is required");
  if (spec.max_attempts < 1)
    return error(errc::invalid_argument, "subtask: max_attempts must be >= 1");
  if (spec.timeout && spec.timeout->count() <= 0)
    return error(errc::invalid_argument, "subtask: timeout must be positive");
  spec.id = rti.make_id("t");
  std::string id = spec.id;
  std::lock_guard lock(spawn_mutex_);
  if (spawn_closed_) return error(errc::unavailable, "subtask: the orchestrator is closing");
  // Bounded: while the store is away subtasks wait here, up to this many.
  constexpr std::size_t max_waiting = 65'536;
  if (spawn_queue_.size() >= max_waiting) {
    return error(errc::unavailable,
                 fmt::format("subtask: {} subtasks already wait for the store", max_waiting));
  }
  if (!spawning_.try_emplace(id).second)
    return error(errc::already_exists, fmt::format("task id '{}' is taken", id));
  spawn_queue_.push_back(std::move(spec));
  if (!spawn_drain_posted_) {
    spawn_drain_posted_ = true;
    std::weak_ptr<orchestrator_impl> weak = weak_from_this();
    post_engine([weak] {
      if (auto self = weak.lock()) self->drain_spawns();
    });
  }
  return id;
}

// On the orchestrator's thread: submits the queued subtasks together. A
// subtask the store cannot take now (`unavailable`) waits and is tried
// again every 200 ms, for at most 5 minutes; one refused for itself (an
// unknown dependency, a cycle), or still refused after that, or queued when
// the orchestrator closes, ends as a failed record that get() and
// when_done() report.
void orchestrator_impl::drain_spawns() {
  constexpr int max_tries = 1500;  // × 200 ms
  std::vector<task_spec> specs;
  bool closing = false;
  {
    std::lock_guard lock(spawn_mutex_);
    specs.swap(spawn_queue_);
    spawn_drain_posted_ = false;
    closing = spawn_closed_;
  }
  if (specs.empty()) return;
  std::vector<std::pair<task_spec, std::optional<aise::error>>> outcome;
  std::vector<task_spec> again;
  if (auto all = submit_all(specs); all) {
    for (auto& s : specs) outcome.emplace_back(std::move(s), std::nullopt);
  } else {
    // One by one: a subtask refused for itself must not hold back the rest.
    for (auto& spec : specs) {
      auto r = submit_all(std::vector<task_spec>{spec});
      if (r) {
        outcome.emplace_back(std::move(spec), std::nullopt);
        continue;
      }
      if (r.error().code() == errc::unavailable && !closing &&
          ++spawn_tries_[spec.id] < max_tries) {
        again.push_back(std::move(spec));
        continue;
      }
      rt.logger().error("subtask {} of task {} refused: {}", spec.id, spec.parent,
                        r.error().describe());
      outcome.emplace_back(std::move(spec), r.error());
    }
  }
  for (const auto& [spec, failure] : outcome) spawn_tries_.erase(spec.id);
  if (!again.empty()) {
    {
      std::lock_guard lock(spawn_mutex_);
      spawn_queue_.insert(spawn_queue_.begin(), std::make_move_iterator(again.begin()),
                          std::make_move_iterator(again.end()));
      spawn_drain_posted_ = true;  // the timer below drains what comes meanwhile too
    }
    rt.logger().warn("{} subtasks wait for the store", again.size());
    schedule_engine(std::chrono::milliseconds(200),
                    [](orchestrator_impl& self) { self.drain_spawns(); });
  }
  for (auto& [spec, failure] : outcome) {
    std::vector<std::function<void(const task&)>> waiters;
    std::optional<aise::task> failed;
    {
      std::lock_guard lock(spawn_mutex_);
      auto it = spawning_.find(spec.id);
      if (it != spawning_.end()) {
        waiters = std::move(it->second);
        spawning_.erase(it);
      }
      if (failure) {
        aise::task t;
        static_cast<task_spec&>(t) = spec;
        t.state = task_state::failed;
        t.error = failure;
        t.created_at = t.updated_at = rt.clock().now();
        if (failed_spawns_.size() >= 1024) failed_spawns_.erase(failed_spawns_.begin());
        failed_spawns_.insert_or_assign(spec.id, t);
        failed = std::move(t);
      }
    }
    for (auto& fn : waiters) {
      if (failed) {
        boost::asio::post(rti.io(), [fn = std::move(fn), t = *failed] { fn(t); });
      } else {
        (void)when_done(spec.id, std::move(fn));
      }
    }
  }
}

// A subtask not submitted yet (or refused): what get() and when_done() see.
std::optional<aise::task> orchestrator_impl::spawn_view(const std::string& id) const {
  std::lock_guard lock(spawn_mutex_);
  if (auto f = failed_spawns_.find(id); f != failed_spawns_.end()) return f->second;
  if (spawning_.count(id) == 0) return std::nullopt;
  for (const auto& s : spawn_queue_) {
    if (s.id != id) continue;
    aise::task t;
    static_cast<task_spec&>(t) = s;
    t.state = task_state::pending;
    return t;
  }
  aise::task t;  // being submitted right now
  t.id = id;
  t.state = task_state::pending;
  return t;
}

task_update orchestrator_impl::base_update(const task_entry& e, task_state to,
                                           time_point now) const {
  task_update u;
  u.id = e.t.id;
  u.expected_version = e.t.version;
  u.state = to;
  u.attempt = e.t.attempt;
  u.agent = e.t.agent;
  u.at = now == time_point{} ? rt.clock().now() : now;
  u.not_before = e.t.not_before;
  u.event.project = e.t.project;
  u.event.type = event_type_of(to);
  u.event.subject = e.t.id;
  u.event.at = u.at;
  return u;
}

// Writes the change (or, with group commit, adds it to the batch); on
// success mirrors it in the cache and announces it (after the write).
bool orchestrator_impl::apply(ops& o, task_entry& e, task_update&& u) {
  // With a via_event the task passes through `via` (its event's state) first.
  const task_state from = e.t.state;
  std::optional<task_state> via;
  if (u.via_event) via = task_state::queued;  // the only state passed through
  auto legal = check_transition(from, via.value_or(u.state));
  if (legal && via) legal = check_transition(*via, u.state);
  if (!legal) {
    rt.logger().error("task {}: {}", e.t.id, legal.error().message());
    return false;
  }
  const bool deferred = defers(o);
  // A change written on its own goes after the ones still waiting.
  if (!deferred && !flush_locked(o)) {
    rt.logger().error("task {} not moved to {}: earlier changes are not written yet", e.t.id,
                      to_string(u.state));
    return false;
  }
  // The store gets the update itself; the cache keeps its own copies of
  // what changes (a result must live in both).
  const task_state to = u.state;
  const int attempt = u.attempt;
  const time_point at = u.at;
  const time_point not_before = u.not_before;
  const bool clear_error = u.clear_error;
  const std::uint64_t version = u.expected_version + 1;
  std::string agent = u.agent;
  std::optional<nlohmann::json> result = u.result;
  std::optional<aise::error> failure = u.error;
  announcement announced;
  if (has_listeners_.load(std::memory_order_acquire)) {
    announced.main.emplace(event{u.event});
    if (u.via_event) announced.via.emplace(event{*u.via_event});
  }
  std::uint64_t sequence = 0;
  if (deferred) {
    batch_.push_back(std::move(u));
    batch_events_.push_back(std::move(announced));
    o.park = &batch_after_;
    if (!flush_scheduled_) schedule_flush(false);
  } else {
    auto r = store_->update_task(std::move(u));
    if (!r) {
      rt.logger().error("store: task {} not moved to {}: {}", e.t.id, to_string(to),
                        r.error().describe());
      return false;
    }
    sequence = r.value();
  }
  e.t.state = to;
  e.t.attempt = attempt;
  e.t.agent = std::move(agent);
  e.t.updated_at = at;
  e.t.not_before = not_before;
  if (result) e.t.result = std::move(result);
  if (clear_error) e.t.error.reset();
  if (failure) e.t.error = std::move(failure);
  e.t.version = version;
  if (!deferred) {
    if (announced.via) {
      announced.via->sequence = sequence - 1;
      emit(std::move(*announced.via));
    }
    if (announced.main) {
      announced.main->sequence = sequence;
      emit(std::move(*announced.main));
    }
  }
  return true;
}

// ------------------------------------------------------------ group commit --

// With the orchestrator on its own thread: a finished task stays readable
// here (get, when_done, dependencies) without a store read, and until the
// batch holding its last change is written (generation). The oldest written
// ones go beyond `finished_kept`.
void orchestrator_impl::remember_finished(std::shared_ptr<const aise::task> t) {
  constexpr std::size_t finished_kept = 4096;
  const std::uint64_t generation = batch_.empty() ? 0 : batch_generation_ + 1;
  std::string id = t->id;
  auto [it, fresh] =
      finished_.insert_or_assign(std::move(id), finished_entry{std::move(t), generation});
  if (fresh) finished_order_.push_back(it->first);
  while (finished_order_.size() > finished_kept) {
    auto old = finished_.find(finished_order_.front());
    if (old != finished_.end() && old->second.generation > written_generation_) break;
    if (old != finished_.end()) finished_.erase(old);
    finished_order_.pop_front();
  }
}

bool orchestrator_impl::defers(const ops& o) const {
  return options.group_commit && engine_ != nullptr && (o.defer || on_engine_thread());
}

void orchestrator_impl::defer_call(ops& o) const {
  o.defer = options.group_commit && engine_ != nullptr && !on_engine_thread();
}

void orchestrator_impl::schedule_flush(bool backoff) {
  if (closed_ && backoff) return;  // close() makes the last attempt itself
  flush_scheduled_ = true;
  if (!backoff) {
    std::weak_ptr<orchestrator_impl> weak = weak_from_this();
    post_engine([weak] {
      if (auto self = weak.lock()) self->flush_turn();
    });
    return;
  }
  const int shift = std::min(flush_failures_ - 1, 6);
  const auto delay = std::min<duration>(std::chrono::milliseconds(50) * (1 << std::max(shift, 0)),
                                        std::chrono::seconds(2));
  schedule_engine(delay, [](orchestrator_impl& self) { self.flush_turn(); });
}

void orchestrator_impl::flush_turn() {
  ops o(*this);
  // Under load, the work already waiting for this thread (completions,
  // timers) joins the batch first, up to max_batch changes: fewer, larger
  // commits, and a short task's start and end may share one.
  // At most max_yields times in a row, so that a stream of work that
  // changes nothing cannot hold a batch back.
  constexpr std::size_t max_batch = 1024;
  constexpr int max_yields = 64;
  if (engine_queued_.load(std::memory_order_relaxed) > 0 && batch_.size() < max_batch &&
      flush_yields_ < max_yields && flush_failures_ == 0 && !closed_) {
    ++flush_yields_;
    std::weak_ptr<orchestrator_impl> weak = weak_from_this();
    post_engine([weak] {
      if (auto self = weak.lock()) self->flush_turn();
    });
    return;  // flush_scheduled_ stays set
  }
  flush_yields_ = 0;
  flush_scheduled_ = false;
  (void)flush_locked(o, true);
}

void orchestrator_impl::commit_call(ops& o) {
  if (!o.defer) return;
  o.defer = false;
  if (!flush_locked(o)) {
    rt.logger().warn("{} task changes wait for the store; written again with backoff",
                     batch_.size());
  }
}

bool orchestrator_impl::flush_locked(ops& o, bool release_lock) {
  // A batch another call is writing goes first: the store must have it
  // before anything else is written.
  flush_cv_.wait(o.lock, [this] { return !flush_in_flight_; });
  if (batch_.empty()) {
    // Actions that waited for a batch written meanwhile (when_done).
    o.after.insert(o.after.begin(), std::make_move_iterator(batch_after_.begin()),
                   std::make_move_iterator(batch_after_.end()));
    batch_after_.clear();
    o.park = nullptr;
    return true;
  }
  // Take the batch: changes made while it is written form the next one.
  std::vector<task_update> batch;
  batch.swap(batch_);
  std::vector<announcement> events;
  events.swap(batch_events_);
  std::vector<std::function<void()>> after;
  after.swap(batch_after_);
  const std::uint64_t generation = ++batch_generation_;
  // Stores return errors as values; one that throws anyway does not leave
  // the batch half-handled (or the lock released).
  auto write = [this, &batch]() -> result<std::vector<std::uint64_t>> {
    try {
      return store_->update_tasks(batch);
    } catch (const std::exception& e) {
      return error(errc::internal, fmt::format("store threw: {}", e.what()));
    } catch (...) {
      return error(errc::internal, "store threw a non-exception");
    }
  };
  result<std::vector<std::uint64_t>> r = std::vector<std::uint64_t>{};
  if (release_lock) {
    // Written without the lock: executor threads calling in (a completion,
    // when_done, get) never wait for the database.
    flush_in_flight_ = true;
    o.lock.unlock();
    r = write();
    o.lock.lock();
    flush_in_flight_ = false;
    flush_cv_.notify_all();
  } else {
    r = write();
  }
  std::vector<std::uint64_t> sequences;
  std::size_t written = batch.size();  // a prefix of the batch, on the slow path
  if (r) {
    sequences = std::move(r.value());
  } else if (r.error().code() == errc::unavailable) {
    written = 0;
    if (flush_failures_ == 0) {
      rt.logger().error("store: {} task changes not written: {}; trying again with backoff",
                        batch.size(), r.error().describe());
    }
  } else {
    // Refused as a whole: someone else changed a task. Change by change;
    // for a refused one the stored task is the truth.
    rt.logger().error("store: a batch of {} task changes was refused ({}); writing them one by one",
                      batch.size(), r.error().describe());
    sequences.assign(batch.size(), 0);
    std::set<std::string, std::less<>> refused;  // their later changes are not written either
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (refused.count(batch[i].id) != 0) continue;
      result<std::uint64_t> one = error(errc::internal, "store threw");
      try {
        one = store_->update_task(batch[i]);
      } catch (...) {  // NOLINT(bugprone-empty-catch): reported as `internal` below
      }
      if (one) {
        sequences[i] = one.value();
        continue;
      }
      if (one.error().code() == errc::unavailable) {
        written = i;
        break;
      }
      rt.logger().error("store: task {} change refused: {}", batch[i].id, one.error().describe());
      refused.insert(batch[i].id);
      resync(o, batch[i].id);
    }
  }
  for (std::size_t i = 0; i < written; ++i) {
    if (sequences[i] == 0) continue;  // refused
    announcement& a = events[i];
    if (a.via) {
      a.via->sequence = sequences[i] - 1;
      emit(std::move(*a.via));
    }
    if (a.main) {
      a.main->sequence = sequences[i];
      emit(std::move(*a.main));
    }
  }
  if (written < batch.size()) {
    // The store is away: what is left goes back in front of the changes
    // made meanwhile, and is written again with backoff.
    batch.erase(batch.begin(), batch.begin() + static_cast<std::ptrdiff_t>(written));
    events.erase(events.begin(), events.begin() + static_cast<std::ptrdiff_t>(written));
    batch_.insert(batch_.begin(), std::make_move_iterator(batch.begin()),
                  std::make_move_iterator(batch.end()));
    batch_events_.insert(batch_events_.begin(), std::make_move_iterator(events.begin()),
                         std::make_move_iterator(events.end()));
    batch_after_.insert(batch_after_.begin(), std::make_move_iterator(after.begin()),
                        std::make_move_iterator(after.end()));
    ++flush_failures_;
    if (!flush_scheduled_) schedule_flush(true);
    return false;
  }
  // Written: the tasks it finished are in the store now, and the actions
  // waiting for it run after this call.
  written_generation_ = generation;
  o.after.insert(o.after.begin(), std::make_move_iterator(after.begin()),
                 std::make_move_iterator(after.end()));
  if (batch_.empty()) o.park = nullptr;
  if (flush_failures_ > 0) {
    rt.logger().info("store: the waiting task changes are written; dispatch resumes");
    flush_failures_ = 0;
    // On the orchestrator's thread, after this call (which may be in the
    // middle of a dispatch of its own).
    std::weak_ptr<orchestrator_impl> weak = weak_from_this();
    post_engine([weak] {
      auto self = weak.lock();
      if (!self) return;
      ops again(*self);
      std::vector<std::string> capabilities;
      for (const auto& [c, q] : self->ready_)
        if (!q.empty()) capabilities.push_back(c);
      for (const auto& c : capabilities) self->dispatch(again, c);
    });
  }
  return batch_.empty();
}

// The store refused a change of task `id` that the cache already shows:
// the stored task wins. A local attempt the store does not know ends.
void orchestrator_impl::resync(ops& o, const std::string& id) {
  auto it = tasks_.find(id);
  auto done = finished_.find(id);
  if (it == tasks_.end() && done == finished_.end()) return;
  auto stored = store_->get_task(id);
  if (!stored) {
    rt.logger().error("store: task {} could not be read back: {}", id, stored.error().describe());
    return;
  }
  if (it == tasks_.end()) {
    // Finished here already (its waiters were told): later readers see the
    // stored task.
    done->second = finished_entry{std::make_shared<const aise::task>(std::move(*stored)), 0};
    return;
  }
  task_entry& e = it->second;
  if (e.t.state == task_state::running &&
      (stored->state != task_state::running || stored->attempt != e.t.attempt)) {
    abort_run(o, e);
    release_slot(o, e, false);
  }
  const bool was_terminal = is_terminal(e.t.state);
  e.t = std::move(stored.value());
  if (e.t.state == task_state::queued) enqueue_ready(e);
  if (is_terminal(e.t.state) && !was_terminal) on_terminal(o, id);  // may erase e
}

void orchestrator_impl::make_ready(ops& o, task_entry& e) {
  if (e.t.requires_approval && !e.approved) {
    task_update u = base_update(e, task_state::awaiting_approval);
    apply(o, e, std::move(u));
    return;
  }
  // Nothing waiting for its capability and a free agent: straight to
  // running, with its task.queued event in the same store write.
  if (auto rq = ready_.find(capability_of(e.t)); rq == ready_.end() || rq->second.empty()) {
    if (agent_entry* a = pick_agent(capability_of(e.t), &e.t)) {
      start_attempt(o, e, *a);
      return;
    }
  }
  task_update u = base_update(e, task_state::queued);
  if (!apply(o, e, std::move(u))) return;
  queue_and_dispatch(o, e);
}

void orchestrator_impl::enqueue_ready(task_entry& e) {
  ready_[capability_of(e.t)].insert(ready_key{-e.t.priority, e.seq, e.t.id});
}

// A task just became queued: with nothing else waiting for its capability
// it goes straight to a free agent (no queue round trip); otherwise it
// joins the queue in priority order.
void orchestrator_impl::queue_and_dispatch(ops& o, task_entry& e) {
  const std::string& capability = capability_of(e.t);
  auto rq = ready_.find(capability);
  if (rq == ready_.end() || rq->second.empty()) {
    if (agent_entry* a = pick_agent(capability, &e.t)) {
      start_attempt(o, e, *a);  // on a refused store write it queues the task itself
      return;
    }
  }
  enqueue_ready(e);
  dispatch(o, capability);
}

// The least-loaded running agent with the capability and a free slot, if any.
orchestrator_impl::agent_entry* orchestrator_impl::pick_agent(const std::string& capability,
                                                              const aise::task* t) {
  auto ci = capable_.find(capability);
  if (ci == capable_.end()) return nullptr;
  if (flush_failures_ > 0) return nullptr;  // the store is behind: start nothing new
  agent_entry* best = nullptr;
  for (agent_entry* a : ci->second) {
    if (a->status != "running" || !a->instance || a->running.size() >= a->concurrency) continue;
    if (best == nullptr || a->running.size() < best->running.size()) best = a;
  }
  if (best == nullptr || !options.router || t == nullptr) return best;
  // A router chooses among the free ones, least loaded first.
  std::vector<agent_entry*> free;
  for (agent_entry* a : ci->second) {
    if (a->status == "running" && a->instance && a->running.size() < a->concurrency)
      free.push_back(a);
  }
  std::stable_sort(free.begin(), free.end(), [](const agent_entry* x, const agent_entry* y) {
    return x->running.size() < y->running.size();
  });
  std::vector<routing_candidate> candidates;
  candidates.reserve(free.size());
  for (const agent_entry* a : free)
    candidates.push_back({a->name, a->kind, a->capabilities, a->running.size(), a->concurrency});
  try {
    if (auto chosen = options.router->pick(*t, candidates); chosen && *chosen < free.size())
      return free[*chosen];
  } catch (...) {  // NOLINT(bugprone-empty-catch): a throwing router makes no choice
  }
  return free.front();
}

void orchestrator_impl::observe_attempt(const task_entry& e, bool succeeded) {
  if (!options.router) return;
  auto a = agents_.find(e.t.agent);
  if (a == agents_.end()) return;
  try {
    options.router->observe(e.t,
                            {a->second.name, a->second.kind, a->second.capabilities,
                             a->second.running.size(), a->second.concurrency},
                            succeeded);
  } catch (...) {  // NOLINT(bugprone-empty-catch): a throwing router learns nothing
  }
}

void orchestrator_impl::dispatch(ops& o, const std::string& capability) {
  // No iterators are kept across start_attempt: it may re-enter dispatch
  // (a failed hand-off) and insert into these maps. Sets stay allocated
  // once created (one per capability), so the reference stays valid.
  auto rq = ready_.find(capability);
  if (rq == ready_.end() || rq->second.empty()) return;
  std::set<ready_key>& queue = rq->second;
  while (!queue.empty()) {
    auto t = tasks_.find(queue.begin()->id);
    if (t == tasks_.end() || t->second.t.state != task_state::queued) {
      queue.erase(queue.begin());  // stale: ended or moved on meanwhile
      continue;
    }
    agent_entry* best = pick_agent(capability, &t->second.t);
    if (best == nullptr) {
      // No free agent here: a worker process takes it, if one serves it.
      if (flush_failures_ > 0 || !serves_remote(capability)) return;
      queue.erase(queue.begin());
      if (!start_remote(o, t->second)) return;
      continue;
    }
    queue.erase(queue.begin());
    // A refused store write leaves the task queued; stop here rather than
    // spin on it while holding the lock (the next change tries again).
    if (!start_attempt(o, t->second, *best)) return;
  }
}

void orchestrator_impl::dispatch_for(ops& o, const agent_entry& a) {
  for (const auto& c : a.capabilities) dispatch(o, c);
}

bool orchestrator_impl::start_attempt(ops& o, task_entry& e, agent_entry& a) {
  const bool from_pending = e.t.state == task_state::pending;
  task_update u = base_update(e, task_state::running);
  if (from_pending) {
    u.via_event = event_draft{e.t.project, std::string(event_type_of(task_state::queued)), e.t.id,
                              u.at, nullptr};
  }
  u.attempt = e.t.attempt + 1;
  u.agent = a.name;
  u.clear_error = true;
  u.attempt_row = task_attempt{e.t.id,       u.attempt,           a.name,      u.at,
                               std::nullopt, task_state::running, std::nullopt};
  u.event.data = attempt_data(u.attempt, a.name);
  if (!apply(o, e, std::move(u))) {
    // Still queued (or pending) in the store: queue it and try again on the next change.
    if (from_pending && !apply(o, e, base_update(e, task_state::queued))) return false;
    enqueue_ready(e);
    return false;
  }
  a.running.push_back(e.t.id);
  auto run = std::make_shared<task_run>();
  run->owner = weak_from_this();
  run->task = e.t;
  run->dep_results = dep_snapshot(e);
  run->runner = a.instance;
  e.token = run->token;  // a copy sharing the run's state
  e.run = run;
  if (e.t.timeout) {
    e.timeout_timer = schedule_engine(
        *e.t.timeout,
        [id = e.t.id, n = e.t.attempt](orchestrator_impl& self) { self.on_timeout(id, n); });
  }
  const bool posted = post_run(rti, std::move(run));
  if (!posted) {
    // The agent stopped between routing and hand-off: its exit listener has
    // not run yet. Route nothing more to it, and fail the attempt so it is
    // retried elsewhere.
    a.status = "stopping";
    finish_attempt(o, e, std::nullopt,
                   error(errc::unavailable, fmt::format("agent '{}' stopped", a.name)), true);
  }
  return true;
}

bool post_run(runtime_impl& rti, std::shared_ptr<task_run> run) {
  agent& runner = *run->runner;
  return rti.post_job(runner, [run = std::move(run)]() mutable {
    agent& self = *run->runner;
    agent_core& core = agent_access::core(self);
    auto h = core.task_handlers.find(run->task.kind);
    if (h == core.task_handlers.end()) {
      task_context ctx(std::move(run));
      (void)ctx.fail(
          error(errc::no_handler, fmt::format("agent '{}' has no handler for task kind '{}'",
                                              core.name, ctx.task().kind)),
          false);
      return;
    }
    if (h->second.sync) {
      task_context ctx(std::move(run));
      result<nlohmann::json> r = error(errc::internal, "unset");
      try {
        r = h->second.sync(ctx);
      } catch (const std::exception& ex) {
        r = error(errc::handler_failed, fmt::format("task handler threw: {}", ex.what()));
      } catch (...) {
        r = error(errc::handler_failed, "task handler threw a non-exception");
      }
      if (!ctx.done()) {
        if (r) {
          (void)ctx.succeed(std::move(r.value()));
        } else {
          (void)ctx.fail(r.error());
        }
      }
      if (core.checkpoint_hook) core.checkpoint_hook();
      return;
    }
    run->async = true;
    try {
      h->second.async(task_context(run));
    } catch (const std::exception& ex) {
      (void)task_context(run).fail(
          error(errc::handler_failed, fmt::format("task handler threw: {}", ex.what())));
    } catch (...) {
      (void)task_context(run).fail(
          error(errc::handler_failed, "task handler threw a non-exception"));
    }
  });
}

// ----------------------------------------------------------- distribution --

bool orchestrator_impl::serves_remote(const std::string& capability) const {
  return options.dispatcher && options.dispatcher->serves(capability);
}

std::shared_ptr<const std::map<std::string, nlohmann::json>> orchestrator_impl::dep_snapshot(
    task_entry& e) {
  if (!e.dep_snapshot) {
    // Most tasks have no dependency results: they share one empty map.
    static const auto no_results = std::make_shared<const std::map<std::string, nlohmann::json>>();
    e.dep_snapshot = e.dep_results.empty()
                         ? no_results
                         : std::make_shared<const std::map<std::string, nlohmann::json>>(
                               std::move(e.dep_results));
  }
  return e.dep_snapshot;
}

// The attempt is written as running (agent "queue:<capability>") and handed
// to the dispatcher once that write is in the store, never before: a worker
// can only lease an attempt the store knows as running.
bool orchestrator_impl::start_remote(ops& o, task_entry& e) {
  const bool from_pending = e.t.state == task_state::pending;
  const std::string queue_name = "queue:" + capability_of(e.t);
  task_update u = base_update(e, task_state::running);
  if (from_pending) {
    u.via_event = event_draft{e.t.project, std::string(event_type_of(task_state::queued)), e.t.id,
                              u.at, nullptr};
  }
  u.attempt = e.t.attempt + 1;
  u.agent = queue_name;
  u.clear_error = true;
  u.attempt_row = task_attempt{e.t.id,       u.attempt,           queue_name,  u.at,
                               std::nullopt, task_state::running, std::nullopt};
  u.event.data = attempt_data(u.attempt, queue_name);
  if (!apply(o, e, std::move(u))) {
    if (from_pending && !apply(o, e, base_update(e, task_state::queued))) return false;
    enqueue_ready(e);
    return false;
  }
  adopt_remote(e);
  queue_handoff(o, e);
  return true;
}

void orchestrator_impl::adopt_remote(task_entry& e) {
  auto run = std::make_shared<task_run>();
  run->owner = weak_from_this();
  run->task = e.t;
  run->dep_results = dep_snapshot(e);
  e.token = run->token;
  e.run = run;
  e.remote_run = std::move(run);
  e.remote_settled = false;
  remote_running_.insert(e.t.id);
  if (e.t.timeout) {
    e.timeout_timer = schedule_engine(
        *e.t.timeout,
        [id = e.t.id, n = e.t.attempt](orchestrator_impl& self) { self.on_timeout(id, n); });
  }
}

void orchestrator_impl::queue_handoff(ops& o, const task_entry& e) {
  task_handoff h{e.t, *e.remote_run->dep_results};
  // After the change is written (group commit: after its batch), in the
  // order the changes were made.
  o.after.push_back([weak = weak_from_this(), h = std::move(h)]() mutable {
    if (auto self = weak.lock()) {
      std::vector<task_handoff> batch;
      batch.push_back(std::move(h));
      self->options.dispatcher->handoff(std::move(batch));
    }
  });
}

// A handed-over attempt ended. Unless its lease settled it (an outcome, an
// expiry), the lease is revoked first thing after the lock — so a late
// outcome of this attempt can never count — and its worker told to stop.
void orchestrator_impl::end_remote(ops& o, task_entry& e) {
  remote_running_.erase(e.t.id);
  e.remote_run->aborted.store(!e.remote_settled);
  e.remote_run->done.store(true);  // no "dropped" report when it goes
  e.remote_run.reset();
  if (!e.remote_settled) {
    o.after.push_back([weak = weak_from_this(), key = lease_key{e.t.id, e.t.attempt}] {
      if (auto self = weak.lock()) self->revoke_remote(key);
    });
  }
  e.remote_settled = false;
}

void orchestrator_impl::revoke_remote(const lease_key& key) {
  auto ended = store_->end_lease(key, lease_state::revoked, rt.clock().now(), false);
  if (!ended) {
    rt.logger().warn("task {} attempt {}: lease not revoked ({}); the lease sweep tries again",
                     key.task_id, key.attempt, ended.error().describe());
  }
  options.dispatcher->cancel(key);
}

void orchestrator_impl::on_remote_outcome(task_outcome out) {
  ops o(*this);
  auto it = tasks_.find(out.task_id);
  if (it == tasks_.end()) return;
  task_entry& e = it->second;
  if (!e.remote_run || e.t.state != task_state::running || e.t.attempt != out.attempt) {
    return;  // ended already (cancelled, timed out, lost) or a duplicate report
  }
  if (!out.agent.empty() || !out.worker.empty()) {
    e.t.agent = out.worker.empty()  ? out.agent
                : out.agent.empty() ? out.worker
                                    : out.worker + "/" + out.agent;
  }
  std::optional<aise::error> failure;
  if (out.state != task_state::succeeded) {
    failure = out.error ? std::move(*out.error)
                        : error(errc::handler_failed, "the worker reported no error");
  }
  e.remote_settled = true;
  if (!finish_attempt(o, e, std::move(out.result), std::move(failure), out.retryable,
                      out.state == task_state::awaiting_approval)) {
    e.remote_settled = false;  // still running here; the sweep finds the outcome again
  }
}

void orchestrator_impl::on_remote_lost(const lease_key& key, aise::error why, bool revoke) {
  ops o(*this);
  if (closed_) return;
  auto it = tasks_.find(key.task_id);
  if (it == tasks_.end()) return;
  task_entry& e = it->second;
  if (!e.remote_run || e.t.state != task_state::running || e.t.attempt != key.attempt) return;
  e.remote_settled = !revoke;
  if (!finish_attempt(o, e, std::nullopt, std::move(why), true)) e.remote_settled = false;
}

void orchestrator_impl::schedule_sweep() {
  if (closed_) return;
  sweep_timer_ = schedule_engine(options.lease_check_interval,
                                 [](orchestrator_impl& self) { self.sweep_leases(); });
}

// Reads the leases of every handed-over attempt (outside the lock) and acts
// on what the workers could not report: an outcome recorded but not
// delivered, a lease expired (the worker died), a lease ended otherwise.
// Hand-offs without a lease row are still waiting in the broker.
void orchestrator_impl::sweep_leases() {
  std::vector<std::string> ids;
  {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    ids.assign(remote_running_.begin(), remote_running_.end());
  }
  constexpr std::size_t chunk = 1000;
  for (std::size_t i = 0; i < ids.size(); i += chunk) {
    std::vector<std::string> part(
        ids.begin() + static_cast<std::ptrdiff_t>(i),
        ids.begin() + static_cast<std::ptrdiff_t>(std::min(ids.size(), i + chunk)));
    auto leases = store_->get_leases(part);
    if (!leases) {
      rt.logger().warn("lease sweep: {}", leases.error().describe());
      break;
    }
    const time_point now = rt.clock().now();
    for (auto& l : *leases) {
      int current = 0;
      {
        std::lock_guard lock(mutex_);
        auto it = tasks_.find(l.task_id);
        if (it != tasks_.end() && it->second.remote_run &&
            it->second.t.state == task_state::running) {
          current = it->second.t.attempt;
        }
      }
      const lease_key key{l.task_id, l.attempt};
      if (l.attempt != current) {
        // An older attempt still held (its revocation failed): revoke it now.
        if (l.state == lease_state::held && l.attempt < current) revoke_remote(key);
        continue;
      }
      if (l.state == lease_state::held && l.expires_at < now) {
        auto ended = store_->end_lease(key, lease_state::lost, now, true);
        if (!ended) {
          rt.logger().warn("lease sweep: {}", ended.error().describe());
          continue;
        }
        l = std::move(*ended);
      }
      switch (l.state) {
        case lease_state::held:
          break;
        case lease_state::done: {
          auto out = l.outcome ? task_outcome_from_json(*l.outcome)
                               : result<task_outcome>(error(errc::invalid_argument, "none"));
          if (out) {
            on_remote_outcome(std::move(*out));
          } else {
            on_remote_lost(key,
                           error(errc::handler_failed,
                                 fmt::format("the outcome worker '{}' recorded is unreadable: {}",
                                             l.worker, out.error().message())),
                           false);
          }
          break;
        }
        case lease_state::lost:
          on_remote_lost(
              key,
              error(errc::unavailable,
                    l.worker.empty()
                        ? std::string("lost: the lease ended before a worker took it")
                        : fmt::format("lost: worker '{}' stopped renewing its lease", l.worker)),
              false);
          break;
        case lease_state::revoked:
          on_remote_lost(key, error(errc::unavailable, "lost: the lease was revoked"), false);
          break;
      }
    }
  }
  std::lock_guard lock(mutex_);
  schedule_sweep();
}

void orchestrator_impl::drop_attempt(const std::string& id, int attempt) {
  ops o(*this);
  auto it = tasks_.find(id);
  if (it == tasks_.end() || it->second.t.state != task_state::running ||
      it->second.t.attempt != attempt) {
    return;
  }
  finish_attempt(o, it->second, std::nullopt,
                 error(errc::handler_failed, "the handler dropped the task without completing it"),
                 true);
}

result<void> orchestrator_impl::complete(const std::shared_ptr<task_run>& run_ptr,
                                         std::optional<nlohmann::json> value,
                                         std::optional<aise::error> failure, bool retryable,
                                         bool escalate) {
  task_run& run = *run_ptr;
  bool expected = false;
  if (!run.done.compare_exchange_strong(expected, true)) {
    if (run.aborted.load()) {
      return error(errc::cancelled, fmt::format("attempt {} of task {} was cancelled or timed out",
                                                run.task.attempt, run.task.id));
    }
    return error(errc::conflict, fmt::format("attempt {} of task {} is already complete",
                                             run.task.attempt, run.task.id));
  }
  if (engine_) {
    // Accepted: recorded on the orchestrator's thread, off this executor.
    post_engine([weak = weak_from_this(), run_ptr, value = std::move(value),
                 failure = std::move(failure), retryable, escalate]() mutable {
      if (auto self = weak.lock())
        self->finish_completion(run_ptr, std::move(value), std::move(failure), retryable, escalate);
    });
    return {};
  }
  ops o(*this);
  auto it = tasks_.find(run.task.id);
  if (it == tasks_.end() || it->second.t.state != task_state::running ||
      it->second.t.attempt != run.task.attempt) {
    return error(errc::cancelled, fmt::format("attempt {} of task {} is no longer running",
                                              run.task.attempt, run.task.id));
  }
  if (!finish_attempt(o, it->second, std::move(value), std::move(failure), retryable, escalate)) {
    run.done.store(false);  // nothing changed: the handler may complete again
    return error(errc::unavailable,
                 fmt::format("task {}: the store refused the change; try again", run.task.id));
  }
  if (run.async && run.runner) {
    auto runner = run.runner;
    o.after.push_back([this, runner] {
      agent_core& core = agent_access::core(*runner);
      if (core.checkpoint_hook) {
        rti.post_job(*runner, [&core] { core.checkpoint_hook(); });
      }
    });
  }
  return {};
}

// The own-thread half of complete(): records an accepted completion. A
// refused store write is tried again a second later, as long as the attempt
// is still the running one.
void orchestrator_impl::finish_completion(const std::shared_ptr<task_run>& run,
                                          std::optional<nlohmann::json> value,
                                          std::optional<aise::error> failure, bool retryable,
                                          bool escalate) {
  ops o(*this);
  auto it = tasks_.find(run->task.id);
  if (it == tasks_.end() || it->second.t.state != task_state::running ||
      it->second.t.attempt != run->task.attempt || closed_) {
    return;  // ended meanwhile (cancelled, timed out, agent lost): nothing to record
  }
  if (!finish_attempt(o, it->second, value, failure, retryable, escalate)) {
    rt.logger().warn("task {}: the store refused the completion; trying again in 1 s",
                     run->task.id);
    std::weak_ptr<orchestrator_impl> weak = weak_from_this();
    rt.schedule(
        std::chrono::seconds(1), [weak, run, value = std::move(value), failure = std::move(failure),
                                  retryable, escalate]() mutable {
          if (auto self = weak.lock()) {
            self->engine_call([weak, run, value = std::move(value), failure = std::move(failure),
                               retryable, escalate]() mutable {
              if (auto again = weak.lock())
                again->finish_completion(run, std::move(value), std::move(failure), retryable,
                                         escalate);
            });
          }
        });
    return;
  }
  if (run->async && run->runner) {
    auto runner = run->runner;
    o.after.push_back([this, runner] {
      agent_core& core = agent_access::core(*runner);
      if (core.checkpoint_hook) {
        rti.post_job(*runner, [&core] { core.checkpoint_hook(); });
      }
    });
  }
}

// Ends a running attempt from outside its handler: a late completion by the
// handler then returns `cancelled` and changes nothing, and its token is set.
void orchestrator_impl::abort_run(ops& o, task_entry& e) {
  if (auto run = e.run.lock()) {
    run->aborted.store(true);
    run->done.store(true);
  }
  if (e.token) cancel_token(o, *e.token);
}

void orchestrator_impl::cancel_token(ops& o, const cancellation_token& token) {
  auto callbacks = cancellation_access::mark(token);
  if (callbacks.empty()) return;
  o.after.push_back([callbacks = std::move(callbacks)] {
    for (const auto& cb : callbacks) {
      try {
        cb();
      } catch (...) {  // NOLINT(bugprone-empty-catch): documented: callbacks must not throw
      }
    }
  });
}

orchestrator_impl::agent_entry* orchestrator_impl::release_slot(ops& o, task_entry& e,
                                                                bool redispatch) {
  if (e.timeout_timer != 0) {
    rt.cancel_timer(e.timeout_timer);
    e.timeout_timer = 0;
  }
  if (e.remote_run) {
    end_remote(o, e);
    return nullptr;
  }
  auto a = agents_.find(e.t.agent);
  if (a == agents_.end()) return nullptr;
  auto& running = a->second.running;
  auto slot = std::find(running.begin(), running.end(), e.t.id);
  if (slot != running.end()) {
    *slot = std::move(running.back());
    running.pop_back();
    if (redispatch) dispatch_for(o, a->second);
  }
  return &a->second;  // entries are only erased when a spawn fails: stable
}

bool orchestrator_impl::finish_attempt(ops& o, task_entry& e, std::optional<nlohmann::json> value,
                                       std::optional<aise::error> failure, bool retryable,
                                       bool escalate) {
  const time_point now = rt.clock().now();
  task_attempt row{e.t.id, e.t.attempt, e.t.agent, {}, now, task_state::succeeded, std::nullopt};
  // The attempt started when the task went running (its last change since).
  row.started_at = e.t.updated_at;
  if (auto r = e.run.lock()) row.started_at = r->task.updated_at;
  if (!failure) {
    task_update u = base_update(e, task_state::succeeded, now);
    u.result = value ? std::move(value) : std::optional<nlohmann::json>(nullptr);
    u.attempt_row = std::move(row);
    // No data: the attempt and agent were announced by its task.running event.
    if (!apply(o, e, std::move(u))) return false;
    observe_attempt(e, true);  // once the outcome is recorded (a refused write is tried again)
    agent_entry* runner = release_slot(o, e, false);
    on_terminal(o, e.t.id);  // `e` is gone after this
    if (runner != nullptr) dispatch_for(o, *runner);
    return true;
  }
  const std::string id = e.t.id;
  row.outcome = task_state::failed;
  row.error = failure;
  const bool deadline_passed = e.t.deadline && now >= *e.t.deadline;
  const std::string agent_name = e.t.agent;
  if (escalate && !deadline_passed) {
    // Paused for a human: the attempt ends, the task waits for approval
    // (approve runs it again, reject cancels it). Its reason is the error.
    row.outcome = task_state::awaiting_approval;
    task_update u = base_update(e, task_state::awaiting_approval);
    u.error = failure;
    u.attempt_row = row;
    u.event.data = {{"attempt", e.t.attempt},
                    {"agent", e.t.agent},
                    {"escalated", true},
                    {"reason", error_json(*failure)}};
    if (!apply(o, e, std::move(u))) return false;
    e.approved = false;
    release_slot(o, e, false);
  } else if (retryable && e.t.attempt < e.t.max_attempts && !deadline_passed) {
    const duration delay = retry_backoff(e.t.attempt);
    task_update u = base_update(e, task_state::retrying);
    u.error = failure;
    u.not_before = now + delay;
    u.attempt_row = row;
    u.event.data = {
        {"attempt", e.t.attempt},
        {"agent", e.t.agent},
        {"error", error_json(*failure)},
        {"retry_in_ms", std::chrono::duration_cast<std::chrono::milliseconds>(delay).count()}};
    if (!apply(o, e, std::move(u))) return false;
    observe_attempt(e, false);
    release_slot(o, e, false);
    e.retry_timer = schedule_engine(
        delay, [id, n = e.t.attempt](orchestrator_impl& self) { self.on_retry_due(id, n); });
  } else {
    if (e.remote_run) {
      // Handed over and failed for good: the dispatcher keeps the last
      // hand-off with the reason (RabbitMQ: the dead-letter queue).
      o.after.push_back([weak = weak_from_this(),
                         h = task_handoff{e.remote_run->task, *e.remote_run->dep_results},
                         why = fmt::format("failed after attempt {} of {}: {}", e.t.attempt,
                                           e.t.max_attempts, failure->describe())]() mutable {
        if (auto self = weak.lock())
          self->options.dispatcher->dead_letter(std::move(h), std::move(why));
      });
    }
    task_update u = base_update(e, task_state::failed);
    u.error = failure;
    u.attempt_row = row;
    u.event.data = {
        {"attempt", e.t.attempt}, {"agent", e.t.agent}, {"error", error_json(*failure)}};
    if (!apply(o, e, std::move(u))) return false;
    observe_attempt(e, false);
    release_slot(o, e, false);
    on_terminal(o, id);
  }
  if (auto a = agents_.find(agent_name); a != agents_.end()) dispatch_for(o, a->second);
  return true;
}

duration orchestrator_impl::retry_backoff(int attempt) {
  double base = static_cast<double>(options.retry_initial_backoff.count()) *
                std::pow(options.retry_multiplier, std::max(0, attempt - 1));
  base = std::min(base, static_cast<double>(options.retry_max_backoff.count()));
  std::uniform_real_distribution<double> spread(-options.retry_jitter, options.retry_jitter);
  const double jittered = base * (1.0 + spread(rng_));
  return duration(static_cast<duration::rep>(std::max(0.0, jittered)));
}

void orchestrator_impl::on_retry_due(const std::string& id, int attempt) {
  ops o(*this);
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return;
  task_entry& e = it->second;
  if (e.t.state != task_state::retrying || e.t.attempt != attempt) return;
  e.retry_timer = 0;
  task_update u = base_update(e, task_state::queued);
  if (!apply(o, e, std::move(u))) return;
  queue_and_dispatch(o, e);
}

void orchestrator_impl::on_timeout(const std::string& id, int attempt) {
  ops o(*this);
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return;
  task_entry& e = it->second;
  if (e.t.state != task_state::running || e.t.attempt != attempt) return;
  e.timeout_timer = 0;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*e.t.timeout).count();
  auto run = e.run.lock();
  const std::optional<cancellation_token> token = e.token;
  if (!finish_attempt(
          o, e, std::nullopt,
          error(errc::timeout, fmt::format("attempt {} timed out after {} ms", attempt, ms)),
          true)) {
    // The store refused the change: try again shortly rather than leave the
    // attempt running past its timeout.
    e.timeout_timer =
        schedule_engine(std::chrono::seconds(1),
                        [id, attempt](orchestrator_impl& self) { self.on_timeout(id, attempt); });
    return;
  }
  // A late completion by the handler now changes nothing; its token is set.
  if (run) {
    run->aborted.store(true);
    run->done.store(true);
  }
  if (token) cancel_token(o, *token);
}

void orchestrator_impl::on_deadline(const std::string& id) {
  ops o(*this);
  auto it = tasks_.find(id);
  if (it == tasks_.end() || is_terminal(it->second.t.state)) return;
  it->second.deadline_timer = 0;
  if (!abort_task(o, it->second, task_state::failed,
                  error(errc::timeout, "the task's deadline passed"))) {
    it->second.deadline_timer = schedule_engine(
        std::chrono::seconds(1), [id](orchestrator_impl& self) { self.on_deadline(id); });
  }
}

// Ends tasks whose dependency (or parent) failed, by each task's policy:
// cancelled, or failed naming the dependency.
void orchestrator_impl::end_doomed(ops& o,
                                   const std::vector<std::pair<std::string, aise::error>>& doomed) {
  for (const auto& [id, why] : doomed) {
    auto it = tasks_.find(id);
    if (it == tasks_.end() || is_terminal(it->second.t.state)) continue;
    const bool fail = it->second.t.on_dependency_failure == dependency_failure_policy::fail;
    abort_task(o, it->second, fail ? task_state::failed : task_state::cancelled,
               error(fail ? errc::handler_failed : errc::cancelled, why.message()));
  }
}

// Ends a task from outside its handler: cancel, reject, deadline, or a
// failed dependency. A running attempt is cancelled (token set) first.
bool orchestrator_impl::abort_task(ops& o, task_entry& e, task_state to, aise::error why) {
  const task_state from = e.t.state;
  std::optional<task_attempt> row;
  if (from == task_state::running) {
    row = task_attempt{e.t.id, e.t.attempt, e.t.agent, {}, rt.clock().now(), to, why};
    row->started_at = e.t.updated_at;  // when it went running
    if (auto r = e.run.lock()) row->started_at = r->task.updated_at;
  }
  task_update u = base_update(e, to);
  u.error = why;
  u.attempt_row = std::move(row);
  u.event.data = {{"from", to_string(from)}, {"error", error_json(why)}};
  if (!apply(o, e, std::move(u))) return false;  // nothing changed
  if (from == task_state::running) {
    abort_run(o, e);
  } else if (from == task_state::queued) {
    if (auto rq = ready_.find(capability_of(e.t)); rq != ready_.end()) {
      rq->second.erase(ready_key{-e.t.priority, e.seq, e.t.id});
    }
  } else if (from == task_state::retrying && e.retry_timer != 0) {
    rt.cancel_timer(e.retry_timer);
    e.retry_timer = 0;
  }
  std::string agent_name;
  if (from == task_state::running) {
    agent_name = e.t.agent;
    release_slot(o, e, false);
  }
  on_terminal(o, e.t.id);
  if (!agent_name.empty()) {
    if (auto a = agents_.find(agent_name); a != agents_.end()) dispatch_for(o, a->second);
  }
  return true;
}

// A task reached a terminal state: wake waiters, resolve dependents and
// children, then drop it from the cache (the store keeps it).
void orchestrator_impl::on_terminal(ops& o, const std::string& task_id) {
  auto it = tasks_.find(task_id);
  if (it == tasks_.end()) return;
  task_entry& e = it->second;
  for (auto t : {e.timeout_timer, e.retry_timer, e.deadline_timer}) {
    if (t != 0) rt.cancel_timer(t);
  }
  const task_state state = e.t.state;
  const std::vector<std::string> dependents = std::move(e.dependents);
  const std::vector<std::string> children = std::move(e.children);
  // Out of the map, but the node lives to the end of this function: `id`
  // stays valid even when `task_id` is the entry's own id.
  auto node = tasks_.extract(it);  // `e` is no longer in tasks_ from here on
  const std::string& id = node.key();
  std::optional<nlohmann::json> result;
  if (engine_ || !e.waiters.empty()) {
    if (!dependents.empty()) result = e.t.result;
    // One copy of the final task, shared by the waiters and the finished cache.
    auto snapshot =
        std::make_shared<const aise::task>(std::move(e.t));  // the entry is done with it
    if (engine_) remember_finished(snapshot);
    for (auto& w : e.waiters) {
      if (w.gone && w.gone->load()) continue;
      // After the lock is released, and with group commit after the change
      // is written.
      o.after.push_back([&io = rti.io(), fn = std::move(w.fn), snapshot]() mutable {
        boost::asio::post(io, [fn = std::move(fn), snapshot] { fn(*snapshot); });
      });
    }
    e.waiters.clear();
  } else {
    result = std::move(e.t.result);
  }

  for (const auto& d : dependents) {
    auto dit = tasks_.find(d);
    if (dit == tasks_.end() || is_terminal(dit->second.t.state)) continue;
    task_entry& de = dit->second;
    if (state == task_state::succeeded) {
      de.dep_results[id] = result.value_or(nullptr);
      if (de.unmet > 0) --de.unmet;
      if (de.unmet == 0 && de.t.state == task_state::pending) make_ready(o, de);
    } else {
      const bool fail = de.t.on_dependency_failure == dependency_failure_policy::fail;
      const std::string msg = fmt::format("dependency '{}' {}", id, to_string(state));
      abort_task(o, de, fail ? task_state::failed : task_state::cancelled,
                 error(fail ? errc::handler_failed : errc::cancelled, msg));
    }
  }
  if (state != task_state::succeeded) {
    for (const auto& c : children) {
      auto cit = tasks_.find(c);
      if (cit == tasks_.end() || is_terminal(cit->second.t.state)) continue;
      abort_task(o, cit->second, task_state::cancelled,
                 error(errc::cancelled, fmt::format("parent task '{}' {}", id, to_string(state))));
    }
  }
}

result<void> orchestrator_impl::cancel(std::string_view id, std::string reason) {
  ops o(*this);
  auto it = tasks_.find(std::string(id));
  if (it == tasks_.end()) {
    auto stored = store_->get_task(id);
    if (!stored) return stored.error();
    return error(errc::illegal_transition,
                 fmt::format("task {} is already {}", id, to_string(stored->state)));
  }
  if (!abort_task(o, it->second, task_state::cancelled,
                  error(errc::cancelled, std::move(reason)))) {
    return error(errc::unavailable, "cancel: the store refused the change");
  }
  return {};
}

result<void> orchestrator_impl::approve(std::string_view id, std::string by) {
  ops o(*this);
  auto it = tasks_.find(std::string(id));
  if (it == tasks_.end() || it->second.t.state != task_state::awaiting_approval) {
    auto t = it != tasks_.end() ? result<aise::task>(it->second.t) : store_->get_task(id);
    if (!t) return t.error();
    return error(errc::illegal_transition,
                 fmt::format("task {} is {}, not awaiting approval", id, to_string(t->state)));
  }
  task_entry& e = it->second;
  e.approved = true;
  task_update u = base_update(e, task_state::queued);
  u.event.data = {{"approved_by", by}};
  if (!apply(o, e, std::move(u)))
    return error(errc::unavailable, "approve: the store refused the change");
  queue_and_dispatch(o, e);
  return {};
}

result<void> orchestrator_impl::reject(std::string_view id, std::string by, std::string reason) {
  ops o(*this);
  auto it = tasks_.find(std::string(id));
  if (it == tasks_.end() || it->second.t.state != task_state::awaiting_approval) {
    auto t = it != tasks_.end() ? result<aise::task>(it->second.t) : store_->get_task(id);
    if (!t) return t.error();
    return error(errc::illegal_transition,
                 fmt::format("task {} is {}, not awaiting approval", id, to_string(t->state)));
  }
  std::string msg = by.empty() ? std::string("rejected") : fmt::format("rejected by {}", by);
  if (!reason.empty()) msg += ": " + reason;
  if (!abort_task(o, it->second, task_state::cancelled, error(errc::rejected, msg))) {
    return error(errc::unavailable, "reject: the store refused the change");
  }
  return {};
}

result<task> orchestrator_impl::get(std::string_view id) const {
  {
    std::lock_guard lock(mutex_);
    const std::string key(id);
    auto it = tasks_.find(key);
    if (it != tasks_.end()) return it->second.t;
    // Finished lately (its last change may still wait in the batch).
    if (auto f = finished_.find(key); f != finished_.end()) return *f->second.task;
  }
  if (auto spawned = spawn_view(std::string(id))) return std::move(*spawned);
  return store_->get_task(id);
}

result<void> orchestrator_impl::when_done(std::string_view id, std::function<void(const task&)> fn,
                                          std::shared_ptr<std::atomic<bool>> gone) {
  std::unique_lock lock(mutex_);
  auto it = tasks_.find(std::string(id));
  if (it != tasks_.end()) {
    // Drop waiters whose wait() gave up, so polling a long task stays bounded.
    auto& waiters = it->second.waiters;
    std::erase_if(waiters, [](const task_entry::waiter& w) { return w.gone && w.gone->load(); });
    waiters.push_back(task_entry::waiter{std::move(gone), std::move(fn)});
    return {};
  }
  if (auto f = finished_.find(std::string(id)); f != finished_.end()) {
    if (f->second.generation <= written_generation_) {
      // Terminal and written: at once, on this thread (as a store read would).
      std::shared_ptr<const aise::task> done = f->second.task;
      lock.unlock();
      fn(*done);
      return {};
    }
    auto tell = [&io = rti.io(), fn = std::move(fn), done = f->second.task]() mutable {
      boost::asio::post(io, [fn = std::move(fn), done = std::move(done)] { fn(*done); });
    };
    // Its last change still waits in the batch: told once that is written.
    batch_after_.push_back(std::move(tell));
    if (!flush_scheduled_) schedule_flush(false);  // also when its batch is being written now
    return {};
  }
  {
    // A subtask still on its way to the store, or refused on the way.
    std::lock_guard spawn_lock(spawn_mutex_);
    const std::string key(id);
    if (auto f = failed_spawns_.find(key); f != failed_spawns_.end()) {
      boost::asio::post(rti.io(), [fn = std::move(fn), t = f->second] { fn(t); });
      return {};
    }
    if (auto w = spawning_.find(key); w != spawning_.end()) {
      w->second.push_back(std::move(fn));
      return {};
    }
  }
  lock.unlock();
  auto t = store_->get_task(id);
  if (!t) return t.error();
  if (!is_terminal(t->state)) {
    return error(errc::unavailable,
                 fmt::format("task {} is not scheduled by this orchestrator", id));
  }
  fn(*t);
  return {};
}

// ----------------------------------------------------------------- events --

// Recovery: schedule what the store says is unfinished (orchestrator.hpp).
result<recovery_report> orchestrator_impl::recover() {
  recovery_report report;
  // Agents first (outside the lock: spawning runs user factories).
  std::vector<agent_spawn> to_spawn;
  {
    auto stored = store_->list_agents("");
    if (!stored) return stored.error();
    std::lock_guard lock(mutex_);
    if (recovered_) return error(errc::already_exists, "recover: already called");
    recovered_ = true;
    for (const auto& a : *stored) {
      if (a.status != "running" && a.status != "starting" && a.status != "restarting") continue;
      if (kinds_.count(a.kind) == 0 || agents_.count(a.id) != 0) continue;
      to_spawn.push_back(agent_spawn{a.kind, a.id, a.project, 0, 0});
    }
  }
  for (auto& spec : to_spawn) {
    const std::string name = spec.name;
    if (auto r = spawn(std::move(spec)); r) {
      ++report.agents;
    } else {
      rt.logger().error("recover: agent '{}' not spawned again: {}", name, r.error().describe());
    }
  }

  // Every unfinished task, page by page.
  std::vector<aise::task> unfinished;
  task_filter f;
  f.states = {task_state::pending, task_state::queued, task_state::running, task_state::retrying,
              task_state::awaiting_approval};
  f.limit = 1000;
  for (;;) {
    auto pg = store_->list_tasks(f);
    if (!pg) return pg.error();
    for (auto& t : pg->items) unfinished.push_back(std::move(t));
    if (pg->next_cursor.empty()) break;
    f.after = pg->next_cursor;
  }

  ops o(*this);
  const time_point now = rt.clock().now();
  // Entries first (in id order, which is creation order for generated ids).
  std::vector<task_entry*> entries;
  entries.reserve(unfinished.size());
  for (auto& t : unfinished) {
    if (tasks_.count(t.id) != 0) continue;  // submitted here already
    const std::string id = t.id;
    task_entry& e = tasks_.try_emplace(id).first->second;
    e.seq = next_seq_++;
    e.t = std::move(t);
    e.approved = e.t.state != task_state::pending && e.t.state != task_state::awaiting_approval;
    entries.push_back(&e);
  }
  report.tasks = entries.size();
  // Dependencies, parents and deadlines.
  std::vector<std::pair<std::string, aise::error>> doomed;
  for (task_entry* entry : entries) {
    task_entry& e = *entry;
    const std::string& id = e.t.id;
    for (const auto& d : e.t.depends_on) {
      if (auto live = tasks_.find(d); live != tasks_.end()) {
        live->second.dependents.push_back(id);
        ++e.unmet;
        continue;
      }
      auto stored = store_->get_task(d);
      if (stored && stored->state == task_state::succeeded) {
        e.dep_results[d] = stored->result.value_or(nullptr);
      } else if (e.t.state == task_state::pending) {
        const std::string why = stored
                                    ? fmt::format("dependency '{}' {}", d, to_string(stored->state))
                                    : fmt::format("dependency '{}' is gone from the store ({})", d,
                                                  stored.error().message());
        doomed.emplace_back(id, error(errc::cancelled, why));
      }
    }
    if (!e.t.parent.empty()) {
      if (auto p = tasks_.find(e.t.parent); p != tasks_.end()) p->second.children.push_back(id);
    }
    if (e.t.deadline) {
      const duration left = *e.t.deadline > now ? *e.t.deadline - now : duration::zero();
      e.deadline_timer =
          schedule_engine(left, [id](orchestrator_impl& self) { self.on_deadline(id); });
    }
  }
  // Ids now: ending a task (below) erases its entry.
  std::vector<std::string> ids;
  ids.reserve(entries.size());
  for (task_entry* entry : entries) ids.push_back(entry->t.id);
  entries.clear();
  end_doomed(o, doomed);
  // Each by its state.
  for (const auto& id : ids) {
    auto it = tasks_.find(id);
    if (it == tasks_.end()) continue;
    task_entry& e = it->second;
    switch (e.t.state) {
      case task_state::pending:
        if (e.unmet == 0) make_ready(o, e);
        break;
      case task_state::queued:
        enqueue_ready(e);
        break;
      case task_state::running: {
        if (options.dispatcher && e.t.agent.rfind("queue:", 0) == 0) {
          // Handed over: its worker may still run it (the sweep checks the
          // lease). Handed over again too, in case this process stopped
          // between writing the attempt and the broker's confirm; a worker
          // takes a lease only once, so a second delivery is dropped.
          adopt_remote(e);
          queue_handoff(o, e);
          break;
        }
        ++report.lost_attempts;
        finish_attempt(
            o, e, std::nullopt,
            error(errc::unavailable,
                  fmt::format("lost: attempt {} was running on '{}' when its process stopped",
                              e.t.attempt, e.t.agent)),
            true);
        break;
      }
      case task_state::retrying: {
        const duration left = e.t.not_before > now ? e.t.not_before - now : duration::zero();
        e.retry_timer = schedule_engine(
            left, [id, n = e.t.attempt](orchestrator_impl& self) { self.on_retry_due(id, n); });
        break;
      }
      default:  // awaiting_approval: waits for approve/reject
        break;
    }
  }
  // Queued tasks go to whoever is free now.
  std::vector<std::string> capabilities;
  for (const auto& [capability, queue] : ready_) {
    if (!queue.empty()) capabilities.push_back(capability);
  }
  for (const auto& c : capabilities) dispatch(o, c);
  return report;
}

void orchestrator_impl::agent_event(ops& o, const agent_entry& a, const std::string& type,
                                    nlohmann::json data) {
  (void)flush_locked(o);  // the log keeps the order of changes
  auto r =
      store_->append_event(event_draft{a.project, type, a.name, rt.clock().now(), std::move(data)});
  if (!r) {
    rt.logger().error("store: event {} of agent '{}' not written: {}", type, a.name,
                      r.error().describe());
    return;
  }
  emit(std::move(r.value()));
}

void orchestrator_impl::emit(event ev) {
  if (!has_listeners_.load(std::memory_order_acquire)) return;
  std::lock_guard lock(events_mutex_);
  if (listeners_.empty()) return;
  if (outbox_.size() >= max_outbox) {
    outbox_.pop_front();
    if (dropped_events_++ % 1024 == 0) {
      rt.logger().warn("event listeners are too slow: live events dropped (the store keeps them)");
    }
  }
  outbox_.push_back(std::move(ev));
  if (!delivering_) {
    delivering_ = true;
    std::weak_ptr<orchestrator_impl> weak = weak_from_this();
    boost::asio::post(rti.io(), [weak] {
      if (auto self = weak.lock()) self->deliver_events();
    });
  }
}

void orchestrator_impl::deliver_events() {
  for (;;) {
    std::deque<event> batch;
    std::vector<std::shared_ptr<listener_entry>> listeners;
    {
      // Taking mutex_ first means every event in the batch belongs to a
      // change that is complete (timers armed, slots released): a listener
      // that reacts to an event sees the orchestrator in the state it names.
      std::lock_guard state_lock(mutex_);
      std::lock_guard lock(events_mutex_);
      if (outbox_.empty()) {
        delivering_ = false;
        return;
      }
      batch.swap(outbox_);
      for (auto& [k, l] : listeners_) listeners.push_back(l);
    }
    // Held while listeners run, so that unsubscribe (from another thread)
    // can wait for a call in progress before it returns.
    std::lock_guard delivery(delivery_mutex_);
    delivering_thread_.store(std::this_thread::get_id());
    for (const auto& ev : batch) {
      for (auto& l : listeners) {
        if (!l->active.load(std::memory_order_acquire)) continue;
        try {
          l->fn(ev);
        } catch (const std::exception& e) {
          rt.logger().warn("event listener threw: {}", e.what());
        } catch (...) {
          rt.logger().warn("event listener threw a non-exception");
        }
      }
    }
    delivering_thread_.store(std::thread::id{});
  }
}

std::size_t orchestrator_impl::subscribe(event_listener listener) {
  std::lock_guard lock(events_mutex_);
  const std::size_t key = next_listener_++;
  auto entry = std::make_shared<listener_entry>();
  entry->fn = std::move(listener);
  listeners_.emplace_back(key, std::move(entry));
  has_listeners_.store(true, std::memory_order_release);
  return key;
}

void orchestrator_impl::unsubscribe(std::size_t key) {
  {
    std::lock_guard lock(events_mutex_);
    for (auto& [k, l] : listeners_) {
      if (k == key) l->active.store(false, std::memory_order_release);
    }
    std::erase_if(listeners_, [key](const auto& p) { return p.first == key; });
    has_listeners_.store(!listeners_.empty(), std::memory_order_release);
  }
  // A listener removing itself must not wait for its own call.
  if (delivering_thread_.load() != std::this_thread::get_id()) {
    std::lock_guard wait_for_delivery(delivery_mutex_);
  }
}

}  // namespace aise::detail

// ------------------------------------------------------ public interface --

namespace aise {

orchestrator::orchestrator(runtime& rt, orchestrator_options options)
    : impl_(std::make_shared<detail::orchestrator_impl>(rt, std::move(options))) {
  impl_->start();
}

orchestrator::~orchestrator() {
  impl_->close();
}

result<void> orchestrator::register_kind(std::string kind, agent_factory factory) {
  return impl_->register_kind(std::move(kind), std::move(factory));
}
std::vector<std::string> orchestrator::kinds() const {
  return impl_->kinds();
}
result<std::string> orchestrator::spawn(agent_spawn spec) {
  return impl_->spawn(std::move(spec));
}
result<void> orchestrator::stop_agent(std::string_view name) {
  return impl_->stop_agent(name);
}
result<void> orchestrator::restart_agent(std::string_view name) {
  return impl_->restart_agent(name);
}
std::vector<agent_status> orchestrator::agents() const {
  return impl_->agents();
}
result<agent_status> orchestrator::agent_info(std::string_view name) const {
  return impl_->agent_info(name);
}

result<std::string> orchestrator::submit(task_spec spec) {
  std::vector<task_spec> one;
  one.push_back(std::move(spec));
  auto ids = impl_->submit_all(std::move(one));
  if (!ids) return ids.error();
  return std::move(ids.value().front());
}
result<std::vector<std::string>> orchestrator::submit_all(std::vector<task_spec> specs) {
  return impl_->submit_all(std::move(specs));
}
result<void> orchestrator::cancel(std::string_view id, std::string reason) {
  return impl_->cancel(id, std::move(reason));
}
result<void> orchestrator::approve(std::string_view id, std::string by) {
  return impl_->approve(id, std::move(by));
}
result<void> orchestrator::reject(std::string_view id, std::string by, std::string reason) {
  return impl_->reject(id, std::move(by), std::move(reason));
}
result<std::string> orchestrator::retry(std::string_view id) {
  auto t = impl_->get(id);
  if (!t) return t.error();
  if (t->state != task_state::failed && t->state != task_state::cancelled) {
    return error(errc::illegal_transition, "task " + t->id + " is " +
                                               std::string(to_string(t->state)) +
                                               ": only a failed or cancelled task can be retried");
  }
  task_spec spec = static_cast<const task_spec&>(*t);
  spec.id.clear();
  spec.deadline.reset();  // an absolute deadline that made it fail would fail the copy at once
  return submit(std::move(spec));
}
result<recovery_report> orchestrator::recover() {
  return impl_->recover();
}
result<task> orchestrator::get(std::string_view id) const {
  return impl_->get(id);
}
result<void> orchestrator::when_done(std::string_view id, std::function<void(const task&)> fn) {
  return impl_->when_done(id, std::move(fn));
}

result<task> orchestrator::wait(std::string_view id, std::chrono::milliseconds timeout) {
  if (impl_->rt.on_executor()) {
    return error(errc::invalid_argument,
                 "wait() on an executor thread would deadlock; use when_done()");
  }
  auto promise = std::make_shared<std::promise<task>>();
  auto future = promise->get_future();
  auto gone = std::make_shared<std::atomic<bool>>(false);
  auto registered = impl_->when_done(
      id, [promise](const task& t) { promise->set_value(t); }, gone);
  if (!registered) return registered.error();
  if (future.wait_for(timeout) != std::future_status::ready) {
    gone->store(true);
    return error(errc::timeout,
                 fmt::format("task {} not finished within {} ms", id, timeout.count()));
  }
  return future.get();
}

std::size_t orchestrator::subscribe(event_listener listener) {
  return impl_->subscribe(std::move(listener));
}
void orchestrator::unsubscribe(std::size_t key) {
  impl_->unsubscribe(key);
}
aise::store& orchestrator::store() const noexcept {
  return *impl_->options.store;
}
runtime& orchestrator::rt() const noexcept {
  return impl_->rt;
}

}  // namespace aise
