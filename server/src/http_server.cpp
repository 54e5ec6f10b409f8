#include "http_server.hpp"

#include <aise/version.hpp>

#include <array>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "ws_session.hpp"

namespace aise::server {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

constexpr std::size_t drain_limit = 64 * 1024;
constexpr std::chrono::seconds drain_timeout{2};

}  // namespace

class http_server::impl {
 public:
  class session;

  impl(http_handler handler, http_server_options options)
      : handler_(std::move(handler)),
        options_(std::move(options)),
        ioc_(static_cast<int>(options_.io_threads)),
        pool_(options_.handler_threads),
        acceptor_(net::make_strand(ioc_)) {}

  // Declared first: sessions unregister here while the io_context (declared
  // after) destroys them.
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::uint64_t, std::weak_ptr<session>> sessions_;
  std::uint64_t next_session_ = 0;
  bool stopping_ = false;
  // Before the io_context: WebSocket sessions it destroys unregister here.
  std::unique_ptr<ws_hub> hub_;

  http_handler handler_;
  http_server_options options_;
  net::io_context ioc_;
  // Keeps the io threads running while a handler works on the pool and no
  // socket operation is pending (after stop, the acceptor no longer counts).
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work_;
  net::thread_pool pool_;
  tcp::acceptor acceptor_;
  std::vector<std::thread> threads_;
  std::uint16_t port_ = 0;
  bool joined_ = false;

  [[nodiscard]] bool stopping() {
    std::lock_guard lock(mutex_);
    return stopping_;
  }

  result<void> start();
  void accept();
  void stop();
  bool wait(std::chrono::milliseconds grace);
  void close_all();
  void join();
  void unregister(std::uint64_t id) {
    std::lock_guard lock(mutex_);
    sessions_.erase(id);
    changed_.notify_all();
  }
};

// One connection: everything runs on its strand (the stream's executor),
// except the handler, which runs on the pool and posts its response back.
class http_server::impl::session : public std::enable_shared_from_this<session> {
 public:
  session(impl& server, tcp::socket socket, std::uint64_t id)
      : server_(server), stream_(std::move(socket)), id_(id), executor_(stream_.get_executor()) {}
  ~session() { server_.unregister(id_); }

  void run() {
    net::dispatch(executor_, [self = shared_from_this()] { self->read(); });
  }

  // Posted by `stop`: an idle connection closes now; one with a request in
  // progress (being received, handled or answered) after its response.
  void stop() {
    net::dispatch(executor_, [self = shared_from_this()] {
      if (self->handed_off_) return;
      bool receiving = self->parser_ && self->parser_->got_some();
      beast::error_code ec;
      if (!self->busy_ && !receiving) self->stream_.socket().cancel(ec);
    });
  }

  void force_close() {
    net::dispatch(executor_, [self = shared_from_this()] {
      if (self->handed_off_) return;
      beast::error_code ec;
      self->stream_.socket().close(ec);
    });
  }

