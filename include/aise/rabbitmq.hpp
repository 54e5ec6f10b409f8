#pragma once
/// @file
/// aise::rabbitmq: the transport interface (transport.hpp) over a RabbitMQ
/// broker, through rabbitmq-c (linked privately: no rabbitmq-c type appears
/// here). Link `aise::rabbitmq` and call `make_rabbitmq_transport`; give the
/// result to every `runtime_options::transport` that should share the
/// broker. docs/rabbitmq.md describes the topology and the failure cases.
///
/// Contract (in addition to transport.hpp's, which this transport passes:
/// the conformance suite runs against a real broker):
/// - Addresses: `bind(address)` declares a durable queue
///   `<prefix>addr.<address>` bound to the direct exchange `<prefix>direct`
///   and consumes it exclusively, so an address has one receiver across
///   every process on the broker (`already_exists` otherwise). Resetting the
///   subscription deletes the queue and waits for that (at most
///   `operation_timeout`; from inside a sink it happens after the sink
///   returned): messages still in it are dropped, later sends fail with
///   `not_found`, and another process may bind the address at once. A process that dies without
///   resetting leaves the queue (and its messages) for the next binder.
/// - Topics: `subscribe(topic)` declares an exclusive, auto-deleted queue
///   bound with exactly `topic` to the direct exchange `<prefix>events`
///   (no wildcards: `.`, `*` and `#` are ordinary characters). Messages
///   published while nobody subscribes, or while the connection is down,
///   are not kept.
/// - `send` returns ok only after the broker confirmed the message
///   (publisher confirms; persistent message on a durable queue); it then
///   survives a broker restart. `not_found`: no queue for the address
///   (the broker returned the mandatory message). `mailbox_full`: the
///   address's queue holds `queue_bound` ready messages (the broker
///   rejected the publish). `unavailable`: the broker cannot be reached, or
///   the connection broke before the confirm; the message may then have
///   reached the broker (send is at-least-once when retried).
/// - `publish` returns ok once the broker confirmed it; `mailbox_full` when
///   some subscriber's queue was full (the others got their copy).
/// - Delivery is at-least-once: a delivery is acknowledged after its sink
///   accepted it, so a connection lost in between delivers it again. A sink
///   that refuses with `mailbox_full` gets the same message again (after a
///   short, growing pause) before any later one of that queue, so nothing is
///   lost or reordered; at most `prefetch` deliveries per binding wait in
///   this process. A sink that fails otherwise (or throws) drops that one
///   message. A message that cannot be decoded is rejected (not requeued),
///   logged and counted in `rabbitmq_stats::undecodable`.
/// - Threads: every member may be called from any thread. The transport
///   owns two broker connections: one for publishing (shared by callers,
///   confirms are pipelined) and one for consuming, served by a thread of
///   its own on which every sink is called, one at a time. `bind`,
///   `subscribe` and a subscription's reset wait for that thread (with a
///   deadline); they may be called from inside a sink.
/// - Reconnection: a lost connection is reopened with a backoff growing
///   from `reconnect_backoff` to `reconnect_backoff_max`; the consuming side
///   then declares its queues again and resumes (a subscription's queue is
///   new and missed what was published meanwhile). While the broker is
///   unreachable `send`, `publish`, `bind` and `subscribe` fail at once with
///   `unavailable`; nothing blocks without a deadline.
/// - No exception escapes a member function.

#include <aise/distribution.hpp>
#include <aise/rabbitmq_export.hpp>
#include <aise/transport.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace spdlog {
class logger;
}

