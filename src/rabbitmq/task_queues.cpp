// Task queues over RabbitMQ: the dispatcher (an orchestrator's side) and the
// task source (a worker's side) of include/aise/distribution.hpp. Each owns
// one broker connection served by one thread of its own (an `engine`), which
// publishes with pipelined confirms, consumes, and calls the callbacks.
// Other threads only post commands to it (an eventfd wakes it).
// docs/rabbitmq.md ("Task queues") has the topology and the guarantees.

#include <aise/distribution.hpp>
#include <aise/rabbitmq.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <fmt/format.h>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <set>
#include <spdlog/logger.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <string>
#include <sys/eventfd.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

#include "rabbitmq/amqp_connection.hpp"

namespace aise {
namespace {

using namespace rabbitmq_detail;  // NOLINT(google-build-using-namespace): the private half of this
                                  // component
using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::size_t max_short_string = 255;  // AMQP names and routing keys
constexpr amqp_channel_t publish_channel = 1;  // confirm mode: every publication
constexpr amqp_channel_t consume_channel = 2;  // task queues (source) or outcomes (dispatcher)
constexpr amqp_channel_t control_channel = 3;  // cancel notices (source)
constexpr amqp_channel_t declare_channel = 4;  // declarations: a refused one closes only this
constexpr milliseconds idle_poll{1000};        // services heartbeats while nothing happens
constexpr milliseconds stop_grace{2000};       // stop waits this long for confirms in flight
constexpr int max_publish_tries = 5;           // nacks or returns before a hand-off is given up
constexpr std::uint16_t outcome_prefetch = 256;
constexpr std::size_t cancel_bound = 10000;  // cancel notices waiting for the thread
constexpr const char* publish_tag_header = "aise-publish-tag";
constexpr const char* dead_reason_header = "aise-dead-reason";
constexpr const char* dead_capability_header = "aise-capability";

/// Names every exchange and queue is derived from.
struct task_names {
  std::string tasks;     ///< direct exchange, routing key = capability
  std::string dead;      ///< fanout exchange and its queue
  std::string outcomes;  ///< queue (default exchange)
  std::string control;   ///< fanout exchange
  std::string task_queue_prefix;

  explicit task_names(const std::string& prefix)
      : tasks(prefix + "tasks"),
        dead(prefix + "dead"),
        outcomes(prefix + "outcomes"),
        control(prefix + "control"),
        task_queue_prefix(prefix + "task.") {}

  [[nodiscard]] std::string task_queue(const std::string& capability) const {
    return task_queue_prefix + capability;
  }
};

struct task_counters {
  std::atomic<std::uint64_t> confirmed{0}, republished{0}, undeliverable{0}, outcomes{0},
      delivered{0}, dead_lettered{0}, reconnects{0};
  std::atomic<bool> connected{false};

  [[nodiscard]] rabbitmq_task_stats snapshot() const {
    rabbitmq_task_stats s;
    s.confirmed = confirmed.load();
    s.republished = republished.load();
    s.undeliverable = undeliverable.load();
    s.outcomes = outcomes.load();
    s.delivered = delivered.load();
    s.dead_lettered = dead_lettered.load();
    s.reconnects = reconnects.load();
    s.connected = connected.load();
    return s;
  }
};

enum class publish_status { confirmed, nacked, returned, lost };

/// One message to publish through the confirm channel; `done` runs on the
/// engine's thread once its fate is known.
struct publication {
  std::string exchange;
  std::string routing_key;
  std::string body;
  bool persistent = true;
  bool mandatory = true;
  std::uint8_t priority = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::function<void(publish_status)> done;
};

std::string shorten(const std::string& s) {
  return s.size() <= 80 ? s : s.substr(0, 77) + "...";
}

/// Decodes a message body: JSON, then `parse` (task_handoff_from_json,
/// task_outcome_from_json); `invalid_argument` saying why otherwise.
template <class T>
result<T> decode_body(const std::string& body, result<T> (*parse)(const nlohmann::json&)) {
  try {
    const auto j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_discarded()) return error(errc::invalid_argument, "the body is not JSON");
    return parse(j);
  } catch (const std::exception& e) {
    return error(errc::invalid_argument, e.what());
  }
}

template <class F>
void guarded(spdlog::logger& log, std::string_view what, F&& f) noexcept {
  try {
    f();
  } catch (const std::exception& e) {
    log.error("rabbitmq: the {} callback threw: {}", what, e.what());
  } catch (...) {
    log.error("rabbitmq: the {} callback threw something that is not a std::exception", what);
  }
}

// ---------------------------------------------------------------------------
// engine: one connection, one thread
// ---------------------------------------------------------------------------

class engine : public std::enable_shared_from_this<engine> {
 public:
  engine(rabbitmq_task_options options, broker_address address, const std::string& role)
      : options_(std::move(options)),
        names_(options_.connection.prefix),
        address_(std::move(address)),
        log_(options_.connection.logger) {
    settings_.connect_timeout = options_.connection.connect_timeout;
    settings_.rpc_timeout = options_.connection.operation_timeout;
    settings_.heartbeat_seconds = static_cast<int>(options_.connection.heartbeat.count());
    settings_.name = options_.connection.connection_name + "." + role;
  }
  virtual ~engine() {
    if (wake_fd_ >= 0) ::close(wake_fd_);
  }
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  /// Connects on the calling thread (before the engine's thread exists).
  result<void> open() {
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) {
      return error(errc::unavailable,
                   fmt::format("rabbitmq: eventfd failed: {}", std::strerror(errno)));
    }
    if (auto r = connect(); !r) return r;
    counters_.connected.store(true);
    return {};
  }

  /// Stops the thread (or, called on it, lets it end after the current callback).
  void stop() noexcept {
    stopping_.store(true);
    wake();
    if (on_thread()) {
      muted_.store(true);  // from inside a callback: none after this returns
      std::lock_guard lock(mutex_);
      if (thread_.joinable()) thread_.detach();  // the thread holds its engine and ends
      return;
    }
    std::lock_guard stop_lock(stop_mutex_);
    std::thread t;
    {
      std::lock_guard lock(mutex_);
      t = std::move(thread_);
      if (!launched_) {
        launched_ = true;  // never started: nothing else uses the connection
        conn_.reset();
        counters_.connected.store(false);
        return;
      }
    }
    if (t.joinable()) t.join();
  }

  [[nodiscard]] rabbitmq_task_stats stats() const { return counters_.snapshot(); }

 protected:
  /// Starts the thread; `false` (with the engine unchanged) when stopped already.
  result<void> launch() {
    std::lock_guard lock(mutex_);
    if (launched_ || stopping_.load()) {
      return error(errc::unavailable, "rabbitmq: stopped (or started) already");
    }
    try {
      thread_ = std::thread([self = shared_from_this()] { self->run(); });
    } catch (const std::exception& e) {
      return error(errc::unavailable, fmt::format("rabbitmq: cannot start a thread: {}", e.what()));
    }
    launched_ = true;
    return {};
  }

