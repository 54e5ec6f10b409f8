// The RabbitMQ transport: a publisher (one connection shared by the
// callers of send/publish, confirms pipelined) and a consumer (one
// connection owned by a thread of its own, which calls the sinks).
// docs/rabbitmq.md explains the topology and the guarantees.

#include <aise/message.hpp>
#include <aise/rabbitmq.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <fmt/format.h>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <poll.h>
#include <random>
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
constexpr amqp_channel_t publish_channel = 1;
constexpr amqp_channel_t control_channel = 1;
constexpr amqp_channel_t first_binding_channel = 2;
constexpr amqp_channel_t last_binding_channel = 2047;  // RabbitMQ's default channel_max
constexpr milliseconds max_refusal_pause{50};
constexpr milliseconds idle_poll{1000};  // services heartbeats while nothing happens
constexpr const char* publish_tag_header = "aise-publish-tag";

/// Counters shared by both halves.
struct counters {
  std::atomic<std::uint64_t> sent{0}, published{0}, delivered{0}, refusals{0}, dropped{0},
      undecodable{0}, reconnects{0};
  std::atomic<bool> consumer_connected{false};
};

/// Names every exchange and queue is derived from.
struct topology {
  std::string direct_exchange;  ///< addresses: routing key = address
  std::string events_exchange;  ///< topics: routing key = topic (exact)
  std::string address_queue_prefix;
  std::string subscription_queue_prefix;

  explicit topology(const std::string& prefix, const std::string& instance)
      : direct_exchange(prefix + "direct"),
        events_exchange(prefix + "events"),
        address_queue_prefix(prefix + "addr."),
        subscription_queue_prefix(prefix + "sub." + instance + ".") {}
};

std::string random_hex() {
  std::random_device rd;
  const std::uint64_t bits = (std::uint64_t{rd()} << 32) ^ std::uint64_t{rd()};
  return fmt::format("{:016x}", bits);
}

result<std::string> encode(const message& m) {
  try {
    return to_json(m).dump();
  } catch (const std::exception& e) {
    return error(errc::invalid_argument,
                 fmt::format("rabbitmq: the message cannot be encoded: {}", e.what()));
  }
}

result<message> decode(const std::string& body) {
  try {
    const auto j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_discarded()) return error(errc::invalid_argument, "the body is not JSON");
    return message_from_json(j);
  } catch (const std::exception& e) {
    return error(errc::invalid_argument, e.what());
  }
}

std::string shorten(const std::string& s) {
  return s.size() <= 80 ? s : s.substr(0, 77) + "...";
}

// ---------------------------------------------------------------------------
// publisher
// ---------------------------------------------------------------------------

/// Publishes with confirms over one connection. Callers publish under the
/// mutex and then wait for their confirm; one of them at a time reads the
/// confirms (polling the socket without the lock, so others can publish
/// meanwhile), which pipelines the round trips of concurrent callers.
class publisher {
 public:
  publisher(broker_address address, const rabbitmq_options& options, const topology& names,
            std::shared_ptr<spdlog::logger> log, counters& stats)
      : address_(std::move(address)),
        options_(options),
        names_(names),
        log_(std::move(log)),
        stats_(stats),
        backoff_(options.reconnect_backoff) {
    settings_.connect_timeout = options.connect_timeout;
    settings_.rpc_timeout = options.operation_timeout;
    settings_.heartbeat_seconds = 0;
    settings_.name = options.connection_name + ".publish";
  }

  result<void> connect() {
    std::lock_guard lock(mutex_);
    return connect_locked();
  }

  void close() {
    std::lock_guard lock(mutex_);
    fail_all_locked(error(errc::unavailable, "rabbitmq: the transport is closed"));
    conn_.reset();
    closed_ = true;
  }

  /// Publishes `body` and waits for the broker's confirm.
  result<void> publish(const std::string& exchange, const std::string& key, bool mandatory,
                       bool persistent, const std::string& body, const std::string& what) {
    std::unique_lock lock(mutex_);
    const auto deadline = steady::now() + options_.operation_timeout;
    if (closed_) return error(errc::unavailable, "rabbitmq: the transport is closed");
    if (auto c = connect_locked(); !c) return c.error();
    if (pending_.empty() && !reading_) {
      // Idle connection: notice a close the broker sent meanwhile (a restart) before
      // publishing, so this call reconnects instead of failing after the fact.
      if (auto r = read_confirms_locked(); !r) {
        drop_locked(r.error());
        if (auto c = connect_locked(); !c) return c.error();
      }
    }

    const std::uint64_t tag = ++next_tag_;
    slot mine;
    pending_.emplace(tag, &mine);

    amqp_table_entry_t header;
    header.key = amqp_cstring_bytes(publish_tag_header);
    header.value.kind = AMQP_FIELD_KIND_I64;
    header.value.value.i64 = static_cast<std::int64_t>(tag);
    amqp_basic_properties_t props{};
    props._flags =
        AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_HEADERS_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = persistent ? 2 : 1;
    props.headers.num_entries = 1;
    props.headers.entries = &header;
    const int rc = amqp_basic_publish(conn_->state(), publish_channel, bytes_of(exchange),
                                      bytes_of(key), mandatory ? 1 : 0, 0, &props, bytes_of(body));
    if (rc != AMQP_STATUS_OK) {
      drop_locked(library_failure(rc, "publishing").error);
      pending_.erase(tag);
      return *mine.failure;
    }

    while (!mine.done) {
      const auto now = steady::now();
      if (now >= deadline) {
        pending_.erase(tag);
        drop_locked(error(errc::unavailable,
                          fmt::format("rabbitmq: no confirm from the broker within {} ms",
                                      options_.operation_timeout.count())));
        return error(errc::unavailable,
                     fmt::format("rabbitmq: {}: no confirm from the broker within {} ms; the "
                                 "message may or may not have arrived",
                                 what, options_.operation_timeout.count()));
      }
      if (reading_) {
        reader_done_.wait_until(lock, deadline);
        continue;
      }
      reading_ = true;
      if (auto r = read_confirms_locked(); !r) drop_locked(r.error());
      if (mine.done || !conn_) {
        reading_ = false;
        reader_done_.notify_all();
        break;
      }
      reader_done_.notify_all();  // confirms of others may have arrived
      const int fd = conn_->fd();
      lock.unlock();
      pollfd p{fd, POLLIN, 0};
      const auto wait = std::chrono::duration_cast<milliseconds>(deadline - now).count();
      (void)::poll(&p, 1, static_cast<int>(std::clamp<long long>(wait, 1, 100)));
      lock.lock();
      reading_ = false;
      reader_done_.notify_all();
      // A connection dropped meanwhile resolved every slot, ours included.
    }
    pending_.erase(tag);

    if (mine.failure) return *mine.failure;
    if (mine.returned) {
      return error(errc::not_found,
                   fmt::format("rabbitmq: {}: nobody is bound (the broker returned it: {})", what,
                               mine.return_text));
    }
    if (mine.nacked) {
      return error(errc::mailbox_full,
                   fmt::format("rabbitmq: {}: the broker refused it: the queue is full ({} "
                               "messages, queue_bound)",
                               what, options_.queue_bound));
    }
    return {};
  }

