#pragma once
/// @file
/// One stream type for plain and TLS connections, so that the HTTP session
/// and the WebSocket session are written once: a `beast::tcp_stream`, or a
/// `beast::ssl_stream` over one when the server has a certificate. It meets
/// Beast's AsyncStream requirements (and WebSocket's teardown hooks), so
/// `http::async_read`, `http::async_write` and `websocket::stream<flex_stream>`
/// work on it unchanged. Private to the server's Beast translation units.
///
/// Thread safety: like the stream it wraps (one strand at a time).
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream_base.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <boost/beast/websocket/teardown.hpp>
#include <optional>
#include <utility>

namespace aise::server {

class flex_stream {
 public:
  using executor_type = boost::beast::tcp_stream::executor_type;

  /// Plain TCP.
  explicit flex_stream(boost::beast::tcp_stream plain) : plain_(std::move(plain)) {}
  /// TLS over `plain`; the handshake is still to be done (`handshake`).
  flex_stream(boost::beast::tcp_stream plain, boost::asio::ssl::context& tls)
      : tls_(std::in_place, std::move(plain), tls) {}

  flex_stream(flex_stream&&) = default;
  flex_stream& operator=(flex_stream&&) = default;
  flex_stream(const flex_stream&) = delete;
  flex_stream& operator=(const flex_stream&) = delete;
  ~flex_stream() = default;

  [[nodiscard]] bool is_tls() const noexcept { return tls_.has_value(); }

  executor_type get_executor() noexcept { return tcp().get_executor(); }

  /// The TCP layer (timeouts, the socket).
  boost::beast::tcp_stream& tcp() noexcept {
    return tls_ ? boost::beast::get_lowest_layer(*tls_) : *plain_;
  }
  boost::asio::ip::tcp::socket& socket() noexcept { return tcp().socket(); }
  template <class Duration>
  void expires_after(Duration d) {
    tcp().expires_after(d);
  }
  void expires_never() { tcp().expires_never(); }

  /// The server side of the TLS handshake; completes at once for plain TCP.
  template <class Handler>
  void async_handshake(Handler&& handler) {
    if (tls_) {
      tls_->async_handshake(boost::asio::ssl::stream_base::server, std::forward<Handler>(handler));
    } else {
      boost::asio::post(get_executor(), [h = std::forward<Handler>(handler)]() mutable {
        h(boost::system::error_code{});
      });
    }
  }

  /// Sends the TLS close_notify (plain TCP: completes at once).
  template <class Handler>
  void async_shutdown(Handler&& handler) {
    if (tls_) {
      tls_->async_shutdown(std::forward<Handler>(handler));
    } else {
      boost::asio::post(get_executor(), [h = std::forward<Handler>(handler)]() mutable {
        h(boost::system::error_code{});
      });
    }
  }

  template <class MutableBuffers, class Handler>
  void async_read_some(const MutableBuffers& buffers, Handler&& handler) {
    if (tls_) {
      tls_->async_read_some(buffers, std::forward<Handler>(handler));
    } else {
      plain_->async_read_some(buffers, std::forward<Handler>(handler));
    }
  }

  template <class ConstBuffers, class Handler>
  void async_write_some(const ConstBuffers& buffers, Handler&& handler) {
    if (tls_) {
      tls_->async_write_some(buffers, std::forward<Handler>(handler));
    } else {
      plain_->async_write_some(buffers, std::forward<Handler>(handler));
    }
  }

  // beast::close_socket (the WebSocket stream's timeouts use it).
  friend void beast_close_socket(flex_stream& s) {
    boost::system::error_code ec;
    s.socket().close(ec);
  }

  // WebSocket closing handshake: tear down the layer in use.
  friend void teardown(boost::beast::role_type role, flex_stream& s,
                       boost::system::error_code& ec) {
    using boost::beast::websocket::teardown;
    if (s.tls_) {
      teardown(role, *s.tls_, ec);
    } else {
      teardown(role, *s.plain_, ec);
    }
  }

  template <class Handler>
  friend void async_teardown(boost::beast::role_type role, flex_stream& s, Handler&& handler) {
    using boost::beast::websocket::async_teardown;
    if (s.tls_) {
      async_teardown(role, *s.tls_, std::forward<Handler>(handler));
    } else {
      async_teardown(role, *s.plain_, std::forward<Handler>(handler));
    }
  }

 private:
  std::optional<boost::beast::tcp_stream> plain_;
  std::optional<boost::beast::ssl_stream<boost::beast::tcp_stream>> tls_;
};

}  // namespace aise::server