  void wake() noexcept {
    const std::uint64_t one = 1;
    if (wake_fd_ >= 0) (void)!::write(wake_fd_, &one, sizeof one);
  }

  [[nodiscard]] bool on_thread() const noexcept {
    return std::this_thread::get_id() == thread_id_.load();
  }
  [[nodiscard]] bool stopping() const noexcept { return stopping_.load(); }
  /// stop() was called from inside a callback: the thread ends without calling more.
  [[nodiscard]] bool muted() const noexcept { return muted_.load(); }

  // --- for the derived class, on the engine's thread --------------------------

  /// Declares what the connection needs (exchanges, queues), on `declare_channel`.
  virtual result<void> declare_topology() = 0;
  /// Starts consuming after a (re)connection; the first time from `start`.
  virtual result<void> begin_consuming() = 0;
  /// Takes the commands other threads posted.
  virtual void take_commands() = 0;
  /// Publishes what waits, settles what was settled.
  virtual void work() = 0;
  /// A delivery on `channel`.
  virtual void on_delivery(amqp_channel_t channel, const std::string& consumer_tag,
                           std::uint64_t delivery_tag, std::string body) = 0;
  /// The connection is gone (in-flight publications were told `lost` already).
  virtual void on_lost() {}
  /// Deadlines; returns the next time this wants to run.
  virtual steady::time_point housekeeping(steady::time_point now) { return now + idle_poll; }
  /// The thread is ending (still connected if it was).
  virtual void finish() {}

  /// Publishes `p` on the confirm channel; false (and `done(lost)`) when not connected.
  bool publish(publication p) {
    if (!conn_) {
      if (p.done) p.done(publish_status::lost);
      return false;
    }
    const std::uint64_t tag = ++next_publish_tag_;
    std::vector<amqp_table_entry_t> entries(1 + p.headers.size());
    entries[0].key = amqp_cstring_bytes(publish_tag_header);
    entries[0].value.kind = AMQP_FIELD_KIND_I64;
    entries[0].value.value.i64 = static_cast<std::int64_t>(tag);
    for (std::size_t i = 0; i < p.headers.size(); ++i) {
      entries[i + 1].key = bytes_of(p.headers[i].first);
      entries[i + 1].value.kind = AMQP_FIELD_KIND_UTF8;
      entries[i + 1].value.value.bytes = bytes_of(p.headers[i].second);
    }
    amqp_basic_properties_t props{};
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                   AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_PRIORITY_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = p.persistent ? 2 : 1;
    props.priority = p.priority;
    props.headers.num_entries = static_cast<int>(entries.size());
    props.headers.entries = entries.data();
    const int rc = amqp_basic_publish(conn_->state(), publish_channel, bytes_of(p.exchange),
                                      bytes_of(p.routing_key), p.mandatory ? 1 : 0, 0, &props,
                                      bytes_of(p.body));
    in_flight_.emplace(tag, flight{std::move(p.done), steady::now(), false});
    if (rc != AMQP_STATUS_OK) {
      lose(library_failure(rc, "publishing").error);
      return false;
    }
    return true;
  }

  [[nodiscard]] std::size_t in_flight() const noexcept { return in_flight_.size(); }

  /// Declares the durable queue of `capability` and binds it to the task exchange.
  result<void> declare_task_queue(const std::string& capability) {
    const std::string queue = names_.task_queue(capability);
    amqp_table_entry_t args[2];
    args[0].key = amqp_cstring_bytes("x-max-priority");
    args[0].value.kind = AMQP_FIELD_KIND_I64;
    args[0].value.value.i64 = options_.max_priority;
    args[1].key = amqp_cstring_bytes("x-dead-letter-exchange");
    args[1].value.kind = AMQP_FIELD_KIND_UTF8;
    args[1].value.value.bytes = bytes_of(names_.dead);
    if (auto r = declare_queue(queue, true, false, false, amqp_table_t{2, args}); !r) return r;
    return bind_queue(queue, names_.tasks, capability);
  }

  result<void> declare_exchange(const std::string& name, const char* type) {
    amqp_exchange_declare(conn_->state(), declare_channel, bytes_of(name), amqp_cstring_bytes(type),
                          0, 1, 0, 0, amqp_empty_table);
    return check_rpc(fmt::format("declaring the exchange '{}'", name));
  }

  result<void> declare_queue(const std::string& name, bool durable, bool exclusive,
                             bool auto_delete, amqp_table_t args) {
    amqp_queue_declare(conn_->state(), declare_channel, bytes_of(name), 0, durable ? 1 : 0,
                       exclusive ? 1 : 0, auto_delete ? 1 : 0, args);
    return check_rpc(fmt::format("declaring the queue '{}'", name));
  }

  result<void> bind_queue(const std::string& queue, const std::string& exchange,
                          const std::string& key) {
    amqp_queue_bind(conn_->state(), declare_channel, bytes_of(queue), bytes_of(exchange),
                    bytes_of(key), amqp_empty_table);
    return check_rpc(fmt::format("binding the queue '{}' to '{}'", queue, exchange));
  }

  /// The common declarations: the dead-letter exchange and queue, the task
  /// and control exchanges, the outcomes queue.
  result<void> declare_common() {
    if (auto r = declare_exchange(names_.dead, "fanout"); !r) return r;
    if (auto r = declare_queue(names_.dead, true, false, false, amqp_empty_table); !r) return r;
    if (auto r = bind_queue(names_.dead, names_.dead, ""); !r) return r;
    if (auto r = declare_exchange(names_.tasks, "direct"); !r) return r;
    if (auto r = declare_exchange(names_.control, "fanout"); !r) return r;
    // Undecodable outcomes that cannot be moved with a reason are rejected into `dead`.
    amqp_table_entry_t dlx;
    dlx.key = amqp_cstring_bytes("x-dead-letter-exchange");
    dlx.value.kind = AMQP_FIELD_KIND_UTF8;
    dlx.value.value.bytes = bytes_of(names_.dead);
    return declare_queue(names_.outcomes, true, false, false, amqp_table_t{1, &dlx});
  }

  /// The result of the last synchronous call on `channel`; a failure closing
  /// only that channel reopens it (declare channel) or is returned as is.
  result<void> check_rpc(const std::string& what, amqp_channel_t channel = declare_channel) {
    const amqp_rpc_reply_t reply = amqp_get_rpc_reply(conn_->state());
    if (reply.reply_type == AMQP_RESPONSE_NORMAL) return {};
    const auto f = conn_->rpc_failure(reply, channel, what);
    if (f.connection_lost) {
      lose(f.error);
    } else if (f.channel_closed && channel == declare_channel) {
      if (auto r = conn_->open_channel(declare_channel, "reopening the declaring channel"); !r) {
        lose(r.error());
      }
    }
    return f.error;
  }

