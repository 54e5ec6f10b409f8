#pragma once
// One rabbitmq-c connection and the translation of its errors into
// aise::error, in one place. Not thread-safe: its owner serializes calls.

#include <aise/error.hpp>

#include <amqp.h>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace aise::rabbitmq_detail {

/// The parts of an amqp:// URL.
struct broker_address {
  std::string host;
  int port = 5672;
  std::string user;
  std::string password;
  std::string vhost;
  std::string shown;  ///< For messages: the URL without the password.
};

/// Parses `amqp://user:password@host:port/vhost`; `invalid_argument` else.
result<broker_address> parse_broker_url(const std::string& url);

/// What an AMQP call's failure means for its caller.
struct amqp_failure {
  aise::error error;
  bool connection_lost = false;  ///< The connection is unusable now.
  bool channel_closed = false;   ///< Only the channel was closed by the broker.
  int reply_code = 0;            ///< The broker's reply code (404, 403, ...), or 0.
};

/// Translates a library status (`AMQP_STATUS_*`, negative) into a failure.
amqp_failure library_failure(int status, std::string_view what);

/// How a connection is opened.
struct connection_settings {
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds rpc_timeout{10000};
  int heartbeat_seconds = 0;
  std::string name;  ///< The `connection_name` client property.
};

/// An open, logged-in AMQP connection.
class connection {
 public:
  /// Opens a TCP connection and logs in; `unavailable` with the reason.
  static result<std::unique_ptr<connection>> open(const broker_address& address,
                                                  const connection_settings& settings);
  ~connection();
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  [[nodiscard]] amqp_connection_state_t state() const noexcept { return state_; }
  [[nodiscard]] int fd() const noexcept;
  /// The connection cannot be used any more; the destructor skips the polite close.
  void mark_broken() noexcept { broken_ = true; }
  [[nodiscard]] bool broken() const noexcept { return broken_; }

  /// The failure of the last synchronous RPC (`amqp_get_rpc_reply`). When
  /// the broker closed the channel or connection, answers with close-ok.
  amqp_failure last_rpc_failure(std::string_view what);
  /// Same for a reply the caller has in hand.
  amqp_failure rpc_failure(const amqp_rpc_reply_t& reply, amqp_channel_t channel,
                           std::string_view what);

  /// Answers a broker's channel.close with close-ok.
  void confirm_channel_close(amqp_channel_t channel) noexcept;
  /// Answers a broker's connection.close with close-ok and marks it broken.
  void confirm_connection_close() noexcept;

  /// Opens `channel`; an error for the caller otherwise.
  result<void> open_channel(amqp_channel_t channel, std::string_view what);
  /// Declares the durable direct exchange `name` on `channel`.
  result<void> declare_direct_exchange(amqp_channel_t channel, const std::string& name);

  /// Reads the next frame without blocking: `AMQP_STATUS_TIMEOUT` when
  /// nothing is buffered or readable.
  int poll_frame(amqp_frame_t& frame) noexcept;
  /// Frames buffered by the library (queued or partly read data).
  [[nodiscard]] bool has_buffered_frames() const noexcept;

 private:
  connection() = default;
  amqp_connection_state_t state_ = nullptr;
  bool broken_ = false;
};

/// `amqp_bytes_t` viewing `text` (no copy; lives as long as `text`).
amqp_bytes_t bytes_of(std::string_view text) noexcept;
/// A std::string copy of `bytes`.
std::string string_of(amqp_bytes_t bytes);

}  // namespace aise::rabbitmq_detail
