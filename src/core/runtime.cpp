#include <aise/runtime.hpp>

#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <future>
#include <mutex>
#include <random>
#include <spdlog/logger.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <unordered_map>

#include "runtime_impl.hpp"

namespace aise::detail {

namespace {

// Per executor thread: which runtime it is draining for and the agent to run
// next. Handing a woken agent to the thread that woke it (instead of posting
// it to the shared queue) keeps request/reply ping-pong on one warm core; the
// hop limit keeps two chatty agents from starving everybody else.
struct worker_context {
  runtime_impl* rt = nullptr;
  std::shared_ptr<agent> next;
};
thread_local worker_context* current_worker = nullptr;
constexpr int max_hand_offs = 256;

std::uint64_t random_u64() {
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
}

}  // namespace

runtime_impl::runtime_impl(runtime& rt_owner, runtime_options opts, boost::asio::io_context* host)
    : owner(rt_owner), options(std::move(opts)) {
  if (options.threads == 0) options.threads = std::max(1U, std::thread::hardware_concurrency());
  if (options.blocking_threads == 0) options.blocking_threads = 1;
  if (options.mailbox_capacity == 0) options.mailbox_capacity = 1024;
  if (options.throughput == 0) options.throughput = 64;
  if (!options.clock) options.clock = make_system_clock();
  if (!options.logger) {
    options.logger = std::make_shared<spdlog::logger>(
        options.name, std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  }
  if (!options.transport) options.transport = make_inproc_transport();

  const std::uint64_t r = random_u64();
  tag_ = fmt::format("{:06x}", r & 0xffffffU);
  id_base_ = r & ~std::uint64_t{0xffffffffU};  // low 32 bits count; high bits tell runtimes apart

  if (host != nullptr) {
    io_ = host;
  } else {
    own_io_ = std::make_unique<boost::asio::io_context>(static_cast<int>(options.threads));
    io_ = own_io_.get();
    work_.emplace(io_->get_executor());
  }
  timers_ = std::make_unique<timer_service>(*io_, options.clock);
  blocking_ = std::make_unique<boost::asio::thread_pool>(options.blocking_threads);

  reply_address_ = fmt::format("{}.{}.replies", options.name, tag_);
  auto bound = options.transport->bind(reply_address_, [this](message&& m) -> result<void> {
    agent_core::pending_request p = take_request(m.correlation_id);
    if (!p.on_reply) return {};  // late reply: its request timed out
    timers_->cancel(p.timer);
    boost::asio::post(*io_, [cb = std::move(p.on_reply), m = std::move(m)]() mutable {
      if (m.is_error_reply()) {
        cb(m.reply_error());
      } else {
        cb(std::move(m));
      }
    });
    return {};
  });
  if (!bound) throw std::invalid_argument("aise::runtime: " + bound.error().describe());
  reply_binding_ = std::move(*bound);

  if (own_io_) {
    for (std::size_t i = 0; i < options.threads; ++i) {
      threads_.emplace_back([this] {
        // A user callback that throws (a timer, a reply callback, a posted
        // function) must not take the executor thread down with it.
        for (;;) {
          try {
            io_->run();
            return;
          } catch (const std::exception& e) {
            options.logger->error("an executor callback threw: {}", e.what());
          } catch (...) {
            options.logger->error("an executor callback threw a non-exception");
          }
        }
      });
    }
  }
}

runtime_impl::~runtime_impl() {
  if (!shut_down_) (void)shutdown(shutdown_mode::cancel, std::chrono::seconds(5));
  if (own_io_) {
    io_->stop();
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  blocking_->join();
}

bool runtime_impl::on_executor() const noexcept {
  return io_->get_executor().running_in_this_thread();
}

std::string runtime_impl::make_id(std::string_view prefix) {
  return fmt::format("{}-{}-{:010}", prefix, tag_,
                     name_counter_.fetch_add(1, std::memory_order_relaxed));
}

void runtime_impl::stamp(message& m) {
  if (m.id == 0) m.id = next_message_id();
  if (m.created_at == time_point{}) m.created_at = options.clock->now();
}

// ---------------------------------------------------------------- agents --

result<std::string> runtime_impl::spawn(std::unique_ptr<agent> a, spawn_options opts,
                                        std::optional<nlohmann::json> restore,
                                        std::function<void()> checkpoint_hook) {
  if (!a) return error(errc::invalid_argument, "spawn: null agent");
  if (stopping()) return error(errc::unavailable, "spawn: the runtime is shutting down");
  agent_core& core = agent_access::core(*a);
  if (core.life.load() != agent_life::created) {
    return error(errc::invalid_argument, "spawn: this agent object was already spawned");
  }
  if (!opts.kind.empty()) core.kind = opts.kind;
  std::string name = opts.name;
  {
    std::lock_guard lock(agents_mutex_);
    if (name.empty()) {
      do {
        name = fmt::format("{}-{}", core.kind, ++name_counters_[core.kind]);
      } while (agents_.count(name) != 0);
    }
    if (agents_.count(name) != 0) {
      return error(errc::already_exists, fmt::format("an agent named '{}' exists", name));
    }
  }
  core.name = name;
  core.project = opts.project;
  core.owner = &owner;
  core.rt = this;
  core.box = std::make_unique<mailbox>(opts.mailbox_capacity != 0 ? opts.mailbox_capacity
                                                                  : options.mailbox_capacity);
  core.restore_state = std::move(restore);
  core.checkpoint_hook = std::move(checkpoint_hook);
  std::shared_ptr<agent> shared(std::move(a));
  core.weak_self = shared;

  auto bound = options.transport->bind(
      name, [this, c = &core](message&& m) { return deliver(*c, std::move(m)); });
  if (!bound) return bound.error();
  {
    std::lock_guard lock(agents_mutex_);
    if (stopping()) return error(errc::unavailable, "spawn: the runtime is shutting down");
    if (!agents_.emplace(name, shared).second) {
      return error(errc::already_exists, fmt::format("an agent named '{}' exists", name));
    }
  }
  core.address = std::move(*bound);
  post_job(*shared, [this, &core, self = shared.get()] {
    if (core.restore_state) {
      agent_access::restore(*self, *core.restore_state);
      core.restore_state.reset();
    }
    agent_access::on_start(*self);
  });
  // Running (accepting messages) only now that the start job is first in
  // line: no message can be handled before restore() and on_start().
  agent_life expected = agent_life::created;
  core.life.compare_exchange_strong(expected, agent_life::running);
  return name;
}

result<void> runtime_impl::stop(std::string_view name) {
  auto a = find(name);
  if (!a) return error(errc::not_found, fmt::format("no agent named '{}'", name));
  agent_core& core = agent_access::core(*a);
  agent_life expected = agent_life::running;
  if (!core.life.compare_exchange_strong(expected, agent_life::stopping)) return {};
  post_job(*a, [&core] { core.stop_requested = true; });
  return {};
}

std::shared_ptr<agent> runtime_impl::find(std::string_view name) const {
  std::lock_guard lock(agents_mutex_);
  auto it = agents_.find(name);
  return it == agents_.end() ? nullptr : it->second;
}

std::vector<std::string> runtime_impl::agent_names() const {
  std::lock_guard lock(agents_mutex_);
  std::vector<std::string> names;
  names.reserve(agents_.size());
  for (const auto& [n, a] : agents_) names.push_back(n);
  return names;
}

bool runtime_impl::post_job(agent& a, std::function<void()> job) {
  agent_core& core = agent_access::core(a);
  switch (core.box->push_job(std::move(job))) {
    case mailbox::push_result::queued:
      return true;
    case mailbox::push_result::queued_and_schedule:
      if (auto self = core.weak_self.lock()) schedule(std::move(self));
      return true;
    default:
      return false;
  }
}

result<void> runtime_impl::deliver(agent_core& core, message&& m) {
  const bool is_reply = m.correlation_id != 0 && m.reply_to.empty();
  if (!is_reply && core.life.load(std::memory_order_acquire) != agent_life::running) {
    return error(errc::unavailable, fmt::format("agent '{}' is not running", core.name));
  }
  switch (core.box->push(std::move(m), !is_reply)) {
    case mailbox::push_result::queued:
      return {};
    case mailbox::push_result::queued_and_schedule:
      if (auto self = core.weak_self.lock()) schedule(std::move(self));
      return {};
    case mailbox::push_result::full:
      return error(errc::mailbox_full, fmt::format("mailbox of agent '{}' is full (capacity {})",
                                                   core.name, core.box->capacity()));
    case mailbox::push_result::closed:
      break;
  }
  return error(errc::unavailable, fmt::format("agent '{}' has stopped", core.name));
}

void runtime_impl::request_crash(agent_core& core, aise::error reason) {
  if (!core.crash_reason) core.crash_reason = std::move(reason);
}

void runtime_impl::schedule(std::shared_ptr<agent> a) {
  worker_context* w = current_worker;
  if (w != nullptr && w->rt == this && !w->next) {
    w->next = std::move(a);
    return;
  }
  boost::asio::post(*io_, [this, a = std::move(a)]() mutable { run_agent(std::move(a)); });
}

void runtime_impl::run_agent(std::shared_ptr<agent> a) {
  worker_context ctx;
  ctx.rt = this;
  worker_context* saved = current_worker;
  current_worker = &ctx;
  drain(*a);
  a.reset();
  for (int hops = 0; ctx.next && hops < max_hand_offs; ++hops) {
    auto next = std::move(ctx.next);
    ctx.next = nullptr;
    drain(*next);
  }
  current_worker = saved;
  if (ctx.next) {
    boost::asio::post(*io_, [this, n = std::move(ctx.next)]() mutable { run_agent(std::move(n)); });
  }
}

void runtime_impl::drain(agent& a) {
  agent_core& core = agent_access::core(a);
  std::vector<mail_item>& batch = core.batch;
  std::size_t handled = 0;
  while (handled < options.throughput) {
    if (!core.box->take_all(batch)) return;  // empty: the agent is idle again
    std::size_t i = 0;
    for (; i < batch.size(); ++i) {
      process(a, batch[i]);
      // An agent woken by this item waits for the whole batch if handed off
      // to this thread; with more items to go, let another thread take it.
      if (i + 1 < batch.size() && current_worker != nullptr && current_worker->next) {
        boost::asio::post(*io_, [this, n = std::move(current_worker->next)]() mutable {
          run_agent(std::move(n));
        });
        current_worker->next = nullptr;
      }
      if (core.crash_reason || core.stop_requested) {
        batch.clear();  // what followed the stop is dropped, like the rest of the mailbox
        finish(a, core);
        return;
      }
    }
    handled += i;
    batch.clear();  // keeps its capacity for the next swap
  }
  // Budget used up with work left: yield to the other agents queued before us.
  if (auto self = core.weak_self.lock()) {
    boost::asio::post(*io_, [this, s = std::move(self)]() mutable { run_agent(std::move(s)); });
  }
}

void runtime_impl::process(agent& a, mail_item& item) {
  agent_core& core = agent_access::core(a);
  try {
    if (item.job) {
      item.job();
    } else {
      dispatch_message(a, core, item.msg);
    }
  } catch (const std::exception& e) {
    request_crash(core, error(errc::handler_failed,
                              fmt::format("agent '{}' handler threw: {}", core.name, e.what())));
  } catch (...) {
    request_crash(core, error(errc::handler_failed,
                              fmt::format("agent '{}' handler threw a non-exception", core.name)));
  }
}

void runtime_impl::dispatch_message(agent& a, agent_core& core, message& m) {
  if (m.correlation_id != 0 && m.reply_to.empty()) {
    auto it = core.pending.find(m.correlation_id);
    if (it != core.pending.end()) {
      auto on_reply = std::move(it->second.on_reply);
      timers_->cancel(it->second.timer);
      core.pending.erase(it);
      if (m.is_error_reply()) {
        on_reply(m.reply_error());
      } else {
        on_reply(std::move(m));
      }
      return;
    }
    if (m.type == reply_type || m.is_error_reply()) {
      options.logger->debug("agent '{}': dropped a late reply ({})", core.name, m.type);
      return;
    }
  }
  if (auto h = core.handlers.find(m.type); h != core.handlers.end()) {
    h->second(m);
    return;
  }
  if (auto h = core.request_handlers.find(m.type); h != core.request_handlers.end()) {
    result<nlohmann::json> r = error(errc::internal, "unset");
    try {
      r = h->second(m);
    } catch (const std::exception& e) {
      r = error(errc::handler_failed, e.what());
    } catch (...) {
      r = error(errc::handler_failed, "handler threw a non-exception");
    }
    if (!m.reply_to.empty()) {
      message reply;
      reply.recipient = m.reply_to;
      reply.sender = core.name;
      reply.correlation_id = m.correlation_id;
      if (r) {
        reply.type = reply_type;
        reply.payload = std::move(r.value());
      } else {
        reply.type = error_reply_type;
        reply.payload = {{"code", to_string(r.error().code())}, {"message", r.error().message()}};
      }
      stamp(reply);
      if (auto sent = options.transport->send(std::move(reply)); !sent) {
        options.logger->debug("agent '{}': reply not delivered: {}", core.name,
                              sent.error().describe());
      }
    }
    return;
  }
  if (core.unhandled) {
    core.unhandled(m);
    return;
  }
  options.logger->debug("agent '{}': no handler for '{}'", core.name, m.type);
  if (!m.reply_to.empty()) {
    message reply;
    reply.recipient = m.reply_to;
    reply.sender = core.name;
    reply.correlation_id = m.correlation_id;
    reply.type = error_reply_type;
    reply.payload = {
        {"code", to_string(errc::no_handler)},
        {"message", fmt::format("agent '{}' has no handler for '{}'", core.name, m.type)}};
    stamp(reply);
    (void)options.transport->send(std::move(reply));
  }
  (void)a;
}

void runtime_impl::finish(agent& a, agent_core& core) {
  const bool failed = core.crash_reason.has_value();
  core.life.store(agent_life::stopping);
  if (!failed) {
    try {
      agent_access::on_stop(a);
    } catch (const std::exception& e) {
      options.logger->warn("agent '{}': on_stop threw: {}", core.name, e.what());
    } catch (...) {
      options.logger->warn("agent '{}': on_stop threw a non-exception", core.name);
    }
  } else {
    options.logger->warn("agent '{}' failed: {}", core.name, core.crash_reason->message());
  }
  core.address.reset();
  core.topics.clear();
  for (auto& [id, p] : core.pending) timers_->cancel(p.timer);
  core.pending.clear();
  core.life.store(agent_life::stopped);
  const std::size_t dropped = core.box->close();
  if (dropped != 0)
    options.logger->debug("agent '{}': {} queued items dropped", core.name, dropped);
  agent_exit ex{core.name, core.kind, failed, core.crash_reason};
  {
    std::lock_guard lock(agents_mutex_);
    auto it = agents_.find(core.name);
    if (it != agents_.end() && it->second.get() == &a) agents_.erase(it);
  }
  agents_cv_.notify_all();
  notify_exit(std::move(ex));
}

void runtime_impl::notify_exit(agent_exit ex) {
  std::vector<std::function<void(const agent_exit&)>> listeners;
  {
    std::lock_guard lock(listeners_mutex_);
    for (const auto& [k, fn] : exit_listeners_) listeners.push_back(fn);
  }
  for (auto& fn : listeners) {
    try {
      fn(ex);
    } catch (const std::exception& e) {
      options.logger->warn("exit listener threw: {}", e.what());
    } catch (...) {
      options.logger->warn("exit listener threw a non-exception");
    }
  }
}

std::size_t runtime_impl::add_exit_listener(std::function<void(const agent_exit&)> fn) {
  std::lock_guard lock(listeners_mutex_);
  const std::size_t key = next_listener_++;
  exit_listeners_.emplace_back(key, std::move(fn));
  return key;
}

void runtime_impl::remove_exit_listener(std::size_t key) {
  std::lock_guard lock(listeners_mutex_);
  std::erase_if(exit_listeners_, [key](const auto& p) { return p.first == key; });
}

// -------------------------------------------------------------- requests --

void runtime_impl::request(message m, duration timeout,
                           std::function<void(result<message>)> on_reply) {
  stamp(m);
  m.correlation_id = next_message_id();
  m.reply_to = reply_address_;
  const std::uint64_t corr = m.correlation_id;
  {
    std::lock_guard lock(requests_mutex_);
    requests_[corr].on_reply = std::move(on_reply);
  }
  const std::string to = m.recipient;
  const std::uint64_t timer = timers_->schedule_after(timeout, [this, corr, to, timeout] {
    auto cb = take_request(corr).on_reply;
    if (!cb) return;
    cb(error(errc::timeout,
             fmt::format("no reply from '{}' within {} ms", to,
                         std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count())));
  });
  {
    std::lock_guard lock(requests_mutex_);
    if (auto it = requests_.find(corr); it != requests_.end()) it->second.timer = timer;
  }
  if (auto sent = options.transport->send(std::move(m)); !sent) {
    auto cb = take_request(corr).on_reply;
    if (!cb) return;
    timers_->cancel(timer);
    boost::asio::post(*io_, [cb = std::move(cb), e = sent.error()] { cb(e); });
  }
}

agent_core::pending_request runtime_impl::take_request(std::uint64_t corr) {
  std::lock_guard lock(requests_mutex_);
  auto it = requests_.find(corr);
  if (it == requests_.end()) return {};
  agent_core::pending_request p = std::move(it->second);
  requests_.erase(it);
  return p;
}

void runtime_impl::run_blocking(std::function<void()> fn) {
  boost::asio::post(*blocking_, [this, fn = std::move(fn)] {
    try {
      fn();
    } catch (const std::exception& e) {
      options.logger->error("blocking work threw: {}", e.what());
    } catch (...) {
      options.logger->error("blocking work threw a non-exception");
    }
  });
}

// -------------------------------------------------------------- shutdown --

result<void> runtime_impl::shutdown(shutdown_mode mode, std::chrono::milliseconds deadline) {
  if (on_executor()) {
    return error(errc::invalid_argument, "shutdown called from an executor thread");
  }
  std::lock_guard guard(shutdown_mutex_);
  if (shut_down_) return {};
  {
    // Under the agents lock: a spawn either finished before (and is stopped
    // below) or sees `stopping_` and refuses.
    std::lock_guard lock(agents_mutex_);
    stopping_.store(true, std::memory_order_release);
  }
  const auto start = std::chrono::steady_clock::now();
  const auto until = start + deadline;
  const auto cancel_at = start + deadline * 3 / 4;

  auto stop_all = [&](bool drop_queued) {
    std::vector<std::shared_ptr<agent>> live;
    {
      std::lock_guard lock(agents_mutex_);
      for (auto& [n, a] : agents_) live.push_back(a);
    }
    for (auto& a : live) {
      agent_core& core = agent_access::core(*a);
      // Clearing drops an earlier stop job too, so a cancel always posts one;
      // a drain posts one only for agents not already stopping.
      if (drop_queued) core.box->clear();
      agent_life expected = agent_life::running;
      bool newly = core.life.compare_exchange_strong(expected, agent_life::stopping);
      if (!newly && expected == agent_life::created) {
        newly = core.life.compare_exchange_strong(expected, agent_life::stopping);
      }
      if (newly || drop_queued) post_job(*a, [&core] { core.stop_requested = true; });
    }
  };
  stop_all(mode == shutdown_mode::cancel);

  auto all_gone = [&] {
    std::lock_guard lock(agents_mutex_);
    return agents_.empty();
  };
  bool cancelled_rest = mode == shutdown_mode::cancel;
  while (!all_gone()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= until) break;
    if (!cancelled_rest && now >= cancel_at) {
      stop_all(true);
      cancelled_rest = true;
    }
    if (own_io_) {
      std::unique_lock lock(agents_mutex_);
      agents_cv_.wait_until(lock, std::min(until, cancelled_rest ? until : cancel_at),
                            [&] { return agents_.empty(); });
    } else {
      io_->run_one_for(std::chrono::milliseconds(10));  // the host may not be running it now
    }
  }
  std::vector<std::string> busy = agent_names();
  timers_->shutdown();
  reply_binding_.reset();
  {
    std::lock_guard lock(requests_mutex_);
    requests_.clear();
  }
  if (!busy.empty()) {
    return error(errc::timeout, fmt::format("shutdown: agents still busy after {} ms: {}",
                                            deadline.count(), fmt::join(busy, ", ")));
  }
  shut_down_ = true;
  if (own_io_) {
    work_.reset();
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  } else {
    while (io_->poll() != 0) {
    }
  }
  return {};
}

}  // namespace aise::detail

// ------------------------------------------------------ public interface --

namespace aise {

runtime::runtime(runtime_options options)
    : impl_(std::make_unique<detail::runtime_impl>(*this, std::move(options), nullptr)) {}

runtime::runtime(boost::asio::io_context& host, runtime_options options)
    : impl_(std::make_unique<detail::runtime_impl>(*this, std::move(options), &host)) {}

runtime::~runtime() = default;

result<std::string> runtime::spawn(std::unique_ptr<agent> a, spawn_options options) {
  return impl_->spawn(std::move(a), std::move(options), std::nullopt, nullptr);
}

result<void> runtime::stop(std::string_view name) {
  return impl_->stop(name);
}

std::vector<std::string> runtime::agents() const {
  return impl_->agent_names();
}

bool runtime::has_agent(std::string_view name) const {
  return impl_->find(name) != nullptr;
}

result<void> runtime::send(message m) {
  if (m.recipient.empty()) return error(errc::invalid_argument, "send: empty recipient");
  impl_->stamp(m);
  return impl_->options.transport->send(std::move(m));
}

result<void> runtime::send(std::string to, std::string type, nlohmann::json payload) {
  message m;
  m.recipient = std::move(to);
  m.type = std::move(type);
  m.payload = std::move(payload);
  return send(std::move(m));
}

result<void> runtime::publish(message m) {
  if (m.topic.empty()) return error(errc::invalid_argument, "publish: empty topic");
  impl_->stamp(m);
  return impl_->options.transport->publish(std::move(m));
}

void runtime::request(message m, duration timeout, std::function<void(result<message>)> on_reply) {
  impl_->request(std::move(m), timeout, std::move(on_reply));
}

result<message> runtime::call(std::string to, std::string type, nlohmann::json payload,
                              duration timeout) {
  if (impl_->on_executor()) {
    return error(errc::invalid_argument,
                 "call() on an executor thread would deadlock; use request()");
  }
  auto promise = std::make_shared<std::promise<result<message>>>();
  auto future = promise->get_future();
  message m;
  m.recipient = std::move(to);
  m.type = std::move(type);
  m.payload = std::move(payload);
  impl_->request(std::move(m), timeout,
                 [promise](result<message> r) { promise->set_value(std::move(r)); });
  // The request times out on the runtime's clock; the real-time cap only
  // guards against a manual clock that nobody advances.
  const auto cap =
      std::chrono::duration_cast<std::chrono::milliseconds>(timeout) + std::chrono::seconds(5);
  if (future.wait_for(cap) != std::future_status::ready) {
    return error(errc::timeout, "call: no reply and the clock did not advance");
  }
  return future.get();
}

timer_id runtime::schedule(duration delay, std::function<void()> fn) {
  return impl_->timers().schedule_after(delay, std::move(fn));
}

bool runtime::cancel_timer(timer_id id) {
  return impl_->timers().cancel(id);
}

void runtime::post(std::function<void()> fn) {
  boost::asio::post(impl_->io(), std::move(fn));
}

void runtime::run_blocking(std::function<void()> fn) {
  impl_->run_blocking(std::move(fn));
}

bool runtime::on_executor() const noexcept {
  return impl_->on_executor();
}

std::size_t runtime::on_agent_exit(std::function<void(const agent_exit&)> fn) {
  return impl_->add_exit_listener(std::move(fn));
}

void runtime::remove_exit_listener(std::size_t key) {
  impl_->remove_exit_listener(key);
}

result<void> runtime::shutdown(shutdown_mode mode, std::chrono::milliseconds deadline) {
  return impl_->shutdown(mode, deadline);
}

std::string runtime::make_id(std::string_view prefix) {
  return impl_->make_id(prefix);
}

std::uint64_t runtime::next_message_id() noexcept {
  return impl_->next_message_id();
}

aise::clock& runtime::clock() const noexcept {
  return *impl_->options.clock;
}

std::shared_ptr<aise::clock> runtime::clock_ptr() const noexcept {
  return impl_->options.clock;
}

spdlog::logger& runtime::logger() const noexcept {
  return *impl_->options.logger;
}

aise::transport& runtime::transport() const noexcept {
  return *impl_->options.transport;
}

const runtime_options& runtime::options() const noexcept {
  return impl_->options;
}

service_registry& runtime::services() const noexcept {
  return impl_->services;
}

// ---------------------------------------------------------- service_registry --

struct service_registry::state {
  mutable std::mutex mutex;
  std::unordered_map<std::type_index, std::shared_ptr<void>> services;
};

service_registry::service_registry() : state_(std::make_unique<state>()) {}
service_registry::~service_registry() = default;

void service_registry::put_any(std::type_index type, std::shared_ptr<void> service) {
  std::shared_ptr<void> old;  // released outside the lock
  std::lock_guard lock(state_->mutex);
  auto& slot = state_->services[type];
  old = std::move(slot);
  slot = std::move(service);
}

std::shared_ptr<void> service_registry::find_any(std::type_index type) const {
  std::lock_guard lock(state_->mutex);
  auto it = state_->services.find(type);
  return it == state_->services.end() ? nullptr : it->second;
}

std::shared_ptr<void> service_registry::get_or_put_any(
    std::type_index type, const std::function<std::shared_ptr<void>()>& make) {
  if (auto found = find_any(type)) return found;
  // Made outside the lock (a factory may use the registry); a racing
  // caller's object wins if it got there first.
  std::shared_ptr<void> made = make();
  std::lock_guard lock(state_->mutex);
  auto& slot = state_->services[type];
  if (!slot) slot = std::move(made);
  return slot;
}

}  // namespace aise