  /// Acknowledges or rejects a delivery of the current connection.
  void settle_delivery(amqp_channel_t channel, std::uint64_t tag, bool ack, bool requeue) {
    if (!conn_) return;
    const int rc = ack ? amqp_basic_ack(conn_->state(), channel, tag, 0)
                       : amqp_basic_reject(conn_->state(), channel, tag, requeue ? 1 : 0);
    if (rc != AMQP_STATUS_OK) lose(library_failure(rc, "acknowledging").error);
  }

  /// Publishes `body` to `<prefix>dead` with the reason, then acknowledges
  /// delivery `tag` of this connection (a reject into the dead-letter
  /// exchange if the broker refuses it; nothing if the connection breaks:
  /// the broker delivers it again).
  void dead_letter(amqp_channel_t channel, std::uint64_t tag, const std::string& capability,
                   std::string body, std::string reason) {
    publication p;
    p.exchange = names_.dead;
    p.routing_key = capability;
    p.body = std::move(body);
    p.headers = {{dead_reason_header, std::move(reason)}, {dead_capability_header, capability}};
    const std::uint64_t generation = generation_;
    p.done = [this, channel, tag, generation](publish_status s) {
      if (generation != generation_ || !conn_) return;
      if (s == publish_status::confirmed) {
        counters_.dead_lettered.fetch_add(1);
        settle_delivery(channel, tag, true, false);
      } else if (s != publish_status::lost) {
        log_->error("rabbitmq: the broker refused a dead-lettered message; rejected instead");
        settle_delivery(channel, tag, false, false);
      }
    };
    publish(std::move(p));
  }

  void lose(const error& why) {
    if (!conn_) return;
    log_->warn("rabbitmq: connection {} lost: {}; reconnecting", settings_.name, why.message());
    conn_->mark_broken();
    conn_.reset();
    counters_.connected.store(false);
    ++generation_;
    abandon_in_flight();
    on_lost();
  }

  /// Tells every publication in flight that it is `lost` (in publishing order).
  void abandon_in_flight() {
    auto flights = std::move(in_flight_);
    in_flight_.clear();
    for (auto& [tag, f] : flights) {
      if (f.done) f.done(publish_status::lost);
    }
  }

  const rabbitmq_task_options options_;
  const task_names names_;
  const broker_address address_;
  std::shared_ptr<spdlog::logger> log_;
  task_counters counters_;

  std::mutex mutex_;  // guards what derived classes say, and thread_/launched_

  // The engine's thread only (the creating thread before it starts):
  std::unique_ptr<connection> conn_;
  std::uint64_t generation_ = 1;  ///< Bumped by every lost connection.

 private:
  struct flight {
    std::function<void(publish_status)> done;
    steady::time_point sent;
    bool returned = false;
  };

  result<void> connect() {
    auto opened = connection::open(address_, settings_);
    if (!opened) return opened.error();
    conn_ = std::move(*opened);
    next_publish_tag_ = 0;
    auto failed = [&](const error& e) -> result<void> {
      if (conn_) conn_->mark_broken();
      conn_.reset();
      return e;
    };
    if (auto r = conn_->open_channel(publish_channel, "opening the publishing channel"); !r) {
      return failed(r.error());
    }
    if (amqp_confirm_select(conn_->state(), publish_channel) == nullptr) {
      return failed(conn_->last_rpc_failure("enabling publisher confirms").error);
    }
    if (auto r = conn_->open_channel(declare_channel, "opening the declaring channel"); !r) {
      return failed(r.error());
    }
    if (auto r = declare_topology(); !r) return failed(r.error());
    return {};
  }

  bool reconnect() {
    if (auto r = connect(); !r) {
      last_error_ = r.error().message();
      return false;
    }
    if (auto r = begin_consuming(); !r) {
      last_error_ = r.error().message();
      if (conn_) {
        conn_->mark_broken();
        conn_.reset();
        ++generation_;
      }
      return false;
    }
    counters_.reconnects.fetch_add(1);
    counters_.connected.store(true);
    log_->info("rabbitmq: connection {} to {} restored", settings_.name, address_.shown);
    return true;
  }