 private:
  struct slot {
    bool done = false;
    bool returned = false;
    bool nacked = false;
    std::string return_text;
    std::optional<error> failure;
  };

  result<void> connect_locked() {
    if (conn_) return {};
    const auto now = steady::now();
    if (now < next_attempt_) {
      return error(
          errc::unavailable,
          fmt::format("rabbitmq: the broker at {} is unavailable ({}); next attempt in "
                      "{} ms",
                      address_.shown, last_error_,
                      std::chrono::duration_cast<milliseconds>(next_attempt_ - now).count()));
    }
    auto opened = connection::open(address_, settings_);
    result<void> ready = opened ? result<void>{} : result<void>{opened.error()};
    if (ready) ready = (*opened)->open_channel(publish_channel, "opening the publishing channel");
    if (ready && amqp_confirm_select((*opened)->state(), publish_channel) == nullptr) {
      ready = (*opened)->last_rpc_failure("enabling publisher confirms").error;
    }
    if (ready) ready = (*opened)->declare_direct_exchange(publish_channel, names_.direct_exchange);
    if (ready) ready = (*opened)->declare_direct_exchange(publish_channel, names_.events_exchange);
    if (!ready) {
      last_error_ = ready.error().message();
      next_attempt_ = now + backoff_;
      backoff_ = std::min(backoff_ * 2, options_.reconnect_backoff_max);
      return ready.error();
    }
    conn_ = std::move(*opened);
    next_tag_ = 0;
    backoff_ = options_.reconnect_backoff;
    if (ever_connected_) {
      stats_.reconnects.fetch_add(1);
      log_->info("rabbitmq: publishing connection to {} restored", address_.shown);
    }
    ever_connected_ = true;
    return {};
  }

  void fail_all_locked(const error& why) {
    for (auto& [tag, s] : pending_) {
      if (!s->done) {
        s->done = true;
        s->failure = why;
      }
    }
  }

  void drop_locked(const error& why) {
    if (!conn_) return;
    log_->warn("rabbitmq: publishing connection lost: {}", why.message());
    fail_all_locked(
        error(errc::unavailable,
              fmt::format("{} (the message may or may not have arrived)", why.message())));
    conn_->mark_broken();
    conn_.reset();
    last_error_ = why.message();
    next_attempt_ = steady::now();  // the next call tries again at once, later ones back off
  }

  void resolve_locked(std::uint64_t tag, bool multiple, bool nack) {
    auto settle = [&](slot& s) {
      s.done = true;
      s.nacked = nack;
    };
    if (multiple) {
      for (auto it = pending_.begin(); it != pending_.end() && it->first <= tag; ++it) {
        if (!it->second->done) settle(*it->second);
      }
    } else if (auto it = pending_.find(tag); it != pending_.end()) {
      settle(*it->second);
    }
  }

