#include <aise/agent.hpp>
#include <aise/runtime.hpp>

#include <fmt/format.h>
#include <spdlog/logger.h>

#include "agent_core.hpp"
#include "runtime_impl.hpp"

namespace aise {

namespace {

detail::runtime_impl& rt_of(const detail::agent_core& core) {
  // Precondition of every strand-only member: the agent was spawned.
  return *core.rt;
}

// Sends `m` (sender, id and time filled in) from the agent owning `core`.
result<void> send_from(detail::agent_core& core, message&& m) {
  if (m.recipient.empty()) return error(errc::invalid_argument, "send: empty recipient");
  auto& rt = rt_of(core);
  m.sender = core.name;
  rt.stamp(m);
  return rt.options.transport->send(std::move(m));
}

// Removes the pending request `corr` and returns its callback (empty when
// it was already answered or timed out).
std::function<void(result<message>)> take_pending(detail::agent_core& core, std::uint64_t corr) {
  auto it = core.pending.find(corr);
  if (it == core.pending.end()) return nullptr;
  auto cb = std::move(it->second.on_reply);
  core.pending.erase(it);
  return cb;
}
}  // namespace

agent::agent() : core_(std::make_unique<detail::agent_core>()) {
  core_->self = this;
}

agent::~agent() = default;

const std::string& agent::name() const noexcept {
  return core_->name;
}
const std::string& agent::kind() const noexcept {
  return core_->kind;
}
const std::set<std::string>& agent::capabilities() const noexcept {
  return core_->capabilities;
}

void agent::add_capability(std::string capability) {
  core_->capabilities.insert(std::move(capability));
}

void agent::on(std::string type, std::function<void(const message&)> handler) {
  core_->request_handlers.erase(type);
  core_->handlers[std::move(type)] = std::move(handler);
}

void agent::on_request(std::string type,
                       std::function<result<nlohmann::json>(const message&)> handler) {
  core_->handlers.erase(type);
  core_->request_handlers[std::move(type)] = std::move(handler);
}

void agent::on_unhandled(std::function<void(const message&)> handler) {
  core_->unhandled = std::move(handler);
}

void agent::on_task(std::string kind,
                    std::function<result<nlohmann::json>(task_context&)> handler) {
  core_->capabilities.insert(kind);
  core_->task_handlers[std::move(kind)] = detail::task_handler_entry{std::move(handler), nullptr};
}

void agent::on_task_async(std::string kind, std::function<void(task_context)> handler) {
  core_->capabilities.insert(kind);
  core_->task_handlers[std::move(kind)] = detail::task_handler_entry{nullptr, std::move(handler)};
}

result<void> agent::send(std::string to, std::string type, nlohmann::json payload) {
  message m;
  m.recipient = std::move(to);
  m.type = std::move(type);
  m.payload = std::move(payload);
  return send_from(*core_, std::move(m));  // by reference: one move fewer on the hot path
}

result<void> agent::send(message m) {
  return send_from(*core_, std::move(m));
}

void agent::request(std::string to, std::string type, nlohmann::json payload, duration timeout,
                    std::function<void(result<message>)> on_reply) {
  auto& rt = rt_of(*core_);
  message m;
  m.recipient = std::move(to);
  m.type = std::move(type);
  m.payload = std::move(payload);
  m.sender = core_->name;
  m.reply_to = core_->name;
  m.correlation_id = core_->next_correlation++;
  rt.stamp(m);
  const std::uint64_t corr = m.correlation_id;
  auto& pending = core_->pending[corr];
  pending.on_reply = std::move(on_reply);
  std::weak_ptr<agent> weak = core_->weak_self;
  detail::agent_core* core = core_.get();
  const std::string target = m.recipient;
  pending.timer = rt.timers().schedule_after(timeout, [&rt, weak, core, corr, target, timeout] {
    auto self = weak.lock();
    if (!self) return;
    rt.post_job(*self, [core, corr, target, timeout] {
      auto cb = take_pending(*core, corr);
      if (!cb) return;
      cb(error(
          errc::timeout,
          fmt::format("no reply from '{}' within {} ms", target,
                      std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count())));
    });
  });
  if (auto sent = rt.options.transport->send(std::move(m)); !sent) {
    // Report on the strand, after the caller's handler returns, like any reply.
    rt.timers().cancel(core_->pending[corr].timer);
    if (auto self = weak.lock()) {
      rt.post_job(*self, [core, corr, e = sent.error()] {
        if (auto cb = take_pending(*core, corr)) cb(e);
      });
    }
  }
}

result<void> agent::reply(const message& request, nlohmann::json payload) {
  if (request.reply_to.empty()) {
    return error(errc::invalid_argument, "reply: the message wants no reply");
  }
  message r;
  r.type = reply_type;
  r.recipient = request.reply_to;
  r.correlation_id = request.correlation_id;
  r.payload = std::move(payload);
  return send(std::move(r));
}

result<void> agent::publish(std::string topic, std::string type, nlohmann::json payload) {
  if (topic.empty()) return error(errc::invalid_argument, "publish: empty topic");
  auto& rt = rt_of(*core_);
  message m;
  m.topic = std::move(topic);
  m.type = std::move(type);
  m.payload = std::move(payload);
  m.sender = core_->name;
  rt.stamp(m);
  return rt.options.transport->publish(std::move(m));
}

result<void> agent::subscribe(std::string topic) {
  if (topic.empty()) return error(errc::invalid_argument, "subscribe: empty topic");
  if (core_->topics.count(topic) != 0) return {};
  auto& rt = rt_of(*core_);
  auto sub = rt.options.transport->subscribe(
      topic, [&rt, c = core_.get()](message&& m) { return rt.deliver(*c, std::move(m)); });
  if (!sub) return sub.error();
  core_->topics.emplace(std::move(topic), std::move(*sub));
  return {};
}

result<void> agent::unsubscribe(const std::string& topic) {
  auto it = core_->topics.find(topic);
  if (it == core_->topics.end()) {
    return error(errc::not_found, fmt::format("not subscribed to '{}'", topic));
  }
  core_->topics.erase(it);
  return {};
}

void agent::after(duration delay, std::function<void()> fn) {
  auto& rt = rt_of(*core_);
  std::weak_ptr<agent> weak = core_->weak_self;
  rt.timers().schedule_after(delay, [&rt, weak, fn = std::move(fn)]() mutable {
    if (auto self = weak.lock()) rt.post_job(*self, std::move(fn));
  });
}

void agent::run_blocking(std::function<nlohmann::json()> work,
                         std::function<void(result<nlohmann::json>)> then) {
  auto& rt = rt_of(*core_);
  std::weak_ptr<agent> weak = core_->weak_self;
  rt.run_blocking([&rt, weak, work = std::move(work), then = std::move(then)]() mutable {
    result<nlohmann::json> r = error(errc::internal, "unset");
    try {
      r = work();
    } catch (const std::exception& e) {
      r = error(errc::handler_failed, fmt::format("blocking work threw: {}", e.what()));
    } catch (...) {
      r = error(errc::handler_failed, "blocking work threw a non-exception");
    }
    if (auto self = weak.lock()) {
      rt.post_job(*self,
                  [then = std::move(then), r = std::move(r)]() mutable { then(std::move(r)); });
    }
  });
}

void agent::checkpoint() {
  if (core_->checkpoint_hook) core_->checkpoint_hook();
}

void agent::stop_self() {
  core_->stop_requested = true;
}

void agent::crash(aise::error reason) {
  rt_of(*core_).request_crash(*core_, std::move(reason));
}

runtime& agent::rt() const noexcept {
  return *core_->owner;
}

spdlog::logger& agent::log() const noexcept {
  return *rt_of(*core_).options.logger;
}

time_point agent::now() const noexcept {
  return rt_of(*core_).options.clock->now();
}

}  // namespace aise