  void run() {
    thread_id_.store(std::this_thread::get_id());
    milliseconds backoff = options_.connection.reconnect_backoff;
    steady::time_point next_attempt{};
    bool warned = false;
    while (!stopping_.load()) {
      take_commands();
      if (stopping_.load()) break;
      auto now = steady::now();
      if (!conn_ && now >= next_attempt) {
        if (reconnect()) {
          backoff = options_.connection.reconnect_backoff;
          warned = false;
        } else {
          if (!warned) {
            log_->warn("rabbitmq: cannot reconnect {} yet: {}", settings_.name, last_error_);
            warned = true;
          }
          next_attempt = steady::now() + backoff;
          backoff = std::min(backoff * 2, options_.connection.reconnect_backoff_max);
        }
      }
      if (conn_) drain();
      if (stopping_.load()) break;
      if (conn_) work();
      now = steady::now();
      if (conn_ && !in_flight_.empty() &&
          now - in_flight_.begin()->second.sent > options_.connection.operation_timeout) {
        lose(error(errc::unavailable,
                   fmt::format("rabbitmq: no confirm from the broker within {} ms",
                               options_.connection.operation_timeout.count())));
      }
      auto until = std::min(housekeeping(now), now + idle_poll);
      if (stopping_.load()) break;
      if (!conn_) {
        until = std::min(until, next_attempt);
      } else if (conn_->has_buffered_frames()) {
        until = now;
      }
      pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {conn_ ? conn_->fd() : -1, POLLIN, 0}};
      const auto wait = std::chrono::duration_cast<milliseconds>(until - steady::now()).count();
      (void)::poll(fds, conn_ ? 2 : 1, static_cast<int>(std::max<long long>(wait, 0)));
      if ((fds[0].revents & POLLIN) != 0) {
        std::uint64_t n = 0;
        (void)!::read(wake_fd_, &n, sizeof n);
      }
    }
    finish();
    conn_.reset();  // a polite close: the broker requeues what was not acknowledged
    counters_.connected.store(false);
  }

 protected:
  /// Waits (at most `limit`) for the confirms of what is in flight.
  void drain_confirms(milliseconds limit) {
    const auto give_up = steady::now() + limit;
    while (conn_ && !in_flight_.empty() && steady::now() < give_up) {
      drain();
      if (!conn_ || in_flight_.empty()) break;
      pollfd p{conn_->fd(), POLLIN, 0};
      if (!conn_->has_buffered_frames()) (void)::poll(&p, 1, 20);
    }
  }

  /// Reads every frame available now (bounded, so commands get their turn).
  void drain() {
    for (int i = 0; i < 2000 && conn_; ++i) {
      amqp_frame_t frame;
      const int rc = conn_->poll_frame(frame);
      if (rc == AMQP_STATUS_TIMEOUT) return;
      if (rc != AMQP_STATUS_OK) {
        lose(library_failure(rc, "receiving").error);
        return;
      }
      if (frame.frame_type != AMQP_FRAME_METHOD) continue;
      const amqp_channel_t ch = frame.channel;
      switch (frame.payload.method.id) {
        case AMQP_BASIC_ACK_METHOD: {
          const auto* m = static_cast<amqp_basic_ack_t*>(frame.payload.method.decoded);
          resolve(m->delivery_tag, m->multiple != 0, false);
          break;
        }
        case AMQP_BASIC_NACK_METHOD: {
          const auto* m = static_cast<amqp_basic_nack_t*>(frame.payload.method.decoded);
          resolve(m->delivery_tag, m->multiple != 0, true);
          break;
        }
        case AMQP_BASIC_RETURN_METHOD: {
          amqp_message_t returned;
          const auto reply = amqp_read_message(conn_->state(), ch, &returned, 0);
          if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
            lose(conn_->rpc_failure(reply, ch, "reading a returned message").error);
            return;
          }
          const amqp_table_t& headers = returned.properties.headers;
          for (int h = 0; h < headers.num_entries; ++h) {
            const auto& e = headers.entries[h];
            if (string_of(e.key) == publish_tag_header && e.value.kind == AMQP_FIELD_KIND_I64) {
              auto it = in_flight_.find(static_cast<std::uint64_t>(e.value.value.i64));
              if (it != in_flight_.end()) it->second.returned = true;
            }
          }
          amqp_destroy_message(&returned);
          break;
        }
        case AMQP_BASIC_DELIVER_METHOD: {
          const auto* d = static_cast<amqp_basic_deliver_t*>(frame.payload.method.decoded);
          const std::uint64_t tag = d->delivery_tag;
          std::string consumer_tag = string_of(d->consumer_tag);
          amqp_message_t content;
          const auto reply = amqp_read_message(conn_->state(), ch, &content, 0);
          if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
            lose(conn_->rpc_failure(reply, ch, "reading a delivery").error);
            return;
          }
          std::string body = string_of(content.body);
          amqp_destroy_message(&content);
          on_delivery(ch, consumer_tag, tag, std::move(body));
          if (stopping_.load()) return;
          break;
        }
        case AMQP_BASIC_CANCEL_METHOD:
          lose(
              error(errc::unavailable, "the broker cancelled a consumer (was its queue deleted?)"));
          return;
        case AMQP_CHANNEL_CLOSE_METHOD: {
          const auto* m = static_cast<amqp_channel_close_t*>(frame.payload.method.decoded);
          const auto why = fmt::format("rabbitmq: the broker closed channel {}: {} {}", ch,
                                       m->reply_code, string_of(m->reply_text));
          conn_->confirm_channel_close(ch);
          lose(error(errc::unavailable, why));
          return;
        }
        case AMQP_CONNECTION_CLOSE_METHOD: {
          const auto* m = static_cast<amqp_connection_close_t*>(frame.payload.method.decoded);
          const auto why = fmt::format("rabbitmq: the broker closed the connection: {} {}",
                                       m->reply_code, string_of(m->reply_text));
          conn_->confirm_connection_close();
          lose(error(errc::unavailable, why));
          return;
        }
        default:
          break;
      }
      if (conn_) amqp_maybe_release_buffers_on_channel(conn_->state(), ch);
    }
  }

 private:
  void resolve(std::uint64_t tag, bool multiple, bool nack) {
    std::vector<std::pair<std::function<void(publish_status)>, publish_status>> settled;
    auto take = [&](std::map<std::uint64_t, flight>::iterator it) {
      const auto s =
          nack ? publish_status::nacked
               : (it->second.returned ? publish_status::returned : publish_status::confirmed);
      settled.emplace_back(std::move(it->second.done), s);
      return in_flight_.erase(it);
    };
    if (multiple) {
      for (auto it = in_flight_.begin(); it != in_flight_.end() && it->first <= tag;) it = take(it);
    } else if (auto it = in_flight_.find(tag); it != in_flight_.end()) {
      take(it);
    }
    for (auto& [done, s] : settled) {
      if (done) done(s);
    }
  }

  connection_settings settings_;
  int wake_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> muted_{false};
  std::atomic<std::thread::id> thread_id_{};
  std::mutex stop_mutex_;
  // Guarded by mutex_:
  std::thread thread_;
  bool launched_ = false;
  // The engine's thread only:
  std::uint64_t next_publish_tag_ = 0;
  std::map<std::uint64_t, flight> in_flight_;
  std::string last_error_;
};

// ---------------------------------------------------------------------------
// dispatcher
// ---------------------------------------------------------------------------

class dispatcher_engine final : public engine {
 public:
  using engine::engine;

  [[nodiscard]] bool serves(std::string_view capability) const {
    return std::find(options_.capabilities.begin(), options_.capabilities.end(), capability) !=
           options_.capabilities.end();
  }

  result<void> start(dispatch_callbacks callbacks) {
    {
      std::lock_guard lock(mutex_);
      if (started_)
        return error(errc::invalid_argument, "rabbitmq: the dispatcher started already");
      started_ = true;
    }
    callbacks_ = std::move(callbacks);  // read by the thread only, which starts below
    if (conn_) {
      if (auto r = begin_consuming(); !r && conn_) return r;  // a lost connection comes back
    }
    return launch();
  }

  void handoff(std::vector<task_handoff> batch) {
    std::lock_guard lock(mutex_);
    if (stopping()) {
      log_->warn("rabbitmq: {} hand-off(s) after stop() dropped", batch.size());
      return;
    }
    for (auto& h : batch) {
      if (incoming_.size() + held_ >= options_.buffer_bound) {
        overflow_.push_back(lease_key{h.task.id, h.task.attempt});
      } else {
        incoming_.emplace_back(std::move(h), steady::now());
      }
    }
    wake();
  }

  void cancel(lease_key key) {
    std::lock_guard lock(mutex_);
    if (cancels_.size() >= cancel_bound) cancels_.pop_front();  // best effort: oldest goes
    cancels_.push_back(std::move(key));
    wake();
  }

  void keep_dead(task_handoff last, std::string reason) {
    std::lock_guard lock(mutex_);
    if (dead_letters_.size() >= cancel_bound) {
      log_->error("rabbitmq: dead letter of task {} dropped: {} wait already", last.task.id,
                  dead_letters_.size());
      return;
    }
    dead_letters_.emplace_back(std::move(last), std::move(reason));
    wake();
  }

