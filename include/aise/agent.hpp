#pragma once
/// @file
/// The agent base class users subclass.
///
/// An agent has a name (its address), a kind, capabilities, message
/// handlers per message type and task handlers per task kind. The runtime
/// runs each agent **one message at a time** (a strand): handlers, hooks,
/// timer callbacks and continuations of one agent never run concurrently,
/// so agent code needs no locks. Different agents run in parallel.
///
/// Mailbox: bounded (`spawn_options::mailbox_capacity`). Overflow policy:
/// **reject the newest** — a send to a full mailbox fails at once with
/// `errc::mailbox_full` and the message is not enqueued; the sender decides
/// (retry later, drop, report). The agent takes its queued messages in
/// batches, so at most `capacity` messages wait while at most `capacity`
/// more are in the batch being handled. Replies (messages carrying a
/// correlation id and no reply-to), timer callbacks and orchestrator jobs
/// are admitted beyond the bound: each answers something the agent or its
/// orchestrator started, so their number is bounded by that.
///
/// Errors: an exception escaping a message handler, hook or timer callback
/// fails the agent (its exit reason carries the exception's text); under an
/// orchestrator it is restarted from its last snapshot. An exception from a
/// task handler fails only that task attempt. Nothing escapes into the runtime.
///
/// Protected members may be called only from the agent's own strand (its
/// handlers and hooks), after it was spawned; `name()`/`kind()` and
/// `capabilities()` are safe from any thread once spawned.

#include <aise/clock.hpp>
#include <aise/core_export.hpp>
#include <aise/error.hpp>
#include <aise/message.hpp>

#include <cstddef>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>

namespace spdlog {
class logger;
}

namespace aise {

class runtime;
class task_context;

namespace detail {
struct agent_core;
struct agent_access;
}  // namespace detail

/// How an agent is started.
struct AISE_CORE_EXPORT spawn_options {
  std::string name;                  ///< Address; unique per transport. Generated when empty.
  std::string kind;                  ///< Kind (the orchestrator's registry name); default "agent".
  std::string project = "default";   ///< Project whose event log records this agent.
  std::size_t mailbox_capacity = 0;  ///< 0 = the runtime's default.
};

/// Base class of every agent. Subclass it, register handlers in the
/// constructor or `on_start`, and spawn it on a runtime or orchestrator.
class AISE_CORE_EXPORT agent {
 public:
  agent();
  virtual ~agent();
  agent(const agent&) = delete;
  agent& operator=(const agent&) = delete;

  /// The agent's address (empty before spawn).
  [[nodiscard]] const std::string& name() const noexcept;
  /// The agent's kind.
  [[nodiscard]] const std::string& kind() const noexcept;
  /// What this agent can do; tasks are routed by capability.
  [[nodiscard]] const std::set<std::string>& capabilities() const noexcept;

 protected:
  // ---- lifecycle hooks (run on the agent's strand) ----
  /// Runs once before the first message.
  virtual void on_start() {}
  /// Runs once on an orderly stop, after the last message; not after a failure.
  virtual void on_stop() {}
  /// The state to persist; called on the strand after each task and on
  /// `checkpoint()`. Return null (the default) for a stateless agent.
  [[nodiscard]] virtual nlohmann::json snapshot() const { return nullptr; }
  /// Restores state saved by `snapshot`; called before `on_start` when an
  /// agent is restarted or respawned with a stored snapshot.
  virtual void restore(const nlohmann::json& state) { (void)state; }

  // ---- registration (constructor or strand) ----
  /// Declares a capability.
  void add_capability(std::string capability);
  /// Handles messages of `type` (replacing an earlier handler of that type).
  void on(std::string type, std::function<void(const message&)> handler);
  /// Handles requests of `type`: the returned value becomes the reply's
  /// payload; an error (or exception) becomes an `aise.error` reply. A
  /// message of this type without `reply_to` is handled and nothing is sent.
  void on_request(std::string type, std::function<result<nlohmann::json>(const message&)> handler);
  /// Handles messages of no registered type (default: log and drop; a
  /// request gets a `no_handler` error reply).
  void on_unhandled(std::function<void(const message&)> handler);
  /// Handles tasks of `kind` synchronously: the returned value completes
  /// the task (an error or exception fails the attempt). Adds `kind` as a
  /// capability. Register task handlers and capabilities in the
  /// constructor: the orchestrator reads them when it spawns the agent.
  void on_task(std::string kind, std::function<result<nlohmann::json>(task_context&)> handler);
  /// Handles tasks of `kind` asynchronously: the handler keeps the context
  /// (it is a cheap shared handle) and completes it later, from any thread.
  /// A context dropped without completion fails the attempt. Adds `kind`
  /// as a capability.
  void on_task_async(std::string kind, std::function<void(task_context)> handler);

  // ---- messaging (strand) ----
  /// Sends to one agent. Errors: `not_found`, `mailbox_full`, `unavailable`.
  result<void> send(std::string to, std::string type, nlohmann::json payload = {});
  /// Sends a prepared message (sender, id and time are filled in).
  result<void> send(message m);
  /// Sends a request; `on_reply` runs on this agent's strand exactly once
  /// with the reply, the error of an error reply, a send error, or
  /// `timeout` after `timeout`. A reply after the timeout is dropped.
  void request(std::string to, std::string type, nlohmann::json payload, duration timeout,
               std::function<void(result<message>)> on_reply);
  /// Replies to `request` (a message with `reply_to`); used by `on`
  /// handlers that reply later. `invalid_argument` if it wants no reply.
  result<void> reply(const message& request, nlohmann::json payload);
  /// Publishes to every subscriber of `topic`.
  result<void> publish(std::string topic, std::string type, nlohmann::json payload = {});
  /// Subscribes this agent to `topic`; messages arrive through the handlers.
  result<void> subscribe(std::string topic);
  /// Ends a subscription; `not_found` if there was none.
  result<void> unsubscribe(const std::string& topic);

  // ---- time and blocking work (strand) ----
  /// Runs `fn` on this agent's strand after `delay`.
  void after(duration delay, std::function<void()> fn);
  /// Runs `work` on the runtime's blocking pool, then `then` on this
  /// agent's strand. An exception from `work` is passed to `then` as an
  /// `handler_failed` error.
  void run_blocking(std::function<nlohmann::json()> work,
                    std::function<void(result<nlohmann::json>)> then);

  /// Asks the supervisor to save `snapshot()` now (no-op without one).
  void checkpoint();
  /// Stops this agent after the current message (orderly: `on_stop` runs).
  void stop_self();
  /// Fails this agent after the current message, as if a handler had thrown.
  void crash(aise::error reason);

  /// The runtime this agent lives on. Precondition: spawned.
  [[nodiscard]] runtime& rt() const noexcept;
  /// The runtime's logger.
  [[nodiscard]] spdlog::logger& log() const noexcept;
  /// The runtime clock's now().
  [[nodiscard]] time_point now() const noexcept;

 private:
  friend struct detail::agent_access;
  std::unique_ptr<detail::agent_core> core_;
};

}  // namespace aise