 private:
  void read() {
    if (server_.stopping()) return close();
    parser_.emplace();
    parser_->body_limit(server_.options_.body_limit);
    parser_->header_limit(static_cast<std::uint32_t>(server_.options_.header_limit));
    stream_.expires_after(server_.options_.read_timeout);
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_header(ec); });
  }

  // A client that sent `Expect: 100-continue` waits for a 100 before it
  // sends the body (curl does so for bodies over 1 KiB); a body over the
  // limit was refused already, by its Content-Length.
  void on_header(beast::error_code ec) {
    if (ec) return on_read(ec);
    if (beast::iequals(parser_->get()[http::field::expect], "100-continue") &&
        !parser_->is_done()) {
      auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_,
                                                                     parser_->get().version());
      http::async_write(stream_, *cont,
                        [self = shared_from_this(), cont](beast::error_code ec, std::size_t) {
                          if (ec) return self->close();
                          self->read_body();
                        });
      return;
    }
    read_body();
  }

  void read_body() {
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      return reply_and_close(error_response(413, "payload_too_large",
                                            "the request body is larger than " +
                                                std::to_string(server_.options_.body_limit) +
                                                " bytes",
                                            {{"limit", server_.options_.body_limit}}));
    }
    if (ec == http::error::header_limit) {
      return reply_and_close(error_response(431, "header_too_large",
                                            "the request line and headers are too large",
                                            {{"limit", server_.options_.header_limit}}));
    }
    if (ec && ec.category() == http::make_error_code(http::error::bad_method).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message) {
      return reply_and_close(
          error_response(400, "bad_request", "malformed HTTP request: " + ec.message()));
    }
    if (ec) return close();  // end of stream, timeout, reset, cancelled by stop

    auto& req = parser_->get();
    if (server_.hub_ && req.target().substr(0, req.target().find('?')) == "/api/v1/ws") {
      if (beast::websocket::is_upgrade(req)) {
        handed_off_ = true;
        return server_.hub_->accept(std::move(stream_), parser_->release());
      }
      keep_alive_ = req.keep_alive();
      version_ = req.version();
      busy_ = true;
      auto res = error_response(426, "upgrade_required", "/api/v1/ws is a WebSocket endpoint");
      res.headers.emplace_back("Upgrade", "websocket");
      return write(std::move(res), false);
    }
    keep_alive_ = req.keep_alive();
    version_ = req.version();
    request r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    r.body = std::move(req.body());
    busy_ = true;
    net::post(server_.pool_, [self = shared_from_this(), r = std::move(r)] {
      response res;
      try {
        res = self->server_.handler_(r);
      } catch (...) {
        res = error_response(500, "internal", "internal error");
      }
      net::post(self->stream_.get_executor(),
                [self, res = std::move(res)]() mutable { self->write(std::move(res), false); });
    });
  }

  void reply_and_close(response res) {
    busy_ = true;
    keep_alive_ = false;
    write(std::move(res), true);
  }

  void write(response res, bool close_after) {
    auto out = std::make_shared<http::response<http::string_body>>();
    out->version(version_);
    out->result(static_cast<unsigned>(res.status));
    out->set(http::field::server, "aise-server/" AISE_VERSION_STRING);
    out->set(http::field::content_type, "application/json");
    for (auto& [name, value] : res.headers) out->set(name, value);
    out->body() = std::move(res.body);
    close_after = close_after || !keep_alive_ || server_.stopping();
    out->keep_alive(!close_after);
    out->prepare_payload();
    stream_.expires_after(server_.options_.read_timeout);
    http::async_write(
        stream_, *out,
        [self = shared_from_this(), out, close_after](beast::error_code ec, std::size_t) {
          self->busy_ = false;
          if (ec || close_after) return self->close();
          self->read();
        });
  }

  // Half-closes, then reads (and drops) what the client still sends for a
  // moment, so that unread request bytes do not turn the close into a reset
  // that could destroy the response in flight.
  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) {
      stream_.socket().close(ec);
      return;
    }
    drained_ = 0;
    stream_.expires_after(drain_timeout);
    drain();
  }

  void drain() {
    stream_.async_read_some(net::buffer(discard_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                              self->drained_ += n;
                              if (ec || self->drained_ > drain_limit) {
                                beast::error_code ignored;
                                self->stream_.socket().close(ignored);
                                return;
                              }
                              self->drain();
                            });
  }

  impl& server_;
  beast::tcp_stream stream_;
  std::uint64_t id_;
  net::any_io_executor executor_;  // stream_'s, kept: the stream may be handed to a ws session
  bool handed_off_ = false;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool busy_ = false;
  bool keep_alive_ = true;
  unsigned version_ = 11;
  std::size_t drained_ = 0;
  std::array<char, 4096> discard_{};
};

