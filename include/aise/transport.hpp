#pragma once
/// @file
/// The transport seam: how messages reach agents. libaise ships the
/// in-process transport (below); `aise::rabbitmq` adds RabbitMQ. Every
/// implementation passes the same conformance suite
/// (tests/conformance/transport_suite.hpp, see docs/conformance.md).
///
/// Contract for implementations:
/// - Addresses: `bind` gives an address exactly one receiver; `send`
///   delivers to it. Topics: `subscribe` adds a receiver; `publish` delivers
///   a copy to every current subscriber of exactly that topic.
/// - Ordering: messages from one sender to one address (or topic) arrive
///   in send order.
/// - Back-pressure: a sink refuses a message by returning `mailbox_full`.
///   `send` then fails with `mailbox_full` (in-process: synchronously).
///   A transport never buffers without a bound; a message whose `send`
///   returned ok is delivered unless its receiver is unbound first.
/// - Sinks are called on a transport thread or the sender's thread; they
///   must be quick and non-blocking (the runtime's sinks only enqueue into
///   a mailbox). A sink is never called after its subscription is reset
///   and the reset returned: `reset()` waits for sink calls in progress on
///   other threads. A sink may reset its own subscription.
/// - Thread safety: every member may be called from any thread.
/// - No exception escapes a member function; a sink that throws counts as
///   having refused the message with `internal`.

#include <aise/core_export.hpp>
#include <aise/error.hpp>
#include <aise/message.hpp>

#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace aise {

/// Receives messages. Returns ok to accept, or an error (normally
/// `mailbox_full`) to refuse; a refused message is not delivered.
using message_sink = std::function<result<void>(message&&)>;

/// Keeps a binding or topic subscription alive; resetting or destroying it
/// removes it. Move-only.
class AISE_CORE_EXPORT subscription {
 public:
  subscription() = default;
  /// Wraps `cancel`, which runs once on reset or destruction.
  explicit subscription(std::function<void()> cancel) : cancel_(std::move(cancel)) {}
  subscription(subscription&& other) noexcept : cancel_(std::move(other.cancel_)) {
    other.cancel_ = nullptr;
  }
  subscription& operator=(subscription&& other) noexcept {
    if (this != &other) {
      reset();
      cancel_ = std::move(other.cancel_);
      other.cancel_ = nullptr;
    }
    return *this;
  }
  subscription(const subscription&) = delete;
  subscription& operator=(const subscription&) = delete;
  ~subscription() { reset(); }

  /// Removes the binding now; later calls do nothing.
  void reset() noexcept {
    if (cancel_) {
      auto c = std::move(cancel_);
      cancel_ = nullptr;
      try {
        c();
      } catch (...) {  // NOLINT(bugprone-empty-catch): a cancel that throws cannot be reported
      }
    }
  }
  /// True while the binding is alive.
  [[nodiscard]] bool active() const noexcept { return static_cast<bool>(cancel_); }

 private:
  std::function<void()> cancel_;
};

/// The transport interface. See the file comment for the contract.
class AISE_CORE_EXPORT transport {
 public:
  virtual ~transport() = default;

  /// A short name for logs ("inproc", "rabbitmq").
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;

  /// Makes `sink` the receiver of messages sent to `address`.
  /// `already_exists` if the address is bound; `invalid_argument` if empty.
  virtual result<subscription> bind(std::string address, message_sink sink) = 0;

  /// Adds `sink` as a receiver of messages published to `topic`;
  /// `invalid_argument` for an empty topic.
  virtual result<subscription> subscribe(std::string topic, message_sink sink) = 0;

  /// Delivers `m` to `m.recipient`. Errors: `not_found` (nobody bound),
  /// `mailbox_full` (refused by back-pressure), `invalid_argument` (no
  /// recipient), `unavailable` (the transport is down or closed).
  virtual result<void> send(message m) = 0;

  /// Delivers a copy of `m` to every subscriber of `m.topic`. Having no
  /// subscriber is not an error; an empty topic is `invalid_argument`. A
  /// subscriber that refuses its copy does not stop the others; the call
  /// then returns the first refusal's error (normally `mailbox_full`) after
  /// delivering to the rest.
  virtual result<void> publish(message m) = 0;
};

/// The in-process transport: direct hand-off into the receiver's sink, no
/// copies beyond topic fan-out, no threads of its own. Shared by every
/// runtime it is given to, so agents of several runtimes in one process can
/// talk. Thread-safe (a reader-writer lock guards the address table).
AISE_CORE_EXPORT std::shared_ptr<transport> make_inproc_transport();

}  // namespace aise