  /// Handles every frame that can be read without blocking.
  result<void> read_confirms_locked() {
    for (;;) {
      amqp_frame_t frame;
      const int rc = conn_->poll_frame(frame);
      if (rc == AMQP_STATUS_TIMEOUT) break;
      if (rc != AMQP_STATUS_OK) return library_failure(rc, "waiting for confirms").error;
      if (frame.frame_type != AMQP_FRAME_METHOD) continue;
      switch (frame.payload.method.id) {
        case AMQP_BASIC_ACK_METHOD: {
          const auto* ack = static_cast<amqp_basic_ack_t*>(frame.payload.method.decoded);
          resolve_locked(ack->delivery_tag, ack->multiple != 0, false);
          break;
        }
        case AMQP_BASIC_NACK_METHOD: {
          const auto* nack = static_cast<amqp_basic_nack_t*>(frame.payload.method.decoded);
          resolve_locked(nack->delivery_tag, nack->multiple != 0, true);
          break;
        }
        case AMQP_BASIC_RETURN_METHOD: {
          const auto* ret = static_cast<amqp_basic_return_t*>(frame.payload.method.decoded);
          const std::string text =
              fmt::format("{} {}", ret->reply_code, string_of(ret->reply_text));
          amqp_message_t returned;
          const auto reply = amqp_read_message(conn_->state(), frame.channel, &returned, 0);
          if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
            return conn_->rpc_failure(reply, frame.channel, "reading a returned message").error;
          }
          const amqp_table_t& headers = returned.properties.headers;
          for (int i = 0; i < headers.num_entries; ++i) {
            const auto& e = headers.entries[i];
            if (string_of(e.key) == publish_tag_header && e.value.kind == AMQP_FIELD_KIND_I64) {
              if (auto it = pending_.find(static_cast<std::uint64_t>(e.value.value.i64));
                  it != pending_.end()) {
                it->second->returned = true;
                it->second->return_text = text;
              }
            }
          }
          amqp_destroy_message(&returned);
          break;
        }
        case AMQP_CHANNEL_CLOSE_METHOD: {
          const auto* m = static_cast<amqp_channel_close_t*>(frame.payload.method.decoded);
          const auto why = fmt::format("rabbitmq: the broker closed the publishing channel: {} {}",
                                       m->reply_code, string_of(m->reply_text));
          conn_->confirm_channel_close(frame.channel);
          return error(errc::unavailable, why);
        }
        case AMQP_CONNECTION_CLOSE_METHOD: {
          const auto* m = static_cast<amqp_connection_close_t*>(frame.payload.method.decoded);
          const auto why = fmt::format("rabbitmq: the broker closed the connection: {} {}",
                                       m->reply_code, string_of(m->reply_text));
          conn_->confirm_connection_close();
          return error(errc::unavailable, why);
        }
        default:
          break;
      }
      amqp_maybe_release_buffers_on_channel(conn_->state(), frame.channel);
    }
    return {};
  }

  const broker_address address_;
  const rabbitmq_options& options_;
  const topology& names_;
  std::shared_ptr<spdlog::logger> log_;
  counters& stats_;
  connection_settings settings_;

  std::mutex mutex_;
  std::condition_variable reader_done_;
  // Guarded by mutex_:
  std::unique_ptr<connection> conn_;
  std::uint64_t next_tag_ = 0;
  std::map<std::uint64_t, slot*> pending_;  // slots live on their callers' stacks
  bool reading_ = false;
  bool closed_ = false;
  bool ever_connected_ = false;
  steady::time_point next_attempt_{};
  milliseconds backoff_;
  std::string last_error_;
};

// ---------------------------------------------------------------------------
// consumer
// ---------------------------------------------------------------------------

/// One binding (address) or subscription (topic).
struct binding {
  std::uint64_t id = 0;
  bool topic = false;
  std::string name;   ///< The address or topic.
  std::string queue;  ///< Its queue (a subscription gets a new one per connection).
  message_sink sink;

  // Consumer thread only:
  amqp_channel_t channel = 0;  ///< 0: not consuming now.
  struct held {
    std::uint64_t delivery_tag;
    message m;
  };
  std::deque<held> pending;  ///< Delivered, not yet accepted; at most `prefetch`.
  steady::time_point retry_at{};
  milliseconds refusal_pause{0};

  // Guarded by consumer::mutex_:
  bool cancelled = false;
  bool answered = false;   ///< The setup's outcome was handed to the caller.
  bool abandoned = false;  ///< The caller stopped waiting for the setup.
};

class consumer : public std::enable_shared_from_this<consumer> {
 public:
  consumer(broker_address address, rabbitmq_options options, topology names,
           std::shared_ptr<spdlog::logger> log, std::shared_ptr<counters> stats)
      : address_(std::move(address)),
        options_(std::move(options)),
        names_(std::move(names)),
        log_(std::move(log)),
        stats_holder_(std::move(stats)),
        stats_(*stats_holder_) {
    settings_.connect_timeout = options_.connect_timeout;
    settings_.rpc_timeout = options_.operation_timeout;
    settings_.heartbeat_seconds = static_cast<int>(options_.heartbeat.count());
    settings_.name = options_.connection_name + ".consume";
  }

  ~consumer() {
    if (wake_fd_ >= 0) ::close(wake_fd_);
  }
  consumer(const consumer&) = delete;
  consumer& operator=(const consumer&) = delete;

