#pragma once
/// @file
/// Options of the WebSocket endpoint `/api/v1/ws` of aise-server (the
/// session itself is in ws_session.hpp, the protocol in server/README.md,
/// "WebSocket"). No Beast type shows here, so http_server.hpp can carry
/// these options without exposing Beast.
#include <aise/error.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace aise {
class orchestrator;
}

namespace aise::server {

/// The authentication seam of the WebSocket endpoint. Both functions are
/// optional; with none set every client may read every project.
///
/// Thread safety: both are called from several threads at once. Blocking:
/// `authenticate` runs on the handler pool (it may call a store);
/// `may_read` runs on the handler pool when a client subscribes to a
/// project, but on a socket thread for the agent events of a project the
/// session has not seen yet (its answers are cached per session), so it
/// should be quick. Neither may throw (an exception counts as a refusal).
struct ws_access {
  /// A token (a bearer token from the `Authorization` header, the
  /// `access_token` query parameter or an `auth` message) to the subject it
  /// names. An error refuses the client: HTTP 401 for a token of the
  /// upgrade request, close code 4001 for an `auth` message.
  std::function<result<std::string>(std::string_view token)> authenticate;
  /// Whether `subject` may read the events of `project`; a refusal is an
  /// `error` message `forbidden` to a `subscribe`, and agent events of that
  /// project are not sent. Called only when `authenticate` is set.
  std::function<bool(const std::string& subject, const std::string& project)> may_read;
};

/// Options of the WebSocket endpoint. The defaults suit a dashboard.
struct ws_options {
  /// The source of the events (its live listeners and its store's event
  /// log). Null: `/api/v1/ws` is not served (an upgrade there gets a 404).
  /// Must outlive the server.
  aise::orchestrator* events = nullptr;
  ws_access access;  ///< Empty: no authentication.
  /// Per client: messages waiting to be sent (live events received and not
  /// yet written) beyond which the client is a slow consumer and is closed
  /// with 4008. Memory per client is bounded by these two.
  std::size_t max_queued_messages = 16'384;
  std::size_t max_queued_bytes = 8 * 1024 * 1024;  ///< Same, in bytes.
  /// SO_SNDBUF of a client's socket; 0 keeps the system's (Linux grows it
  /// up to net.ipv4.tcp_wmem's maximum, megabytes per slow client).
  std::size_t send_buffer_bytes = 0;
  std::size_t max_message_size = 64 * 1024;  ///< Largest client message; larger: close 1009.
  std::size_t max_subscriptions = 64;        ///< Projects per client; more: `limit_exceeded`.
  /// Largest text frame the server sends: messages queued for a client are
  /// sent together, one JSON object per line, up to this many bytes.
  std::size_t max_frame_bytes = 64 * 1024;
  std::size_t replay_page = 256;  ///< Events read from the log per store call when resuming.
  /// Without a token on the upgrade request (and with `access.authenticate`
  /// set), the first message must be `auth` within this time, else close 4001.
  std::chrono::milliseconds auth_timeout{10'000};
  /// With no frame from the client for half of this time the server pings;
  /// with nothing for all of it the connection is closed.
  std::chrono::milliseconds idle_timeout{60'000};
  /// Time for the opening handshake and for a closing one (after which the
  /// socket is closed without waiting for the client's close frame).
  std::chrono::milliseconds handshake_timeout{10'000};
  /// Events the per-server fan-out keeps between the orchestrator and the
  /// sessions; beyond that they are dropped and the sessions read them from
  /// the event log instead (no client sees a gap).
  std::size_t max_fanout_backlog = 65'536;
};

}  // namespace aise::server
