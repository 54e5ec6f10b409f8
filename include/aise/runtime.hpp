#pragma once
/// @file
/// The runtime: executors, clock, logger, transport and the agents living on
/// them. Several runtimes may exist in one process (tests do); nothing is global.
///
/// Threading: a runtime owns a pool of `threads` executor threads (or runs on
/// a host's `boost::asio::io_context`, driven by the host), plus a small pool
/// for blocking work (`run_blocking`). Agents run on the executor one
/// message at a time each. Every public member is thread-safe unless noted.
///
/// Errors: spawning with a taken name → `already_exists`; sending to an
/// unknown address → `not_found`; to a full mailbox → `mailbox_full`; after
/// shutdown began → `unavailable`.

#include <aise/agent.hpp>
#include <aise/clock.hpp>
#include <aise/core_export.hpp>
#include <aise/error.hpp>
#include <aise/message.hpp>
#include <aise/transport.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeindex>
#include <typeinfo>
#include <utility>
#include <vector>

namespace boost::asio {
class io_context;
}
namespace spdlog {
class logger;
}

namespace aise {

namespace detail {
class runtime_impl;
}

/// Shared objects that the agents of a runtime reach through it (a model
/// registry, an LLM provider, a token budget): at most one per type, found
/// by type. Components offer helpers that create theirs on first use (e.g.
/// `ml::models(rt)`).
///
/// Ownership: the registry holds a shared_ptr to each service until it is
/// replaced or the runtime is destroyed. Thread safety: every member may
/// be called from any thread. Errors: none (a missing service is nullptr).
class AISE_CORE_EXPORT service_registry {
 public:
  /// Makes `service` the one of type T (replacing any before it).
  template <class T>
  void put(std::shared_ptr<T> service) {
    put_any(typeid(T), std::static_pointer_cast<void>(std::move(service)));
  }
  /// The service of type T, or nullptr.
  template <class T>
  [[nodiscard]] std::shared_ptr<T> find() const {
    return std::static_pointer_cast<T>(find_any(typeid(T)));
  }
  /// The service of type T; when there is none, the one `make()` returns is
  /// put first (concurrent callers all get the same one; `make` may run
  /// more than once then, and may itself use the registry).
  template <class T, class Make>
  std::shared_ptr<T> get_or_put(Make&& make) {
    return std::static_pointer_cast<T>(get_or_put_any(
        typeid(T), [&make] { return std::static_pointer_cast<void>(std::shared_ptr<T>(make())); }));
  }

  service_registry();
  ~service_registry();
  service_registry(const service_registry&) = delete;
  service_registry& operator=(const service_registry&) = delete;

 private:
  void put_any(std::type_index type, std::shared_ptr<void> service);
  [[nodiscard]] std::shared_ptr<void> find_any(std::type_index type) const;
  std::shared_ptr<void> get_or_put_any(std::type_index type,
                                       const std::function<std::shared_ptr<void>()>& make);
  struct state;
  std::unique_ptr<state> state_;
};

/// Options of a runtime; defaults suit a single-process application.
struct AISE_CORE_EXPORT runtime_options {
  /// Name used in logs and in generated ids.
  std::string name = "aise";
  /// Executor threads; 0 = std::thread::hardware_concurrency(). Ignored
  /// when the runtime runs on a host io_context.
  std::size_t threads = 0;
  /// Threads for `run_blocking` (compilers, subprocesses, file I/O).
  std::size_t blocking_threads = 2;
  /// Default mailbox bound for agents spawned without one.
  std::size_t mailbox_capacity = 1024;
  /// Messages one agent handles before it yields its thread to others.
  std::size_t throughput = 64;
  /// Time source; default: the system clock. Pass a `manual_clock` in tests.
  std::shared_ptr<aise::clock> clock;
  /// Logger; default: a new stderr logger named `name` at level info.
  std::shared_ptr<spdlog::logger> logger;
  /// Transport; default: a new in-process transport owned by this runtime.
  /// Share one in-process transport between runtimes to connect them.
  std::shared_ptr<aise::transport> transport;
};

/// How `shutdown` treats messages still queued.
enum class shutdown_mode {
  drain,   ///< Agents handle what is queued, then stop.
  cancel,  ///< Queued messages are dropped; agents stop after the current one.
};

/// Why an agent stopped; given to exit listeners.
struct AISE_CORE_EXPORT agent_exit {
  std::string name;
  std::string kind;
  bool failed = false;                ///< True when a handler threw or the agent called `crash`.
  std::optional<aise::error> reason;  ///< Set when failed.
};

/// Identifies a scheduled timer for `cancel_timer`.
using timer_id = std::uint64_t;

/// The runtime. Non-copyable, non-movable; destroy it after every object
/// that uses it (orchestrators, bindings). The destructor shuts down with
/// `shutdown_mode::cancel` and a 5 s deadline if `shutdown` was not called.
class AISE_CORE_EXPORT runtime {
 public:
  /// A runtime with its own executor threads.
  explicit runtime(runtime_options options = {});
  /// A runtime on the host's io_context: the host calls `run()` (from one or
  /// more threads) and keeps it from running out of work (a work guard)
  /// while the runtime is in use.
  explicit runtime(boost::asio::io_context& host, runtime_options options = {});
  ~runtime();
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  /// Starts `a` under `options.name` (generated as "<kind>-<n>" when empty)
  /// and returns the name. `on_start` runs on the agent's strand before any
  /// message. Errors: `already_exists`, `unavailable` (shutting down).
  result<std::string> spawn(std::unique_ptr<agent> a, spawn_options options = {});