  /// Connects (on the calling thread) and starts the consumer thread.
  result<void> start() {
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) {
      return error(errc::unavailable,
                   fmt::format("rabbitmq: eventfd failed: {}", std::strerror(errno)));
    }
    if (auto c = connect(); !c) return c;
    stats_.consumer_connected.store(true);
    try {
      // The thread keeps its consumer alive: the last reference to the transport may
      // be dropped on this very thread (a sink holding it), and then stop() detaches.
      thread_ = std::thread([self = shared_from_this()] { self->run(); });
    } catch (const std::exception& e) {
      return error(errc::unavailable, fmt::format("rabbitmq: cannot start a thread: {}", e.what()));
    }
    return {};
  }

  void stop() noexcept {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake();
    if (thread_.joinable()) {
      if (std::this_thread::get_id() == thread_.get_id()) {
        thread_.detach();  // destroyed from inside a sink: the thread ends on its own
      } else {
        thread_.join();
      }
    }
  }

  result<subscription> add(bool topic, std::string name, message_sink sink) {
    auto b = std::make_shared<binding>();
    b->topic = topic;
    b->name = std::move(name);
    b->sink = std::move(sink);
    if (!topic) b->queue = names_.address_queue_prefix + b->name;
    {
      std::lock_guard lock(mutex_);
      if (stop_) return error(errc::unavailable, "rabbitmq: the transport is closed");
      b->id = ++next_binding_id_;
      if (!topic) {
        if (addresses_.count(b->name) != 0) {
          return error(errc::already_exists,
                       fmt::format("rabbitmq: address '{}' is already bound", b->name));
        }
        addresses_.emplace(b->name, b);
      }
    }
    auto ready = set_up(b);
    if (!ready) {
      std::lock_guard lock(mutex_);
      b->cancelled = true;
      if (auto it = addresses_.find(b->name); !topic && it != addresses_.end() && it->second == b) {
        addresses_.erase(it);
      }
      return ready.error();
    }
    return subscription([weak = weak_from_this(), b] {
      if (auto self = weak.lock()) self->cancel(b);
    });
  }

 private:
  struct command {
    bool set_up = false;  ///< Else tear down.
    std::shared_ptr<binding> b;
    std::shared_ptr<std::promise<result<void>>> done;  ///< Answered when handled; may be empty.
  };

  [[nodiscard]] bool on_consumer_thread() const noexcept {
    return std::this_thread::get_id() == thread_id_.load();
  }

  void wake() noexcept {
    const std::uint64_t one = 1;
    if (wake_fd_ >= 0) (void)!::write(wake_fd_, &one, sizeof one);
  }

  /// Has the consumer thread declare and consume `b`'s queue; waits for it.
  result<void> set_up(const std::shared_ptr<binding>& b) {
    if (on_consumer_thread()) {
      auto r = conn_ ? set_up_now(b) : not_connected();
      if (r) live_.emplace(b->id, b);
      std::lock_guard lock(mutex_);
      b->answered = true;
      return r;
    }
    auto done = std::make_shared<std::promise<result<void>>>();
    auto outcome = done->get_future();
    {
      std::lock_guard lock(mutex_);
      commands_.push_back({true, b, done});
    }
    wake();
    const auto limit = options_.operation_timeout + options_.connect_timeout;
    if (outcome.wait_for(limit) != std::future_status::ready) {
      std::unique_lock lock(mutex_);
      if (!b->answered) {
        b->abandoned = true;
        return error(errc::timeout, fmt::format("rabbitmq: setting up '{}' took longer than {} ms",
                                                b->name, limit.count()));
      }
    }
    return outcome.get();
  }

  void cancel(const std::shared_ptr<binding>& b) {
    std::unique_lock lock(mutex_);
    if (b->cancelled) return;
    b->cancelled = true;
    if (auto it = addresses_.find(b->name);
        !b->topic && it != addresses_.end() && it->second == b) {
      addresses_.erase(it);
    }
    if (!on_consumer_thread()) {
      // The contract: no sink call after reset returned, so wait for one in progress.
      while (in_sink_ == b.get()) {
        if (!sink_done_.wait_for(lock, std::chrono::seconds(5),
                                 [&] { return in_sink_ != b.get(); })) {
          log_->warn("rabbitmq: resetting '{}' waits for its sink, which has run for 5 s or more",
                     b->name);
        }
      }
    }
    if (on_consumer_thread() || stop_) {
      commands_.push_back({false, b, nullptr});  // done after the sink returned
      lock.unlock();
      wake();
      return;
    }
    // Wait for the teardown too, so that the address is gone once reset returned
    // (sends fail with not_found, another process may bind it at once).
    auto done = std::make_shared<std::promise<result<void>>>();
    auto finished = done->get_future();
    commands_.push_back({false, b, done});
    lock.unlock();
    wake();
    if (finished.wait_for(options_.operation_timeout) != std::future_status::ready) {
      log_->warn(
          "rabbitmq: removing '{}' from the broker takes longer than {} ms; it goes on "
          "in the background",
          b->name, options_.operation_timeout.count());
    }
  }

  result<void> not_connected() const {
    return error(errc::unavailable, fmt::format("rabbitmq: not connected to {} ({}); reconnecting",
                                                address_.shown, last_error_));
  }

  // --- consumer thread -----------------------------------------------------

  result<void> connect() {
    auto opened = connection::open(address_, settings_);
    if (!opened) return opened.error();
    auto& c = **opened;
    if (auto r = c.open_channel(control_channel, "opening the control channel"); !r) return r;
    if (auto r = c.declare_direct_exchange(control_channel, names_.direct_exchange); !r) return r;
    if (auto r = c.declare_direct_exchange(control_channel, names_.events_exchange); !r) return r;
    conn_ = std::move(*opened);
    return {};
  }

  void run() {
    thread_id_.store(std::this_thread::get_id());
    milliseconds backoff = options_.reconnect_backoff;
    steady::time_point next_attempt{};
    for (;;) {
      std::deque<command> todo;
      {
        std::lock_guard lock(mutex_);
        if (stop_) break;
        todo.swap(commands_);
      }
      if (!conn_ && steady::now() >= next_attempt) {
        if (reconnect()) {
          backoff = options_.reconnect_backoff;
        } else {
          next_attempt = steady::now() + backoff;
          backoff = std::min(backoff * 2, options_.reconnect_backoff_max);
        }
      }
      for (auto& c : todo) handle(c);
      if (conn_) drain();
      if (conn_) pump();

      // Wait for the socket, a command, or the next retry of a refused message.
      auto until = steady::now() + idle_poll;
      if (!conn_) {
        until = std::min(until, next_attempt);
      } else {
        if (conn_->has_buffered_frames()) until = steady::now();
        for (const auto& [id, b] : live_) {
          if (!b->pending.empty() && b->channel != 0) until = std::min(until, b->retry_at);
        }
      }
      pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {conn_ ? conn_->fd() : -1, POLLIN, 0}};
      const auto wait = std::chrono::duration_cast<milliseconds>(until - steady::now()).count();
      (void)::poll(fds, conn_ ? 2 : 1, static_cast<int>(std::max<long long>(wait, 0)));
      if ((fds[0].revents & POLLIN) != 0) {
        std::uint64_t n = 0;
        (void)!::read(wake_fd_, &n, sizeof n);
      }
    }
    // Closing: tear down what was reset (best effort), then hang up.
    std::deque<command> rest;
    {
      std::lock_guard lock(mutex_);
      rest.swap(commands_);
    }
    for (auto& c : rest) {
      if (!c.set_up) {
        tear_down(*c.b);
        if (c.done) c.done->set_value({});
      } else {
        c.done->set_value(error(errc::unavailable, "rabbitmq: the transport is closed"));
      }
    }
    live_.clear();
    by_channel_.clear();
    conn_.reset();
    stats_.consumer_connected.store(false);
  }

  void handle(command& c) {
    if (!c.set_up) {
      tear_down(*c.b);
      if (c.done) c.done->set_value({});
      return;
    }
    auto r = conn_ ? set_up_now(c.b) : not_connected();
    bool abandoned = false;
    {
      std::lock_guard lock(mutex_);
      abandoned = c.b->abandoned;
      c.b->answered = true;
    }
    if (r && !abandoned) live_.emplace(c.b->id, c.b);
    if (r && abandoned) tear_down(*c.b);
    c.done->set_value(std::move(r));
  }

  amqp_channel_t allocate_channel() {
    // Numbers are not reused at once: frames of a closed channel may still be queued.
    for (int tries = 0; tries <= last_binding_channel; ++tries) {
      const amqp_channel_t ch = next_channel_;
      next_channel_ = next_channel_ >= last_binding_channel
                          ? first_binding_channel
                          : static_cast<amqp_channel_t>(next_channel_ + 1);
      if (by_channel_.count(ch) == 0) return ch;
    }
    return 0;
  }

  /// Declares, binds and consumes `b`'s queue on a channel of its own. Another
  /// process may delete the queue between our declaration and consume (it
  /// just let go of the address): then declare again, a few times.
  result<void> set_up_now(const std::shared_ptr<binding>& binding_ptr) {
    for (int attempt = 1;; ++attempt) {
      auto r = set_up_once(binding_ptr);
      if (r || r.error().code() != errc::not_found || !conn_ || attempt == 3) return r;
    }
  }

  result<void> set_up_once(const std::shared_ptr<binding>& binding_ptr) {
    binding& b = *binding_ptr;
    const amqp_channel_t ch = allocate_channel();
    if (ch == 0) return error(errc::limit_exceeded, "rabbitmq: no free channel (2046 bindings)");
    const std::string what = fmt::format("{} '{}'", b.topic ? "subscribing to" : "binding", b.name);
    if (auto r = conn_->open_channel(ch, what); !r) {
      if (conn_->broken()) lose_connection(r.error());
      return r;
    }
    auto fail = [&](const amqp_failure& f) -> result<void> {
      if (f.connection_lost) {
        lose_connection(f.error);
      } else if (!f.channel_closed) {
        (void)amqp_channel_close(conn_->state(), ch, AMQP_REPLY_SUCCESS);
      }
      return f.error;
    };
    if (amqp_basic_qos(conn_->state(), ch, 0, options_.prefetch, 0) == nullptr) {
      return fail(conn_->rpc_failure(amqp_get_rpc_reply(conn_->state()), ch, what));
    }
    if (b.topic) b.queue = names_.subscription_queue_prefix + std::to_string(++queue_counter_);

    amqp_table_entry_t args[3];
    int n = 0;
    args[n].key = amqp_cstring_bytes("x-max-length");
    args[n].value.kind = AMQP_FIELD_KIND_I64;
    args[n++].value.value.i64 = static_cast<std::int64_t>(options_.queue_bound);
    args[n].key = amqp_cstring_bytes("x-overflow");
    args[n].value.kind = AMQP_FIELD_KIND_UTF8;
    args[n++].value.value.bytes = amqp_cstring_bytes("reject-publish");
    if (!b.topic && options_.queue_expiry.count() > 0) {
      args[n].key = amqp_cstring_bytes("x-expires");
      args[n].value.kind = AMQP_FIELD_KIND_I64;
      args[n++].value.value.i64 = static_cast<std::int64_t>(options_.queue_expiry.count());
    }
    amqp_table_t table{n, args};
    // Addresses: durable, shared by name. Topics: exclusive to this connection, deleted with it.
    if (amqp_queue_declare(conn_->state(), ch, bytes_of(b.queue), 0, b.topic ? 0 : 1,
                           b.topic ? 1 : 0, b.topic ? 1 : 0, table) == nullptr) {
      return fail(conn_->rpc_failure(amqp_get_rpc_reply(conn_->state()), ch,
                                     fmt::format("{}: declaring the queue '{}'", what, b.queue)));
    }
    const std::string& exchange = b.topic ? names_.events_exchange : names_.direct_exchange;
    if (amqp_queue_bind(conn_->state(), ch, bytes_of(b.queue), bytes_of(exchange), bytes_of(b.name),
                        amqp_empty_table) == nullptr) {
      return fail(conn_->rpc_failure(amqp_get_rpc_reply(conn_->state()), ch, what));
    }
    const std::string tag = fmt::format("aise-{}", b.id);
    // An address has one receiver across processes: consume exclusively.
    if (amqp_basic_consume(conn_->state(), ch, bytes_of(b.queue), bytes_of(tag), 0, 0,
                           b.topic ? 0 : 1, amqp_empty_table) == nullptr) {
      auto f = conn_->rpc_failure(amqp_get_rpc_reply(conn_->state()), ch, what);
      if (f.reply_code == AMQP_ACCESS_REFUSED) {
        f.error = error(errc::already_exists,
                        fmt::format("rabbitmq: address '{}' is already bound by another consumer "
                                    "of the broker ({})",
                                    b.name, f.error.message()));
      }
      return fail(f);
    }
    b.channel = ch;
    b.pending.clear();
    b.refusal_pause = milliseconds{0};
    b.retry_at = steady::time_point{};
    by_channel_[ch] = binding_ptr;
    return {};
  }

  void tear_down(binding& b) {
    live_.erase(b.id);
    const amqp_channel_t ch = b.channel;
    b.channel = 0;
    b.pending.clear();
    if (ch == 0 || !conn_) {
      if (ch != 0) by_channel_.erase(ch);
      return;
    }
    const std::string tag = fmt::format("aise-{}", b.id);
    const auto state = conn_->state();
    bool ok = amqp_basic_cancel(state, ch, bytes_of(tag)) != nullptr;
    if (ok && !b.topic) ok = amqp_queue_delete(state, ch, bytes_of(b.queue), 0, 0) != nullptr;
    if (ok) {
      ok = amqp_channel_close(state, ch, AMQP_REPLY_SUCCESS).reply_type == AMQP_RESPONSE_NORMAL;
    } else {
      const auto f =
          conn_->rpc_failure(amqp_get_rpc_reply(state), ch, fmt::format("removing '{}'", b.name));
      if (f.connection_lost) {
        by_channel_.erase(ch);
        lose_connection(f.error);
        return;
      }
      log_->warn("{}", f.error.message());
      if (!f.channel_closed) (void)amqp_channel_close(state, ch, AMQP_REPLY_SUCCESS);
    }
    by_channel_.erase(ch);
  }

  /// Reads every frame available now (bounded, so commands and sinks get their turn).
  void drain() {
    for (int i = 0; i < 1000 && conn_; ++i) {
      amqp_frame_t frame;
      const int rc = conn_->poll_frame(frame);
      if (rc == AMQP_STATUS_TIMEOUT) return;
      if (rc != AMQP_STATUS_OK) {
        lose_connection(library_failure(rc, "receiving").error);
        return;
      }
      if (frame.frame_type != AMQP_FRAME_METHOD) continue;
      const amqp_channel_t ch = frame.channel;
      switch (frame.payload.method.id) {
        case AMQP_BASIC_DELIVER_METHOD: {
          const auto* d = static_cast<amqp_basic_deliver_t*>(frame.payload.method.decoded);
          const std::uint64_t delivery_tag = d->delivery_tag;
          amqp_message_t content;
          const auto reply = amqp_read_message(conn_->state(), ch, &content, 0);
          if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
            const auto f = conn_->rpc_failure(reply, ch, "reading a delivery");
            if (f.channel_closed) {
              channel_closed(ch, f.error.message());
            } else {
              lose_connection(f.error);
              return;
            }
            break;
          }
          std::string body = string_of(content.body);
          amqp_destroy_message(&content);
          if (auto it = by_channel_.find(ch); it != by_channel_.end()) {
            on_delivery(*it->second, delivery_tag, body);
          }
          break;
        }
        case AMQP_BASIC_CANCEL_METHOD:  // the broker cancelled a consumer (its queue was deleted)
          channel_closed(ch, "the broker cancelled the consumer (was the queue deleted?)");
          if (conn_) (void)amqp_channel_close(conn_->state(), ch, AMQP_REPLY_SUCCESS);
          break;
        case AMQP_CHANNEL_CLOSE_METHOD: {
          const auto* m = static_cast<amqp_channel_close_t*>(frame.payload.method.decoded);
          const auto why = fmt::format("the broker closed the channel: {} {}", m->reply_code,
                                       string_of(m->reply_text));
          conn_->confirm_channel_close(ch);
          channel_closed(ch, why);
          break;
        }
        case AMQP_CONNECTION_CLOSE_METHOD: {
          const auto* m = static_cast<amqp_connection_close_t*>(frame.payload.method.decoded);
          const auto why = fmt::format("rabbitmq: the broker closed the connection: {} {}",
                                       m->reply_code, string_of(m->reply_text));
          conn_->confirm_connection_close();
          lose_connection(error(errc::unavailable, why));
          return;
        }
        default:
          break;
      }
      if (conn_) amqp_maybe_release_buffers_on_channel(conn_->state(), ch);
    }
  }

  /// A binding's channel is gone; it comes back with the next connection.
  void channel_closed(amqp_channel_t ch, const std::string& why) {
    auto it = by_channel_.find(ch);
    if (it == by_channel_.end()) return;
    log_->warn("rabbitmq: '{}' stopped consuming: {}; it resumes after a reconnection",
               it->second->name, why);
    it->second->channel = 0;
    it->second->pending.clear();
    by_channel_.erase(it);
  }

  void on_delivery(binding& b, std::uint64_t delivery_tag, const std::string& body) {
    auto decoded = decode(body);
    if (!decoded) {
      stats_.undecodable.fetch_add(1);
      log_->error("rabbitmq: rejected an undecodable message on '{}' ({} bytes): {}", b.name,
                  body.size(), decoded.error().message());
      if (amqp_basic_reject(conn_->state(), b.channel, delivery_tag, 0) != AMQP_STATUS_OK) {
        conn_->mark_broken();
      }
      return;
    }
    b.pending.push_back({delivery_tag, std::move(*decoded)});
  }

  /// Hands pending deliveries to their sinks, in order, and acknowledges them.
  void pump() {
    std::vector<std::shared_ptr<binding>> all;
    all.reserve(live_.size());
    for (const auto& [id, b] : live_) all.push_back(b);
    for (const auto& b : all) {
      while (conn_ && !conn_->broken() && b->channel != 0 && !b->pending.empty() &&
             steady::now() >= b->retry_at) {
        {
          std::lock_guard lock(mutex_);
          if (b->cancelled) {
            b->pending.clear();
            break;
          }
          in_sink_ = b.get();
        }
        result<void> r;
        try {
          message copy = b->pending.front().m;  // kept for a retry if the sink refuses
          r = b->sink(std::move(copy));
        } catch (const std::exception& e) {
          r = error(errc::internal, fmt::format("the sink threw: {}", e.what()));
        } catch (...) {
          r = error(errc::internal, "the sink threw something that is not a std::exception");
        }
        {
          std::lock_guard lock(mutex_);
          in_sink_ = nullptr;
        }
        sink_done_.notify_all();
        if (!conn_ || b->channel == 0) break;
        const auto tag = b->pending.front().delivery_tag;
        if (r) {
          stats_.delivered.fetch_add(1);
          b->refusal_pause = milliseconds{0};
          if (amqp_basic_ack(conn_->state(), b->channel, tag, 0) != AMQP_STATUS_OK) {
            conn_->mark_broken();
          }
          b->pending.pop_front();
        } else if (r.error().code() == errc::mailbox_full) {
          stats_.refusals.fetch_add(1);
          b->refusal_pause =
              std::min(max_refusal_pause, std::max(milliseconds{1}, b->refusal_pause * 2));
          b->retry_at = steady::now() + b->refusal_pause;
          break;
        } else {
          stats_.dropped.fetch_add(1);
          log_->warn("rabbitmq: the sink of '{}' refused a message, dropped: {}", b->name,
                     r.error().describe());
          if (amqp_basic_reject(conn_->state(), b->channel, tag, 0) != AMQP_STATUS_OK) {
            conn_->mark_broken();
          }
          b->pending.pop_front();
        }
      }
    }
    if (conn_ && conn_->broken()) {
      lose_connection(error(errc::unavailable, "rabbitmq: acknowledging failed"));
    }
  }

  void lose_connection(const error& why) {
    if (!conn_) return;
    log_->warn("rabbitmq: consuming connection lost: {}; reconnecting", why.message());
    last_error_ = why.message();
    conn_->mark_broken();
    conn_.reset();
    stats_.consumer_connected.store(false);
    for (auto& [id, b] : live_) {
      b->channel = 0;
      b->pending.clear();  // unacknowledged: the broker delivers them again
    }
    by_channel_.clear();
  }

  bool reconnect() {
    if (auto c = connect(); !c) {
      last_error_ = c.error().message();
      return false;
    }
    std::vector<std::shared_ptr<binding>> all;
    for (const auto& [id, b] : live_) all.push_back(b);
    for (const auto& b : all) {
      {
        std::lock_guard lock(mutex_);
        if (b->cancelled) continue;
      }
      if (auto r = set_up_now(b); !r) {
        if (!conn_) return false;  // lost again: try later, bindings kept
        log_->error(
            "rabbitmq: '{}' could not be restored after a reconnection and receives "
            "nothing more: {}",
            b->name, r.error().message());
        live_.erase(b->id);
      }
    }
    stats_.reconnects.fetch_add(1);
    stats_.consumer_connected.store(true);
    log_->info("rabbitmq: consuming connection to {} restored ({} bindings)", address_.shown,
               live_.size());
    return true;
  }

  const broker_address address_;
  const rabbitmq_options options_;
  const topology names_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<counters> stats_holder_;
  counters& stats_;
  connection_settings settings_;
  int wake_fd_ = -1;
  std::thread thread_;
  std::atomic<std::thread::id> thread_id_{};

  std::mutex mutex_;
  std::condition_variable sink_done_;
  // Guarded by mutex_:
  bool stop_ = false;
  std::uint64_t next_binding_id_ = 0;
  std::deque<command> commands_;
  std::map<std::string, std::shared_ptr<binding>> addresses_;
  const binding* in_sink_ = nullptr;

  // Consumer thread only (and the creating thread before it starts):
  std::unique_ptr<connection> conn_;
  std::string last_error_;
  std::map<std::uint64_t, std::shared_ptr<binding>> live_;  ///< Wanted bindings.
  std::map<amqp_channel_t, std::shared_ptr<binding>> by_channel_;
  amqp_channel_t next_channel_ = first_binding_channel;
  std::uint64_t queue_counter_ = 0;
};