 private:
  struct entry {
    lease_key key;
    std::string capability;
    std::string body;
    std::uint8_t priority = 0;
    steady::time_point since;
    int tries = 0;
  };
  using entry_ptr = std::shared_ptr<entry>;

  result<void> declare_topology() override {
    if (auto r = declare_common(); !r) return r;
    declared_.clear();
    for (const auto& c : options_.capabilities) {
      if (auto r = declare_task_queue(c); !r) return r;
      declared_.insert(c);
    }
    return {};
  }

  result<void> begin_consuming() override {
    if (amqp_channel_open(conn_->state(), consume_channel) == nullptr) {
      return check_rpc("opening the outcome channel", consume_channel);
    }
    if (amqp_basic_qos(conn_->state(), consume_channel, 0, outcome_prefetch, 0) == nullptr) {
      return check_rpc("setting the outcome prefetch", consume_channel);
    }
    if (amqp_basic_consume(conn_->state(), consume_channel, bytes_of(names_.outcomes),
                           amqp_cstring_bytes("aise-outcomes"), 0, 0, 0,
                           amqp_empty_table) == nullptr) {
      return check_rpc("consuming the outcomes", consume_channel);
    }
    return {};
  }

  void take_commands() override {
    std::deque<std::pair<task_handoff, steady::time_point>> incoming;
    std::vector<lease_key> overflow;
    std::deque<lease_key> cancels;
    {
      std::lock_guard lock(mutex_);
      for (auto& d : dead_letters_) dead_waiting_.push_back(std::move(d));
      dead_letters_.clear();
      incoming.swap(incoming_);
      overflow.swap(overflow_);
      cancels.swap(cancels_);
      held_ += incoming.size();
    }
    for (auto& key : overflow) {
      counters_.undeliverable.fetch_add(1);
      report(key, fmt::format("rabbitmq: the dispatcher's buffer is full ({} hand-offs not yet "
                              "confirmed by the broker, buffer_bound)",
                              options_.buffer_bound));
    }
    for (auto& [h, since] : incoming) {
      auto e = std::make_shared<entry>();
      e->key = lease_key{h.task.id, h.task.attempt};
      e->capability = h.task.capability.empty() ? h.task.kind : h.task.capability;
      e->priority =
          static_cast<std::uint8_t>(std::clamp(h.task.priority, 0, int{options_.max_priority}));
      e->since = since;
      if (e->capability.empty() ||
          names_.task_queue_prefix.size() + e->capability.size() > max_short_string) {
        give_up(e, fmt::format("rabbitmq: the capability '{}' cannot name a queue (empty, or "
                               "longer than {} bytes with the prefix)",
                               shorten(e->capability), max_short_string));
        continue;
      }
      try {
        e->body = to_json(h).dump();
      } catch (const std::exception& ex) {
        give_up(e, fmt::format("rabbitmq: the hand-off cannot be encoded: {}", ex.what()));
        continue;
      }
      waiting_.push_back(std::move(e));
    }
    for (auto& key : cancels) {
      if (!conn_) continue;  // best effort: the lease is what makes it final
      publication p;
      p.exchange = names_.control;
      p.body = nlohmann::json{{"task", key.task_id}, {"attempt", key.attempt}}.dump();
      p.persistent = false;
      p.mandatory = false;
      publish(std::move(p));
    }
  }

  void work() override {
    // Dead letters of tasks that failed for good: persistent, confirmed;
    // one lost with the connection is published again.
    while (conn_ && !dead_waiting_.empty()) {
      auto [h, reason] = std::move(dead_waiting_.front());
      dead_waiting_.pop_front();
      const std::string capability = h.task.capability.empty() ? h.task.kind : h.task.capability;
      publication p;
      p.exchange = names_.dead;
      p.routing_key = capability;
      p.body = to_json(h).dump();
      p.headers = {{dead_reason_header, reason}, {dead_capability_header, capability}};
      p.done = [this, h = std::move(h), reason](publish_status st) mutable {
        if (st == publish_status::confirmed) {
          counters_.dead_lettered.fetch_add(1);
        } else if (st == publish_status::lost) {
          dead_waiting_.emplace_back(std::move(h), std::move(reason));
        } else {
          log_->error("rabbitmq: the broker refused the dead letter of task {}", h.task.id);
        }
      };
      publish(std::move(p));
    }
    while (conn_ && in_flight() < options_.publish_window &&
           !(retry_.empty() && waiting_.empty())) {
      auto& from = retry_.empty() ? waiting_ : retry_;
      entry_ptr e = from.front();
      from.pop_front();
      if (declared_.count(e->capability) == 0) {
        if (auto r = declare_task_queue(e->capability); !r) {
          if (!conn_) {
            from.push_front(std::move(e));
            return;
          }
          give_up(e, r.error().message());
          continue;
        }
        declared_.insert(e->capability);
      }
      publication p;
      p.exchange = names_.tasks;
      p.routing_key = e->capability;
      p.body = e->body;
      p.priority = e->priority;
      p.done = [this, e](publish_status s) { on_confirm(e, s); };
      publish(std::move(p));
    }
  }

  void on_confirm(const entry_ptr& e, publish_status s) {
    switch (s) {
      case publish_status::confirmed:
        counters_.confirmed.fetch_add(1);
        release(1);
        return;
      case publish_status::lost:
        if (!finishing_) counters_.republished.fetch_add(1);
        retry_.push_back(e);
        return;
      case publish_status::nacked:
      case publish_status::returned:
        if (s == publish_status::returned)
          declared_.erase(e->capability);  // deleted? declare again
        if (++e->tries >= max_publish_tries) {
          give_up(e, fmt::format("rabbitmq: the broker {} the hand-off {} times",
                                 s == publish_status::nacked ? "refused (nack)" : "returned",
                                 e->tries));
          return;
        }
        counters_.republished.fetch_add(1);
        retry_.push_back(e);
        return;
    }
  }

  void on_lost() override { declared_.clear(); }

  steady::time_point housekeeping(steady::time_point now) override {
    auto next = now + idle_poll;
    for (auto* list : {&retry_, &waiting_}) {
      while (!list->empty() && now - list->front()->since >= options_.buffer_deadline) {
        auto e = list->front();
        list->pop_front();
        give_up(e, fmt::format("rabbitmq: the broker did not confirm the hand-off within {} ms "
                               "(buffer_deadline){}",
                               options_.buffer_deadline.count(),
                               conn_ ? "" : "; the broker is unreachable"));
      }
      if (!list->empty()) next = std::min(next, list->front()->since + options_.buffer_deadline);
    }
    return next;
  }