  /// Convenience: constructs an `A` from `args` and spawns it.
  template <class A, class... Args>
  result<std::string> spawn(spawn_options options, Args&&... args) {
    static_assert(std::is_base_of_v<agent, A>, "A must derive from aise::agent");
    return spawn(std::make_unique<A>(std::forward<Args>(args)...), std::move(options));
  }

  /// Stops an agent gracefully: it stops receiving, handles what is queued,
  /// then runs `on_stop`. Returns at once; listen with `on_agent_exit`.
  /// `not_found` for an unknown name.
  result<void> stop(std::string_view name);

  /// Names of the live agents, sorted.
  [[nodiscard]] std::vector<std::string> agents() const;
  /// True while an agent with this name lives.
  [[nodiscard]] bool has_agent(std::string_view name) const;

  /// Sends a message from outside any agent (`sender` may be empty).
  result<void> send(message m);
  /// Convenience for `send` with recipient, type and payload.
  result<void> send(std::string to, std::string type, nlohmann::json payload = {});
  /// Publishes to `m.topic`.
  result<void> publish(message m);
  /// Sends `m` as a request; `on_reply` runs exactly once on an executor
  /// thread with the reply, an error reply converted to its error, or
  /// `timeout` after `timeout`.
  void request(message m, duration timeout, std::function<void(result<message>)> on_reply);
  /// Blocking request for code outside the executor (main, tests). Returns
  /// `invalid_argument` when called on one of this runtime's executor
  /// threads (it would deadlock).
  result<message> call(std::string to, std::string type, nlohmann::json payload, duration timeout);

  /// Runs `fn` on an executor thread after `delay` (by this runtime's
  /// clock; with a manual clock, when it is advanced past the due time).
  timer_id schedule(duration delay, std::function<void()> fn);
  /// Cancels a timer; true if it had not fired yet.
  bool cancel_timer(timer_id id);
  /// Runs `fn` on an executor thread soon.
  void post(std::function<void()> fn);
  /// Runs `fn` on the blocking pool; never on an executor thread.
  void run_blocking(std::function<void()> fn);
  /// True on one of this runtime's executor threads.
  [[nodiscard]] bool on_executor() const noexcept;

  /// Registers `fn` to hear about every agent exit (on an executor thread).
  /// Returns a key for `remove_exit_listener`.
  std::size_t on_agent_exit(std::function<void(const agent_exit&)> fn);
  void remove_exit_listener(std::size_t key);

  /// Stops every agent and then the executors, within `deadline` (real
  /// time). `drain` lets queued messages be handled first; at three
  /// quarters of the deadline what is still queued is dropped. Returns
  /// `timeout` naming the agents still busy at the deadline (a handler that
  /// never returns); the destructor then waits for them. Idempotent once it
  /// succeeded. Must not be called from an executor thread (`invalid_argument`).
  /// On a host io_context it runs the context itself while it waits.
  result<void> shutdown(shutdown_mode mode = shutdown_mode::drain,
                        std::chrono::milliseconds deadline = std::chrono::seconds(5));

  /// A fresh id unique within this process run: prefix + runtime tag + counter.
  [[nodiscard]] std::string make_id(std::string_view prefix);
  /// A fresh 64-bit message id (random base + counter).
  [[nodiscard]] std::uint64_t next_message_id() noexcept;

  [[nodiscard]] aise::clock& clock() const noexcept;
  [[nodiscard]] std::shared_ptr<aise::clock> clock_ptr() const noexcept;
  [[nodiscard]] spdlog::logger& logger() const noexcept;
  [[nodiscard]] aise::transport& transport() const noexcept;
  [[nodiscard]] const runtime_options& options() const noexcept;
  /// Shared services its agents reach (see service_registry); agents call
  /// `rt().services()`. Lives as long as the runtime.
  [[nodiscard]] service_registry& services() const noexcept;
  /// The implementation (for libaise's own components).
  [[nodiscard]] detail::runtime_impl& impl() noexcept { return *impl_; }

 private:
  std::unique_ptr<detail::runtime_impl> impl_;
};

}  // namespace aise