// ---------------------------------------------------------------------------
// the transport
// ---------------------------------------------------------------------------

class rabbitmq_transport_impl final : public rabbitmq_transport {
 public:
  rabbitmq_transport_impl(rabbitmq_options options, broker_address address)
      : options_(std::move(options)),
        names_(options_.prefix, random_hex()),
        address_(std::move(address)) {}

  ~rabbitmq_transport_impl() override {
    if (consumer_) consumer_->stop();
    if (publisher_) publisher_->close();
  }
  rabbitmq_transport_impl(const rabbitmq_transport_impl&) = delete;
  rabbitmq_transport_impl& operator=(const rabbitmq_transport_impl&) = delete;

  result<void> start() {
    publisher_ = std::make_unique<publisher>(address_, options_, names_, options_.logger, stats_);
    if (auto r = publisher_->connect(); !r) return r;
    consumer_ =
        std::make_shared<consumer>(address_, options_, names_, options_.logger, stats_holder_);
    return consumer_->start();
  }

  [[nodiscard]] std::string_view name() const noexcept override { return "rabbitmq"; }

  result<subscription> bind(std::string address, message_sink sink) override {
    try {
      if (address.empty()) return error(errc::invalid_argument, "bind: the address is empty");
      if (!sink) return error(errc::invalid_argument, "bind: the sink is empty");
      if (auto r = check_name(address, names_.address_queue_prefix.size(), "address"); !r) {
        return r.error();
      }
      return consumer_->add(false, std::move(address), std::move(sink));
    } catch (const std::exception& e) {
      return error(errc::internal, fmt::format("bind: {}", e.what()));
    }
  }

