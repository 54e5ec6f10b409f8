#pragma once
/// @file
/// The HTTP/1.1 side of aise-server, after Boost.Beast's async example
/// servers: a listener, one session per connection on its own strand, and a
/// plain function from request to response (`http_handler`, usually
/// `api::handle`) run on a pool of its own so that blocking store calls
/// never stall the sockets. No Beast type shows here.
///
/// Bounds: a request's headers (`header_limit`, else 431) and body
/// (`body_limit`, else 413; streamed uploads: `uploads.upload_limit`) are
/// limited; a response with a `stream` is sent piece by piece (its source
/// is read on a handler thread; an error from it closes the connection); reading one request, the
/// idle keep-alive wait included, must finish within `read_timeout` (else the connection is
/// closed), and so must writing a response. A request the parser refuses (a malformed request line,
/// bad headers) gets a 400 and the connection is closed; the server goes on serving the others.
///
/// Stopping (`stop`): the listener stops accepting, idle connections are
/// closed, a request in progress is answered (with `Connection: close`) and
/// then its connection closes; WebSocket clients get a close frame 1001
/// "going away"; `wait` returns once every connection is gone (or closes
/// the rest after its grace period).
///
/// WebSocket: a request with `Upgrade: websocket` on /api/v1/ws is handed
/// to the WebSocket endpoint (ws_session.hpp, server/README.md "WebSocket")
/// when `websocket.events` is set; without the upgrade it gets a 426.
#include <aise/error.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "api.hpp"
#include "ws_options.hpp"

namespace aise::server {

/// Answers one request; called on a handler thread; must not throw.
using http_handler = std::function<response(const request&)>;

/// Streamed request bodies (artifact uploads). `streams_body` is asked on a
/// socket thread, from the request line and headers alone, and must be
/// cheap; when it says yes, `begin_upload` runs on a handler thread and
/// either gives a sink, which then receives the body piece by piece (on
/// handler threads, one piece at a time; at most `upload_limit` bytes, else
/// a 413), or a refusal, which is sent without reading the body (the
/// connection is then closed). Both must not throw.
struct upload_hooks {
  std::function<bool(const request& head)> streams_body;
  std::function<upload_start(const request& head)> begin_upload;
  std::uint64_t upload_limit = 0;  ///< Bytes of a streamed body; 0 = no limit.
};

/// Options of the HTTP server.
struct http_server_options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8080;              ///< 0: any free port (see `port()`).
  std::size_t body_limit = 1024 * 1024;   ///< Bytes; larger bodies get a 413.
  std::size_t header_limit = 16 * 1024;   ///< Bytes of request line + headers; else 431.
  std::chrono::seconds read_timeout{30};  ///< Per request read (idle wait included) and write.
  std::size_t io_threads = 1;             ///< Threads running the sockets.
  std::size_t handler_threads = 4;        ///< Threads running `http_handler`.
  upload_hooks uploads;                   ///< Unset: every body is read whole (`body_limit`).
  std::size_t stream_piece = 64 * 1024;   ///< Bytes per piece of a streamed body (both ways).
  ws_options websocket;                   ///< /api/v1/ws (served when `websocket.events` is set).
  /// HTTPS and WSS: PEM files of the certificate chain and its private key.
  /// Both set: every connection is TLS (1.2 or later); both empty: plain.
  std::string tls_cert_file;
  std::string tls_key_file;
};

/// The server. Non-copyable; destroying it stops it (with no grace period).
class http_server {
 public:
  http_server(http_handler handler, http_server_options options);
  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  /// Binds, listens and starts the threads. `invalid_argument` for a bad
  /// address or an unusable TLS certificate or key (the message names the
  /// file), `unavailable` when the port cannot be bound. Call once.
  result<void> start();

  /// The bound port (after `start`).
  [[nodiscard]] std::uint16_t port() const noexcept;

  /// Begins a graceful stop (see the file comment) and returns at once.
  /// Safe from any thread; idempotent.
  void stop();

  /// Blocks until `stop` was called and every connection closed, giving
  /// requests in progress up to `grace` before their connections are closed
  /// hard; then joins the threads. Returns true when nothing had to be
  /// closed hard.
  bool wait(std::chrono::milliseconds grace);

  /// WebSocket clients connected now (0 when /api/v1/ws is not served).
  /// Safe from any thread.
  [[nodiscard]] std::size_t websocket_clients() const noexcept;

 private:
  class impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace aise::server