result<void> http_server::impl::start() {
  beast::error_code ec;
  auto address = net::ip::make_address(options_.host, ec);
  if (ec) return fail(errc::invalid_argument, "bad listen address '" + options_.host + "'");
  tcp::endpoint endpoint(address, options_.port);
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return fail(errc::unavailable, "cannot listen on " + options_.host + ":" +
                                       std::to_string(options_.port) + ": " + ec.message());
  }
  auto local = acceptor_.local_endpoint(ec);
  if (ec) return fail(errc::unavailable, "cannot read the bound address: " + ec.message());
  port_ = local.port();
  if (options_.websocket.events != nullptr) {
    hub_ = std::make_unique<ws_hub>(options_.websocket, ioc_, pool_);
    hub_->start();
  }
  accept();
  work_.emplace(ioc_.get_executor());
  for (std::size_t i = 0; i < options_.io_threads; ++i) {
    threads_.emplace_back([this] { ioc_.run(); });
  }
  return {};
}

void http_server::impl::accept() {
  acceptor_.async_accept(
      net::make_strand(ioc_), [self = this](beast::error_code ec, tcp::socket s) {
        if (ec == net::error::operation_aborted || !self->acceptor_.is_open()) return;
        if (!ec) {
          std::shared_ptr<session> conn;
          {
            std::lock_guard lock(self->mutex_);
            if (self->stopping_) return;
            auto id = self->next_session_++;
            conn = std::make_shared<session>(*self, std::move(s), id);
            self->sessions_.emplace(id, conn);
          }
          conn->run();
        }
        self->accept();  // errors such as "too many open files" do not stop the listener
      });
}

void http_server::impl::stop() {
  std::vector<std::shared_ptr<session>> live;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
    for (auto& [id, weak] : sessions_) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
    changed_.notify_all();
  }
  if (hub_) hub_->stop();  // close frames 1001 going away
  net::dispatch(acceptor_.get_executor(), [self = this] {
    beast::error_code ec;
    self->acceptor_.close(ec);
  });
  for (auto& s : live) s->stop();  // outside the lock: a last reference may unregister
}

void http_server::impl::close_all() {
  std::vector<std::shared_ptr<session>> live;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, weak] : sessions_) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
  }
  for (auto& s : live) s->force_close();
  if (hub_) hub_->close_all();
}

bool http_server::impl::wait(std::chrono::milliseconds grace) {
  bool clean = true;
  std::chrono::steady_clock::time_point deadline;
  {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return stopping_; });
    deadline = std::chrono::steady_clock::now() + grace;
    clean = changed_.wait_until(lock, deadline, [&] { return sessions_.empty(); });
  }
  // WebSocket clients got their close frames at stop; without mutex_ held
  // (HTTP sessions unregister under it meanwhile).
  if (clean && hub_) {
    clean = hub_->wait(std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now()));
  }
  if (!clean) {
    close_all();
    {
      std::unique_lock lock(mutex_);
      changed_.wait_for(lock, std::chrono::seconds(5), [&] { return sessions_.empty(); });
    }
    if (hub_) hub_->wait(std::chrono::seconds(5));
  }
  join();
  return clean;
}

void http_server::impl::join() {
  if (joined_) return;
  joined_ = true;
  pool_.join();  // handlers still running finish and post their (now unused) responses
  work_.reset();
  ioc_.stop();
  for (auto& t : threads_) t.join();
}

http_server::http_server(http_handler handler, http_server_options options)
    : impl_(std::make_unique<impl>(std::move(handler), std::move(options))) {}

http_server::~http_server() {
  impl_->stop();
  impl_->wait(std::chrono::milliseconds(0));
}

result<void> http_server::start() {
  return impl_->start();
}

std::uint16_t http_server::port() const noexcept {
  return impl_->port_;
}

std::size_t http_server::websocket_clients() const noexcept {
  return impl_->hub_ ? impl_->hub_->clients() : 0;
}

void http_server::stop() {
  impl_->stop();
}

bool http_server::wait(std::chrono::milliseconds grace) {
  return impl_->wait(grace);
}

}  // namespace aise::server