  result<subscription> subscribe(std::string topic, message_sink sink) override {
    try {
      if (topic.empty()) return error(errc::invalid_argument, "subscribe: the topic is empty");
      if (!sink) return error(errc::invalid_argument, "subscribe: the sink is empty");
      if (auto r = check_name(topic, 0, "topic"); !r) return r.error();
      return consumer_->add(true, std::move(topic), std::move(sink));
    } catch (const std::exception& e) {
      return error(errc::internal, fmt::format("subscribe: {}", e.what()));
    }
  }

  result<void> send(message m) override {
    try {
      if (m.recipient.empty()) {
        return error(errc::invalid_argument, "send: the message has no recipient");
      }
      if (!m.topic.empty()) {
        return error(errc::invalid_argument, "send: the message has a topic; use publish");
      }
      if (auto r = check_name(m.recipient, names_.address_queue_prefix.size(), "address"); !r) {
        return r;
      }
      auto body = encode(m);
      if (!body) return body.error();
      auto r = publisher_->publish(names_.direct_exchange, m.recipient, true, true, *body,
                                   fmt::format("send to '{}'", shorten(m.recipient)));
      if (r) stats_.sent.fetch_add(1);
      return r;
    } catch (const std::exception& e) {
      return error(errc::internal, fmt::format("send: {}", e.what()));
    }
  }