  void finish() override {
    take_commands();
    work();
    drain_confirms(std::min(stop_grace, options_.connection.operation_timeout));
    finishing_ = true;
    abandon_in_flight();  // → retry_
    std::vector<entry_ptr> rest(retry_.begin(), retry_.end());
    rest.insert(rest.end(), waiting_.begin(), waiting_.end());
    retry_.clear();
    waiting_.clear();
    for (auto& e : rest) {
      give_up(e, "rabbitmq: the dispatcher stopped before the broker confirmed the hand-off");
    }
  }

  void on_delivery(amqp_channel_t channel, const std::string& /*consumer_tag*/, std::uint64_t tag,
                   std::string body) override {
    if (channel != consume_channel) return;
    result<task_outcome> decoded = decode_body(body, &task_outcome_from_json);
    if (!decoded) {
      log_->error("rabbitmq: an undecodable outcome ({} bytes) goes to '{}': {}", body.size(),
                  names_.dead, decoded.error().message());
      dead_letter(consume_channel, tag, "outcomes", std::move(body),
                  fmt::format("undecodable outcome: {}", decoded.error().message()));
      return;
    }
    counters_.outcomes.fetch_add(1);
    if (callbacks_.outcome) {
      guarded(*log_, "outcome", [&] { callbacks_.outcome(std::move(*decoded)); });
    }
    settle_delivery(consume_channel, tag, true, false);
  }

  void give_up(const entry_ptr& e, const std::string& why) {
    counters_.undeliverable.fetch_add(1);
    release(1);
    report(e->key, why);
  }

  void report(const lease_key& key, const std::string& why) {
    log_->warn("rabbitmq: hand-off of {} attempt {} undeliverable: {}", key.task_id, key.attempt,
               why);
    if (callbacks_.undeliverable && !muted()) {
      guarded(*log_, "undeliverable",
              [&] { callbacks_.undeliverable(key, error(errc::unavailable, why)); });
    }
  }

  void release(std::size_t n) {
    std::lock_guard lock(mutex_);
    held_ -= std::min(held_, n);
  }

  dispatch_callbacks callbacks_;  // set before the thread starts, then the thread's
  // Guarded by mutex_:
  bool started_ = false;
  std::deque<std::pair<task_handoff, steady::time_point>> incoming_;
  std::vector<lease_key> overflow_;
  std::deque<lease_key> cancels_;
  std::deque<std::pair<task_handoff, std::string>> dead_letters_;  // mutex_
  std::deque<std::pair<task_handoff, std::string>> dead_waiting_;  // the thread's
  std::size_t held_ = 0;  ///< Hand-offs the thread holds (waiting, in flight).
  // The thread only:
  std::deque<entry_ptr> waiting_;  ///< Not yet published.
  std::deque<entry_ptr> retry_;    ///< To publish again (before the waiting ones).
  std::set<std::string> declared_;
  bool finishing_ = false;
};

// ---------------------------------------------------------------------------
// task source
// ---------------------------------------------------------------------------

enum class settle_action { ack, requeue, dead_letter };

/// A settlement posted by a delivery (from any thread) to the source's thread.
struct settlement {
  std::uint64_t generation = 0;  ///< The connection the delivery came on.
  std::uint64_t tag = 0;
  settle_action action = settle_action::ack;
  std::string capability;
  std::string body;  ///< dead_letter: the original message.
  std::string reason;
};

class source_engine final : public engine {
 public:
  using engine::engine;

  result<void> start(std::vector<std::string> capabilities, std::size_t prefetch,
                     source_callbacks callbacks) {
    if (capabilities.empty()) {
      return error(errc::invalid_argument, "rabbitmq: start: no capability to consume");
    }
    if (prefetch == 0 || prefetch > 65535) {
      return error(errc::invalid_argument, "rabbitmq: start: prefetch must be 1 to 65535");
    }
    for (const auto& c : capabilities) {
      if (c.empty() || names_.task_queue_prefix.size() + c.size() > max_short_string) {
        return error(errc::invalid_argument,
                     fmt::format("rabbitmq: the capability '{}' cannot name a queue (empty, or "
                                 "longer than {} bytes with the prefix)",
                                 shorten(c), max_short_string));
      }
    }
    {
      std::lock_guard lock(mutex_);
      if (started_) return error(errc::invalid_argument, "rabbitmq: the source started already");
      started_ = true;
    }
    capabilities_ = std::move(capabilities);  // the thread's from here on; it starts below
    prefetch_ = static_cast<std::uint16_t>(prefetch);
    callbacks_ = std::move(callbacks);
    if (conn_) {
      if (auto r = begin_consuming(); !r && conn_) return r;  // a lost connection comes back
    }
    return launch();
  }

  result<void> report(const task_outcome& outcome) {
    std::string body;
    try {
      body = to_json(outcome).dump();
    } catch (const std::exception& e) {
      return error(errc::invalid_argument,
                   fmt::format("rabbitmq: the outcome cannot be encoded: {}", e.what()));
    }
    auto done = std::make_shared<std::promise<result<void>>>();
    auto answer = done->get_future();
    {
      std::lock_guard lock(mutex_);
      if (stopping() || !started_) {
        return error(errc::unavailable, "rabbitmq: the task source is not running");
      }
      if (!counters_.connected.load()) {
        return error(errc::unavailable, "rabbitmq: the task source is not connected; reconnecting");
      }
      reports_.push_back({std::move(body), done});
    }
    wake();
    const auto limit = options_.connection.operation_timeout;
    if (answer.wait_for(limit) != std::future_status::ready) {
      return error(errc::unavailable,
                   fmt::format("rabbitmq: report: no confirm from the broker within {} ms; the "
                               "outcome may or may not have arrived",
                               limit.count()));
    }
    auto r = answer.get();
    if (r) counters_.outcomes.fetch_add(1);
    return r;
  }

  /// From a delivery, on any thread.
  void post(settlement s) {
    {
      std::lock_guard lock(mutex_);
      if (stopping()) return;  // closing the channel gives it back
      settlements_.push_back(std::move(s));
    }
    wake();
  }

 private:
  struct pending_report {
    std::string body;
    std::shared_ptr<std::promise<result<void>>> done;
  };

  result<void> declare_topology() override { return declare_common(); }

