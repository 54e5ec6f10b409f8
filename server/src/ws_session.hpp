#pragma once
/// @file
/// The WebSocket endpoint `/api/v1/ws` (protocol: server/README.md,
/// "WebSocket"): a per-server fan-out (`ws_hub`) that takes the
/// orchestrator's live events, serializes each once and shares the bytes
/// among the sessions subscribed to its project, and one session per
/// client on its own strand. Internal to aise_server_http (it includes
/// Beast); http_server.cpp hands upgrade requests over with `accept`.
///
/// Gap-free, duplicate-free resume: a session registers for live events of
/// a project first, then reads the event log after the client's sequence,
/// holding live events meanwhile; it then sends the held ones it has not
/// sent. A live event whose sequence is not the next one of its project
/// (live delivery dropped some) makes the session read the log again.
///
/// Bounds: a session's queue of messages to send (`max_queued_messages`,
/// `max_queued_bytes`; over them the client is closed with 4008), its held
/// events while it reads the log (the same bound; over it they are dropped
/// and read from the log again), and the fan-out's backlog
/// (`max_fanout_backlog`; over it events are dropped and sessions read them
/// from the log).
///
/// Thread safety: every member of `ws_hub` may be called from any thread.
/// The orchestrator listener only copies the event into the backlog; the
/// fan-out runs on the socket threads, one job at a time; store calls (the log,
/// the project check) and `ws_access::authenticate` run on the handler pool.
#include <aise/event.hpp>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "flex_stream.hpp"
#include "ws_options.hpp"

namespace aise::server {

class ws_session;

/// One live event as the sessions share it: serialized once.
struct ws_live_event {
  std::string project;
  std::uint64_t sequence = 0;
  bool agent = false;  ///< Type "agent.*".
  std::string frame;   ///< `{"type":"event","project","sequence","event"}`.
};

/// The fan-out and the registry of WebSocket sessions of one server.
class ws_hub {
 public:
  /// `io` runs the sockets and the fan-out, `pool` the blocking calls; both
  /// must outlive the hub's sessions (declare the hub before them).
  ws_hub(ws_options options, boost::asio::io_context& io, boost::asio::thread_pool& pool);
  ~ws_hub();
  ws_hub(const ws_hub&) = delete;
  ws_hub& operator=(const ws_hub&) = delete;

  /// Subscribes to the orchestrator's events (call once, before `accept`).
  void start();

  /// Takes over a connection whose request asked for the WebSocket upgrade
  /// on /api/v1/ws: authenticates it (HTTP 401 on a bad token) and
  /// completes the handshake. After `stop`, the connection is closed.
  void accept(flex_stream stream, boost::beast::http::request<boost::beast::http::string_body> req);

  /// Stops taking events and clients; every session is closed with 1001
  /// "going away" (after its queued messages are dropped). Idempotent.
  void stop();

  /// Waits until every session is gone, at most `timeout`; true if so.
  bool wait(std::chrono::milliseconds timeout);

  /// Closes every session's socket without a close handshake.
  void close_all();

  /// Sessions alive (from the upgrade request until the socket is closed).
  [[nodiscard]] std::size_t clients() const noexcept { return clients_.load(); }

  // ---- used by the sessions ----
  [[nodiscard]] const ws_options& options() const noexcept { return options_; }
  [[nodiscard]] boost::asio::thread_pool& pool() noexcept { return pool_; }
  [[nodiscard]] bool stopping();
  void add_project(const std::string& project, std::uint64_t id,
                   const std::shared_ptr<ws_session>& s);
  void remove_project(const std::string& project, std::uint64_t id);
  void set_agents(std::uint64_t id, const std::shared_ptr<ws_session>& s, bool on);
  void gone(std::uint64_t id);

 private:
  void on_event(const event& e);
  void fan_out();
  void fan_out(std::vector<event> events);

  ws_options options_;
  boost::asio::io_context& io_;
  boost::asio::thread_pool& pool_;

  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::uint64_t, std::weak_ptr<ws_session>> sessions_;
  std::unordered_map<std::string, std::map<std::uint64_t, std::weak_ptr<ws_session>>> by_project_;
  std::map<std::uint64_t, std::weak_ptr<ws_session>> agents_;
  std::uint64_t next_id_ = 0;
  bool stopping_ = false;
  std::optional<std::size_t> listener_;
  std::atomic<std::size_t> clients_{0};

  std::mutex backlog_mutex_;
  std::vector<event> backlog_;
  bool fan_out_posted_ = false;
  bool listening_ = false;
};

}  // namespace aise::server