  result<void> publish(message m) override {
    try {
      if (m.topic.empty())
        return error(errc::invalid_argument, "publish: the message has no topic");
      if (!m.recipient.empty()) {
        return error(errc::invalid_argument, "publish: the message has a recipient; use send");
      }
      if (auto r = check_name(m.topic, 0, "topic"); !r) return r;
      auto body = encode(m);
      if (!body) return body.error();
      auto r = publisher_->publish(names_.events_exchange, m.topic, false, false, *body,
                                   fmt::format("publish to topic '{}'", shorten(m.topic)));
      if (r) stats_.published.fetch_add(1);
      return r;
    } catch (const std::exception& e) {
      return error(errc::internal, fmt::format("publish: {}", e.what()));
    }
  }

  [[nodiscard]] rabbitmq_stats stats() const override {
    rabbitmq_stats s;
    s.sent = stats_.sent.load();
    s.published = stats_.published.load();
    s.delivered = stats_.delivered.load();
    s.refusals = stats_.refusals.load();
    s.dropped = stats_.dropped.load();
    s.undecodable = stats_.undecodable.load();
    s.reconnects = stats_.reconnects.load();
    s.consumer_connected = stats_.consumer_connected.load();
    return s;
  }

 private:
  /// AMQP names and routing keys are at most 255 bytes.
  [[nodiscard]] result<void> check_name(const std::string& name, std::size_t queue_prefix,
                                        std::string_view what) const {
    const std::size_t limit = max_short_string - queue_prefix;
    if (name.size() > limit) {
      return error(errc::invalid_argument,
                   fmt::format("rabbitmq: the {} '{}' is too long ({} bytes; at most {} with the "
                               "prefix '{}')",
                               what, shorten(name), name.size(), limit, options_.prefix));
    }
    return {};
  }