  result<void> begin_consuming() override {
    auto* state = conn_->state();
    for (const auto& c : capabilities_) {
      if (auto r = declare_task_queue(c); !r) return r;
    }
    if (amqp_channel_open(state, consume_channel) == nullptr) {
      return check_rpc("opening the task channel", consume_channel);
    }
    // global = 1: one limit for every consumer of the channel, so the worker
    // holds at most `prefetch` deliveries across all its capabilities.
    if (amqp_basic_qos(state, consume_channel, 0, prefetch_, 1) == nullptr) {
      return check_rpc("setting the prefetch", consume_channel);
    }
    consumer_capabilities_.clear();
    for (std::size_t i = 0; i < capabilities_.size(); ++i) {
      const std::string tag = fmt::format("aise-task-{}", i);
      if (amqp_basic_consume(state, consume_channel, bytes_of(names_.task_queue(capabilities_[i])),
                             bytes_of(tag), 0, 0, 0, amqp_empty_table) == nullptr) {
        return check_rpc(fmt::format("consuming '{}'", names_.task_queue(capabilities_[i])),
                         consume_channel);
      }
      consumer_capabilities_[tag] = capabilities_[i];
    }
    // Cancel notices: a queue of this connection's own, gone with it.
    if (amqp_channel_open(state, control_channel) == nullptr) {
      return check_rpc("opening the control channel", control_channel);
    }
    const auto* declared =
        amqp_queue_declare(state, control_channel, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
    if (declared == nullptr) return check_rpc("declaring the control queue", control_channel);
    const std::string queue = string_of(declared->queue);
    if (amqp_queue_bind(state, control_channel, bytes_of(queue), bytes_of(names_.control),
                        amqp_empty_bytes, amqp_empty_table) == nullptr) {
      return check_rpc("binding the control queue", control_channel);
    }
    if (amqp_basic_consume(state, control_channel, bytes_of(queue),
                           amqp_cstring_bytes("aise-control"), 0, 1, 1,
                           amqp_empty_table) == nullptr) {
      return check_rpc("consuming the control queue", control_channel);
    }
    return {};
  }

  void take_commands() override {
    std::deque<settlement> settlements;
    std::deque<pending_report> reports;
    {
      std::lock_guard lock(mutex_);
      settlements.swap(settlements_);
      reports.swap(reports_);
    }
    settle_all(settlements);
    for (auto& r : reports) publish_report(std::move(r));
  }

  void settle_all(std::deque<settlement>& settlements) {
    for (auto& s : settlements) {
      if (s.generation != generation_ || !conn_) continue;  // the broker delivers it again
      switch (s.action) {
        case settle_action::ack:
          settle_delivery(consume_channel, s.tag, true, false);
          break;
        case settle_action::requeue:
          settle_delivery(consume_channel, s.tag, false, true);
          break;
        case settle_action::dead_letter:
          dead_letter(consume_channel, s.tag, s.capability, std::move(s.body), std::move(s.reason));
          break;
      }
    }
  }

  void publish_report(pending_report r) {
    {
      publication p;
      p.exchange = "";
      p.routing_key = names_.outcomes;
      p.body = std::move(r.body);
      p.done = [done = r.done, this](publish_status s) {
        switch (s) {
          case publish_status::confirmed:
            done->set_value({});
            break;
          case publish_status::nacked:
            done->set_value(error(errc::unavailable, "rabbitmq: the broker refused the outcome"));
            break;
          case publish_status::returned:
            done->set_value(error(errc::unavailable,
                                  fmt::format("rabbitmq: the broker returned the outcome (no "
                                              "queue '{}')",
                                              names_.outcomes)));
            break;
          case publish_status::lost:
            done->set_value(error(errc::unavailable,
                                  "rabbitmq: the connection broke before the broker confirmed "
                                  "the outcome; it may or may not have arrived"));
            break;
        }
      };
      publish(std::move(p));
    }
  }

  void work() override {}

  void on_delivery(amqp_channel_t channel, const std::string& consumer_tag, std::uint64_t tag,
                   std::string body) override {
    if (channel == control_channel) {
      on_cancel_notice(body);
      return;
    }
    if (channel != consume_channel) return;
    const auto it = consumer_capabilities_.find(consumer_tag);
    const std::string capability = it != consumer_capabilities_.end() ? it->second : "";
    result<task_handoff> decoded = decode_body(body, &task_handoff_from_json);
    if (!decoded) {
      log_->error("rabbitmq: an undecodable hand-off ({} bytes) on '{}' goes to '{}': {}",
                  body.size(), names_.task_queue(capability), names_.dead,
                  decoded.error().message());
      dead_letter(consume_channel, tag, capability, std::move(body),
                  fmt::format("undecodable hand-off: {}", decoded.error().message()));
      return;
    }
    counters_.delivered.fetch_add(1);
    auto d = make_delivery(tag, capability, std::move(body));
    if (callbacks_.delivery) {
      guarded(*log_, "delivery", [&] { callbacks_.delivery(std::move(*decoded), std::move(d)); });
    }
  }

  void on_cancel_notice(const std::string& body) {
    lease_key key;
    try {
      const auto j = nlohmann::json::parse(body);
      key.task_id = j.at("task").get<std::string>();
      key.attempt = j.at("attempt").get<int>();
    } catch (const std::exception& e) {
      log_->warn("rabbitmq: ignored a malformed cancel notice: {}", e.what());
      return;
    }
    if (callbacks_.cancel) guarded(*log_, "cancel", [&] { callbacks_.cancel(std::move(key)); });
  }

  std::unique_ptr<task_delivery> make_delivery(std::uint64_t tag, const std::string& capability,
                                               std::string body);

  void finish() override {
    // Settlements posted before stop() are carried out, reports waiting fail,
    // and what is in flight gets a moment for its confirm; unacknowledged
    // deliveries go back when the connection closes (politely, after this).
    std::deque<settlement> settlements;
    std::deque<pending_report> reports;
    {
      std::lock_guard lock(mutex_);
      settlements.swap(settlements_);
      reports.swap(reports_);
    }
    settle_all(settlements);
    for (auto& r : reports) {
      r.done->set_value(error(errc::unavailable, "rabbitmq: the task source stopped"));
    }
    drain_confirms(std::min(stop_grace, options_.connection.operation_timeout));
    abandon_in_flight();
  }

  source_callbacks callbacks_;  // set before the thread starts, then the thread's
  std::vector<std::string> capabilities_;
  std::uint16_t prefetch_ = 1;
  // Guarded by mutex_:
  bool started_ = false;
  std::deque<settlement> settlements_;
  std::deque<pending_report> reports_;
  // The thread only:
  std::map<std::string, std::string> consumer_capabilities_;  ///< consumer tag → capability
};

/// A delivered hand-off; settles through the source's thread.
class delivery_impl final : public task_delivery {
 public:
  delivery_impl(std::weak_ptr<source_engine> source, settlement s)
      : source_(std::move(source)), s_(std::move(s)) {}
  ~delivery_impl() override { settle(settle_action::requeue, {}); }
  delivery_impl(const delivery_impl&) = delete;
  delivery_impl& operator=(const delivery_impl&) = delete;

  void ack() override { settle(settle_action::ack, {}); }
  void dead_letter(std::string reason) override {
    settle(settle_action::dead_letter, std::move(reason));
  }
  void requeue() override { settle(settle_action::requeue, {}); }