namespace aise {

/// How to reach and use a RabbitMQ broker.
struct AISE_RABBITMQ_EXPORT rabbitmq_options {
  /// `amqp://user:password@host:port/vhost` (the vhost URL-encoded: `%2F`
  /// is `/`, the default). Only plain `amqp://` (no TLS) in this version.
  std::string url = "amqp://guest:guest@127.0.0.1:5672/%2F";
  /// Prefix of every exchange and queue name this transport declares.
  /// Transports that should talk must use the same prefix; tests use a
  /// unique one to isolate themselves.
  std::string prefix = "aise.";
  /// Client property `connection_name` of the two connections, which the
  /// broker shows (`rabbitmqctl list_connections client_properties`, the
  /// management UI): `<connection_name>.publish` and `.consume`.
  std::string connection_name = "aise";
  /// Limit of opening a connection (TCP connect and AMQP handshake).
  std::chrono::milliseconds connect_timeout{5000};
  /// Limit of one broker round trip: a publisher confirm, a queue
  /// declaration, a `bind`/`subscribe` waiting for the consumer thread.
  std::chrono::milliseconds operation_timeout{10000};
  /// AMQP heartbeat of the consuming connection (0: none). The publishing
  /// connection has none; its calls have deadlines instead.
  std::chrono::seconds heartbeat{30};
  /// Deliveries per binding or subscription that may be unacknowledged
  /// (held by this process) at a time; 1 to 65535.
  std::uint16_t prefetch = 64;
  /// Ready messages a queue may hold (`x-max-length`) before the broker
  /// rejects more (`x-overflow: reject-publish`), which makes `send`
  /// return `mailbox_full`. At least 1.
  std::size_t queue_bound = 10000;
  /// An address queue unused (no consumer, not declared again) for this
  /// long is deleted by the broker (`x-expires`); 0 keeps it forever.
  std::chrono::milliseconds queue_expiry{0};
  /// Waits between reconnection attempts: start, doubled up to the max.
  std::chrono::milliseconds reconnect_backoff{100};
  std::chrono::milliseconds reconnect_backoff_max{5000};
  /// Where problems are logged (a lost connection, an undecodable message,
  /// a failing sink); default: a stderr logger named "rabbitmq".
  std::shared_ptr<spdlog::logger> logger;
};

/// Counters of a RabbitMQ transport since it was made.
struct AISE_RABBITMQ_EXPORT rabbitmq_stats {
  std::uint64_t sent = 0;           ///< `send` calls that returned ok.
  std::uint64_t published = 0;      ///< `publish` calls that returned ok.
  std::uint64_t delivered = 0;      ///< Deliveries a sink accepted.
  std::uint64_t refusals = 0;       ///< `mailbox_full` refusals (each retried later).
  std::uint64_t dropped = 0;        ///< Deliveries a sink failed or threw on.
  std::uint64_t undecodable = 0;    ///< Deliveries rejected as undecodable.
  std::uint64_t reconnects = 0;     ///< Connections reopened after a loss.
  bool consumer_connected = false;  ///< The consuming connection is up now.
};

/// The RabbitMQ transport: `aise::transport` plus its counters.
class AISE_RABBITMQ_EXPORT rabbitmq_transport : public transport {
 public:
  /// A snapshot of the counters; thread-safe.
  [[nodiscard]] virtual rabbitmq_stats stats() const = 0;
};

/// Connects to the broker in `options.url` (both connections, with
/// `connect_timeout`) and declares the exchanges. Destroying the last
/// reference stops the consumer thread (joins it, or lets it end on its own
/// when that happens inside a sink) and closes the connections.
/// Subscriptions may outlive it (their reset then does nothing). Errors: `invalid_argument` (a
/// malformed URL or option), `unavailable` (the broker cannot be reached, refused the login or the
/// declarations; the message says which).
AISE_RABBITMQ_EXPORT result<std::shared_ptr<rabbitmq_transport>> make_rabbitmq_transport(
    rabbitmq_options options);

/// Task queues over RabbitMQ: the `task_dispatcher` an orchestrator hands
/// attempts to and the `task_source` an `aise::worker` takes them from
/// (include/aise/distribution.hpp; topology and guarantees in
/// docs/distribution.md). Both use `connection` (url, prefix, timeouts,
/// reconnect backoff, logger) as the transport does.
///
/// Topology (names start with `connection.prefix`):
/// - `<prefix>tasks`: durable direct exchange; routing key = capability.
/// - `<prefix>task.<capability>`: durable queue per capability with
///   `x-max-priority` = `max_priority` and `x-dead-letter-exchange` =
///   `<prefix>dead`; messages persistent, AMQP priority = the task's
///   priority clamped to 0 … max_priority.
/// - `<prefix>dead`: durable fanout exchange and durable queue of the same
///   name: poison messages, with header `aise-dead-reason` (text) and
///   `aise-capability`, body unchanged.
/// - `<prefix>outcomes`: durable queue the dispatcher consumes; workers
///   publish `task_outcome` JSON to it (persistent, confirmed).
/// - `<prefix>control`: fanout exchange; each source binds an exclusive
///   auto-delete queue; cancel notices `{"task": id, "attempt": n}`.
///
/// Each dispatcher and each source owns one connection
/// (`<connection_name>.dispatch` / `.tasks`) and one thread, on which every
/// callback runs. A source's `prefetch` is one limit for the channel that
/// consumes all its capabilities (`basic.qos` global): at most `prefetch`
/// unacknowledged deliveries in total. `connection.prefetch`,
/// `queue_bound` and `queue_expiry` are the transport's and not used here.
struct AISE_RABBITMQ_EXPORT rabbitmq_task_options {
  rabbitmq_options connection;
  /// Dispatcher: the capabilities served by workers (their queues are
  /// declared at start, so hand-offs wait in them for a worker).
  std::vector<std::string> capabilities;
  /// `x-max-priority` of the task queues (1 … 255; RabbitMQ advises ≤ 10).
  /// Every party on one broker must use the same value (a queue declared
  /// with another one is refused by the broker: precondition failed).
  std::uint8_t max_priority = 9;
  /// Dispatcher: hand-offs published and not yet confirmed at a time.
  std::size_t publish_window = 512;
  /// Dispatcher: hand-offs kept while the broker is unreachable; beyond
  /// it, or after `buffer_deadline` waiting, a hand-off is reported
  /// undeliverable (the attempt is then lost and retried by its rules).
  std::size_t buffer_bound = 100000;
  std::chrono::milliseconds buffer_deadline{60000};
};

/// Counters of a RabbitMQ task dispatcher or task source since it was made.
struct AISE_RABBITMQ_EXPORT rabbitmq_task_stats {
  /// Dispatcher: hand-off publications the broker confirmed (a republished
  /// hand-off counts once per confirmed publication).
  std::uint64_t confirmed = 0;
  /// Dispatcher: hand-offs published again (the connection broke before
  /// their confirm, or the broker nacked or returned them).
  std::uint64_t republished = 0;
  /// Dispatcher: hand-offs reported through `dispatch_callbacks::undeliverable`.
  std::uint64_t undeliverable = 0;
  /// Dispatcher: outcomes received; source: outcomes reported (confirmed).
  std::uint64_t outcomes = 0;
  /// Source: hand-offs given to the worker (redeliveries count again).
  std::uint64_t delivered = 0;
  /// Both: messages moved to `<prefix>dead` (confirmed), undecodable ones included.
  std::uint64_t dead_lettered = 0;
  /// Both: connections reopened after a loss.
  std::uint64_t reconnects = 0;
  /// Both: the broker connection is up now.
  bool connected = false;
};

/// What `make_rabbitmq_dispatcher` returns: a `task_dispatcher` with
/// counters (`std::dynamic_pointer_cast` the result to reach them).
class AISE_RABBITMQ_EXPORT rabbitmq_task_dispatcher : public task_dispatcher {
 public:
  /// A snapshot of the counters; thread-safe.
  [[nodiscard]] virtual rabbitmq_task_stats stats() const = 0;
};

/// What `make_rabbitmq_task_source` returns: a `task_source` with counters.
class AISE_RABBITMQ_EXPORT rabbitmq_task_source : public task_source {
 public:
  /// A snapshot of the counters; thread-safe.
  [[nodiscard]] virtual rabbitmq_task_stats stats() const = 0;
};

/// Connects and declares the topology. Errors as make_rabbitmq_transport.
/// The result is a `rabbitmq_task_dispatcher`. Threads and guarantees: the
/// "Task queues" section of docs/rabbitmq.md.
AISE_RABBITMQ_EXPORT result<std::shared_ptr<task_dispatcher>> make_rabbitmq_dispatcher(
    rabbitmq_task_options options);
/// Connects and declares the dead-letter exchange and queue; the task
/// queues are declared by `start`. Errors as make_rabbitmq_transport. The
/// result is a `rabbitmq_task_source`.
AISE_RABBITMQ_EXPORT result<std::shared_ptr<task_source>> make_rabbitmq_task_source(
    rabbitmq_task_options options);

}  // namespace aise