  const rabbitmq_options options_;
  const topology names_;
  const broker_address address_;
  std::shared_ptr<counters> stats_holder_ = std::make_shared<counters>();
  counters& stats_ = *stats_holder_;
  std::unique_ptr<publisher> publisher_;
  std::shared_ptr<consumer> consumer_;
};

}  // namespace

result<std::shared_ptr<rabbitmq_transport>> make_rabbitmq_transport(rabbitmq_options options) {
  try {
    if (options.prefetch == 0) {
      return error(errc::invalid_argument, "rabbitmq: prefetch must be at least 1");
    }
    if (options.queue_bound == 0 ||
        options.queue_bound > static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max())) {
      return error(errc::invalid_argument, "rabbitmq: queue_bound must be at least 1");
    }
    if (options.prefix.size() > 100) {
      return error(errc::invalid_argument, "rabbitmq: the prefix is longer than 100 bytes");
    }
    if (options.operation_timeout.count() <= 0 || options.connect_timeout.count() <= 0) {
      return error(errc::invalid_argument, "rabbitmq: timeouts must be positive");
    }
    if (options.reconnect_backoff.count() <= 0) options.reconnect_backoff = milliseconds{1};
    options.reconnect_backoff_max =
        std::max(options.reconnect_backoff_max, options.reconnect_backoff);
    if (options.heartbeat.count() < 0 || options.heartbeat.count() > 65535) {
      return error(errc::invalid_argument, "rabbitmq: heartbeat must be 0 to 65535 seconds");
    }
    auto address = parse_broker_url(options.url);
    if (!address) return address.error();
    if (!options.logger) {
      options.logger = std::make_shared<spdlog::logger>(
          "rabbitmq", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    }
    auto t = std::make_shared<rabbitmq_transport_impl>(std::move(options), std::move(*address));
    if (auto r = t->start(); !r) return r.error();
    return std::shared_ptr<rabbitmq_transport>(std::move(t));
  } catch (const std::exception& e) {
    return error(errc::internal, fmt::format("make_rabbitmq_transport: {}", e.what()));
  }
}

}  // namespace aise