 private:
  void settle(settle_action action, std::string reason) noexcept {
    if (settled_.exchange(true)) return;  // exactly once; later calls do nothing
    try {
      auto source = source_.lock();
      if (!source) return;  // stopped and gone: the broker has it back
      s_.action = action;
      s_.reason = std::move(reason);
      if (action != settle_action::dead_letter) s_.body.clear();
      source->post(std::move(s_));
    } catch (...) {
      // Out of memory: the delivery stays unacknowledged and comes back with the connection.
    }
  }

  std::weak_ptr<source_engine> source_;
  settlement s_;
  std::atomic<bool> settled_{false};
};

std::unique_ptr<task_delivery> source_engine::make_delivery(std::uint64_t tag,
                                                            const std::string& capability,
                                                            std::string body) {
  settlement s;
  s.generation = generation_;
  s.tag = tag;
  s.capability = capability;
  s.body = std::move(body);
  return std::make_unique<delivery_impl>(
      std::static_pointer_cast<source_engine>(shared_from_this()), std::move(s));
}

// ---------------------------------------------------------------------------
// the public objects
// ---------------------------------------------------------------------------

class rabbitmq_dispatcher_impl final : public rabbitmq_task_dispatcher {
 public:
  explicit rabbitmq_dispatcher_impl(std::shared_ptr<dispatcher_engine> e) : e_(std::move(e)) {}
  ~rabbitmq_dispatcher_impl() override { e_->stop(); }
  rabbitmq_dispatcher_impl(const rabbitmq_dispatcher_impl&) = delete;
  rabbitmq_dispatcher_impl& operator=(const rabbitmq_dispatcher_impl&) = delete;

  [[nodiscard]] bool serves(std::string_view capability) const override {
    return e_->serves(capability);
  }
  result<void> start(dispatch_callbacks callbacks) override {
    try {
      return e_->start(std::move(callbacks));
    } catch (const std::exception& e) {
      return error(errc::internal, fmt::format("rabbitmq: dispatcher start: {}", e.what()));
    }
  }
  void handoff(std::vector<task_handoff> batch) override { e_->handoff(std::move(batch)); }
  void cancel(lease_key key) override { e_->cancel(std::move(key)); }
  void dead_letter(task_handoff last, std::string reason) override {
    e_->keep_dead(std::move(last), std::move(reason));
  }
  void stop() override { e_->stop(); }
  [[nodiscard]] rabbitmq_task_stats stats() const override { return e_->stats(); }

 private:
  std::shared_ptr<dispatcher_engine> e_;
};

class rabbitmq_source_impl final : public rabbitmq_task_source {
 public:
  explicit rabbitmq_source_impl(std::shared_ptr<source_engine> e) : e_(std::move(e)) {}
  ~rabbitmq_source_impl() override { e_->stop(); }
  rabbitmq_source_impl(const rabbitmq_source_impl&) = delete;
  rabbitmq_source_impl& operator=(const rabbitmq_source_impl&) = delete;

  result<void> start(std::vector<std::string> capabilities, std::size_t prefetch,
                     source_callbacks callbacks) override {
    try {
      return e_->start(std::move(capabilities), prefetch, std::move(callbacks));
    } catch (const std::exception& e) {
      return error(errc::internal, fmt::format("rabbitmq: task source start: {}", e.what()));
    }
  }
  result<void> report(const task_outcome& outcome) override {
    try {
      return e_->report(outcome);
    } catch (const std::exception& e) {
      return error(errc::internal, fmt::format("rabbitmq: report: {}", e.what()));
    }
  }
  void stop() override { e_->stop(); }
  [[nodiscard]] rabbitmq_task_stats stats() const override { return e_->stats(); }

 private:
  std::shared_ptr<source_engine> e_;
};

/// Checks the options and fills in the defaults; the broker's address.
result<broker_address> prepare(rabbitmq_task_options& o) {
  auto& c = o.connection;
  if (c.prefix.size() > 100) {
    return error(errc::invalid_argument, "rabbitmq: the prefix is longer than 100 bytes");
  }
  if (c.operation_timeout.count() <= 0 || c.connect_timeout.count() <= 0) {
    return error(errc::invalid_argument, "rabbitmq: timeouts must be positive");
  }
  if (c.heartbeat.count() < 0 || c.heartbeat.count() > 65535) {
    return error(errc::invalid_argument, "rabbitmq: heartbeat must be 0 to 65535 seconds");
  }
  if (o.max_priority == 0) {
    return error(errc::invalid_argument, "rabbitmq: max_priority must be 1 to 255");
  }
  if (o.publish_window == 0) {
    return error(errc::invalid_argument, "rabbitmq: publish_window must be at least 1");
  }
  if (o.buffer_deadline.count() <= 0) {
    return error(errc::invalid_argument, "rabbitmq: buffer_deadline must be positive");
  }
  for (const auto& cap : o.capabilities) {
    if (cap.empty() || c.prefix.size() + 5 + cap.size() > max_short_string) {
      return error(errc::invalid_argument,
                   fmt::format("rabbitmq: the capability '{}' cannot name a queue (empty, or "
                               "longer than {} bytes with the prefix)",
                               shorten(cap), max_short_string));
    }
  }
  if (c.reconnect_backoff.count() <= 0) c.reconnect_backoff = milliseconds{1};
  c.reconnect_backoff_max = std::max(c.reconnect_backoff_max, c.reconnect_backoff);
  if (!c.logger) {
    c.logger = std::make_shared<spdlog::logger>(
        "rabbitmq", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  }
  return parse_broker_url(c.url);
}

}  // namespace

result<std::shared_ptr<task_dispatcher>> make_rabbitmq_dispatcher(rabbitmq_task_options options) {
  try {
    auto address = prepare(options);
    if (!address) return address.error();
    auto e =
        std::make_shared<dispatcher_engine>(std::move(options), std::move(*address), "dispatch");
    if (auto r = e->open(); !r) return r.error();
    return std::shared_ptr<task_dispatcher>(std::make_shared<rabbitmq_dispatcher_impl>(e));
  } catch (const std::exception& e) {
    return error(errc::internal, fmt::format("make_rabbitmq_dispatcher: {}", e.what()));
  }
}

result<std::shared_ptr<task_source>> make_rabbitmq_task_source(rabbitmq_task_options options) {
  try {
    auto address = prepare(options);
    if (!address) return address.error();
    auto e = std::make_shared<source_engine>(std::move(options), std::move(*address), "tasks");
    if (auto r = e->open(); !r) return r.error();
    return std::shared_ptr<task_source>(std::make_shared<rabbitmq_source_impl>(e));
  } catch (const std::exception& e) {
    return error(errc::internal, fmt::format("make_rabbitmq_task_source: {}", e.what()));
  }
}

}  // namespace aise
