#include "http_server.hpp"

#include <aise/version.hpp>

#include <algorithm>
#include <array>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <cctype>
#include <condition_variable>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "flex_stream.hpp"
#include "ws_session.hpp"

namespace aise::server {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

constexpr std::size_t drain_limit = 64 * 1024;
constexpr std::chrono::seconds drain_timeout{2};
// Sent on every response over TLS: browsers keep to HTTPS for a year.
constexpr const char* hsts = "max-age=31536000";

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
  std::optional<net::ssl::context> tls_;  // set by start() when a certificate is configured
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
      : server_(server),
        stream_(server.tls_ ? flex_stream(beast::tcp_stream(std::move(socket)), *server.tls_)
                            : flex_stream(beast::tcp_stream(std::move(socket)))),
        id_(id),
        executor_(stream_.get_executor()) {}
  ~session() { server_.unregister(id_); }

  // With TLS, the handshake first (bounded by read_timeout); a client that
  // fails it (plain HTTP to a TLS port, a bad hello) is dropped.
  void run() {
    net::dispatch(executor_, [self = shared_from_this()] {
      if (!self->stream_.is_tls()) return self->read();
      self->stream_.expires_after(self->server_.options_.read_timeout);
      self->stream_.async_handshake([self](beast::error_code ec) {
        if (ec) {
          beast::error_code ignored;
          self->stream_.socket().close(ignored);
          return;
        }
        self->read();
      });
    });
  }

  // Posted by `stop`: an idle connection closes now; one with a request in
  // progress (being received, handled or answered) after its response.
  void stop() {
    net::dispatch(executor_, [self = shared_from_this()] {
      if (self->handed_off_) return;
      bool receiving = self->receiving_ || (self->head_ && self->head_->got_some());
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
    receiving_ = false;
    parser_.reset();
    head_.emplace();
    // Checked per route in on_header. (Not `boost::none`: Beast 1.81
    // compares a Content-Length against that as if it were the lowest limit.)
    head_->body_limit(std::numeric_limits<std::uint64_t>::max());
    head_->header_limit(static_cast<std::uint32_t>(server_.options_.header_limit));
    stream_.expires_after(server_.options_.read_timeout);
    http::async_read_header(
        stream_, buffer_, *head_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_header(ec); });
  }

  // The request line and headers as the API sees them (no body yet).
  request head_request() const {
    const auto& h = head_->get();
    request r;
    r.method = std::string(h.method_string());
    r.target = std::string(h.target());
    r.headers.reserve(static_cast<std::size_t>(std::distance(h.begin(), h.end())));
    for (const auto& field : h) {
      std::string name(field.name_string());
      for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      r.headers.emplace_back(std::move(name), std::string(field.value()));
    }
    return r;
  }

  [[nodiscard]] bool expects_continue() const {
    return beast::iequals(head_->get()[http::field::expect], "100-continue") && !head_->is_done();
  }

  // Sends `100 Continue`, then `next`. A client that sent `Expect:
  // 100-continue` waits for it before it sends the body (curl does so for
  // bodies over 1 KiB).
  template <class Next>
  void send_continue(Next next) {
    // version_, not head_: the head parser has been moved into the body parser.
    auto cont =
        std::make_shared<http::response<http::empty_body>>(http::status::continue_, version_);
    http::async_write(
        stream_, *cont,
        [self = shared_from_this(), cont, next](beast::error_code ec, std::size_t) mutable {
          if (ec) return self->close();
          next();
        });
  }

  // After the headers: a streamed upload, or a body read whole (refused
  // at once, by its Content-Length, when over the limit).
  void on_header(beast::error_code ec) {
    if (ec) return on_read(ec);
    receiving_ = true;
    keep_alive_ = head_->get().keep_alive();
    version_ = head_->get().version();
    const auto& hooks = server_.options_.uploads;
    if (hooks.streams_body && hooks.begin_upload) {
      request probe;
      probe.method = std::string(head_->get().method_string());
      probe.target = std::string(head_->get().target());
      if (hooks.streams_body(probe)) {
        auto length = head_->content_length();
        if (length && hooks.upload_limit != 0 && *length > hooks.upload_limit) {
          return upload_too_large();
        }
        return begin_upload(head_request());
      }
    }
    auto length = head_->content_length();
    if (length && *length > server_.options_.body_limit) return on_read(http::error::body_limit);
    parser_.emplace(std::move(*head_));
    head_.reset();
    parser_->body_limit(server_.options_.body_limit);
    if (beast::iequals(parser_->get()[http::field::expect], "100-continue") &&
        !parser_->is_done()) {
      return send_continue([self = shared_from_this()] { self->read_body(); });
    }
    read_body();
  }

  // ---- streamed uploads ----

  void begin_upload(request head) {
    busy_ = true;
    net::post(server_.pool_, [self = shared_from_this(), head = std::move(head)] {
      auto start =
          std::make_shared<upload_start>(self->server_.options_.uploads.begin_upload(head));
      net::post(self->executor_, [self, start] {
        if (!start->sink) return self->reply_and_close(std::move(start->refused));
        self->sink_ = std::move(start->sink);
        bool wants_continue = self->expects_continue();
        self->upload_.emplace(std::move(*self->head_));
        self->head_.reset();
        auto limit = self->server_.options_.uploads.upload_limit;
        self->upload_->body_limit(limit == 0 ? std::numeric_limits<std::uint64_t>::max() : limit);
        self->piece_.resize(self->server_.options_.stream_piece);
        if (wants_continue) return self->send_continue([self] { self->read_piece(); });
        self->read_piece();
      });
    });
  }

  void read_piece() {
    upload_->get().body().data = piece_.data();
    upload_->get().body().size = piece_.size();
    if (upload_->is_done()) return on_piece({});  // an empty body
    stream_.expires_after(server_.options_.read_timeout);
    http::async_read(
        stream_, buffer_, *upload_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_piece(ec); });
  }

  void on_piece(beast::error_code ec) {
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      drop_sink();
      if (ec == http::error::body_limit) return upload_too_large();
      if (ec.category() == http::make_error_code(http::error::bad_method).category() &&
          ec != http::error::end_of_stream && ec != http::error::partial_message) {
        return reply_and_close(
            error_response(400, "bad_request", "malformed HTTP request: " + ec.message()));
      }
      return close();  // cut off, timed out or stopped: the upload is discarded
    }
    std::size_t n = piece_.size() - upload_->get().body().size;
    bool done = upload_->is_done();
    net::post(server_.pool_, [self = shared_from_this(), n, done] {
      std::optional<response> res;
      if (auto written = self->sink_->write(std::string_view(self->piece_.data(), n)); !written) {
        const auto& e = written.error();
        res = e.code() == errc::limit_exceeded
                  ? error_response(413, "payload_too_large", e.message())
                  : error_response(e);
      } else if (done) {
        res = self->sink_->finish();
      }
      if (res) self->sink_.reset();  // on a handler thread: aborting removes a file
      net::post(self->executor_, [self, done, res = std::move(res)]() mutable {
        if (res && !done) return self->reply_and_close(std::move(*res));
        if (res) {
          self->upload_.reset();
          self->receiving_ = false;
          return self->write(std::move(*res), false);
        }
        self->read_piece();
      });
    });
  }

  void upload_too_large() {
    auto limit = server_.options_.uploads.upload_limit;
    reply_and_close(error_response(413, "payload_too_large",
                                   "the upload is larger than " + std::to_string(limit) + " bytes",
                                   {{"limit", limit}}));
  }

  // Discards an unfinished upload off the socket thread (aborting removes
  // its temporary file).
  void drop_sink() {
    if (!sink_) return;
    net::post(server_.pool_, [sink = std::shared_ptr<body_sink>(std::move(sink_))] {});
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
    for (const auto& field : req) {
      std::string name(field.name_string());
      for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      r.headers.emplace_back(std::move(name), std::string(field.value()));
    }
    receiving_ = false;
    beast::error_code peer_ec;
    auto peer = stream_.socket().remote_endpoint(peer_ec);
    if (!peer_ec) r.remote = peer.address().to_string();
    busy_ = true;
    net::post(server_.pool_, [self = shared_from_this(), r = std::move(r)] {
      response res;
      try {
        res = self->server_.handler_(r);
      } catch (...) {
        res = error_response(500, "internal", "internal error");
      }
      net::post(self->executor_,
                [self, res = std::move(res)]() mutable { self->write(std::move(res), false); });
    });
  }

  void reply_and_close(response res) {
    add_security_headers(res, "", false);
    busy_ = true;
    keep_alive_ = false;
    write(std::move(res), true);
  }

  void write(response res, bool close_after) {
    close_after = close_after || !keep_alive_ || server_.stopping();
    if (res.stream) return write_stream(std::move(res), close_after);
    auto out = std::make_shared<http::response<http::string_body>>();
    out->version(version_);
    out->result(static_cast<unsigned>(res.status));
    out->set(http::field::server, "aise-server/" AISE_VERSION_STRING);
    if (!res.body.empty() || res.status != 304) {
      out->set(http::field::content_type, res.content_type);
    }
    for (auto& [name, value] : res.headers) out->set(name, value);
    if (stream_.is_tls()) out->set(http::field::strict_transport_security, hsts);
    out->body() = std::move(res.body);
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

  // ---- streamed responses ----

  struct download {
    http::response<http::buffer_body> message;
    std::optional<http::response_serializer<http::buffer_body>> serializer;
    std::shared_ptr<body_source> source;
    std::vector<char> buffer;
    std::uint64_t remaining = 0;
    bool close_after = false;
  };

  void write_stream(response res, bool close_after) {
    auto d = std::make_shared<download>();
    d->message.version(version_);
    d->message.result(static_cast<unsigned>(res.status));
    d->message.set(http::field::server, "aise-server/" AISE_VERSION_STRING);
    d->message.set(http::field::content_type, res.content_type);
    for (auto& [name, value] : res.headers) d->message.set(name, value);
    if (stream_.is_tls()) d->message.set(http::field::strict_transport_security, hsts);
    d->message.content_length(res.stream_size);
    d->message.keep_alive(!close_after);
    d->message.body().data = nullptr;
    d->message.body().more = true;
    d->source = std::move(res.stream);
    d->remaining = res.stream_size;
    d->close_after = close_after;
    d->buffer.resize(static_cast<std::size_t>(std::min<std::uint64_t>(
        server_.options_.stream_piece, std::max<std::uint64_t>(1, d->remaining))));
    d->serializer.emplace(d->message);
    stream_.expires_after(server_.options_.read_timeout);
    http::async_write_header(stream_, *d->serializer,
                             [self = shared_from_this(), d](beast::error_code ec, std::size_t) {
                               if (ec) return self->abort_stream(d);
                               self->next_chunk(d);
                             });
  }

  void next_chunk(const std::shared_ptr<download>& d) {
    net::post(server_.pool_, [self = shared_from_this(), d] {
      std::size_t want =
          static_cast<std::size_t>(std::min<std::uint64_t>(d->buffer.size(), d->remaining));
      result<std::size_t> got =
          want == 0 ? result<std::size_t>(std::size_t{0}) : d->source->read(d->buffer.data(), want);
      net::post(self->executor_, [self, d, got = std::move(got), want]() {
        if (!got || (*got == 0 && want > 0) || *got > want) return self->abort_stream(d);
        d->remaining -= *got;
        auto& body = d->message.body();
        body.data = *got == 0 ? nullptr : d->buffer.data();
        body.size = *got;
        body.more = d->remaining > 0;
        self->stream_.expires_after(self->server_.options_.read_timeout);
        http::async_write(self->stream_, *d->serializer,
                          [self, d](beast::error_code ec, std::size_t) {
                            if (ec == http::error::need_buffer) ec = {};
                            if (ec) return self->abort_stream(d);
                            if (!d->serializer->is_done()) return self->next_chunk(d);
                            self->busy_ = false;
                            if (d->close_after) return self->close();
                            self->read();
                          });
      });
    });
  }

  // The source failed or the client went away mid-body: the response
  // cannot be completed, so the connection goes (the client sees a body
  // shorter than its Content-Length).
  void abort_stream(const std::shared_ptr<download>& d) {
    busy_ = false;
    net::post(server_.pool_, [source = std::move(d->source)] {});  // closed off the socket thread
    beast::error_code ec;
    stream_.socket().close(ec);
  }

  // Half-closes, then reads (and drops) what the client still sends for a
  // moment, so that unread request bytes do not turn the close into a reset
  // that could destroy the response in flight.
  void close() {
    if (stream_.is_tls() && !tls_closed_) {
      // close_notify first, then the TCP half-close and drain below.
      tls_closed_ = true;
      stream_.expires_after(drain_timeout);
      stream_.async_shutdown([self = shared_from_this()](beast::error_code ec) {
        if (ec) {
          beast::error_code ignored;
          self->stream_.socket().close(ignored);
          return;
        }
        self->close();
      });
      return;
    }
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
  flex_stream stream_;
  bool tls_closed_ = false;
  std::uint64_t id_;
  net::any_io_executor executor_;  // stream_'s, kept: the stream may be handed to a ws session
  bool handed_off_ = false;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::empty_body>> head_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<http::request_parser<http::buffer_body>> upload_;
  std::unique_ptr<body_sink> sink_;
  std::vector<char> piece_;
  bool receiving_ = false;  // headers read, body not yet complete
  bool busy_ = false;
  bool keep_alive_ = true;
  unsigned version_ = 11;
  std::size_t drained_ = 0;
  std::array<char, 4096> discard_{};
};

namespace {

// TLS 1.2 or later with the configured certificate chain and key (PEM).
result<void> load_tls(std::optional<net::ssl::context>& tls, const http_server_options& o) {
  if (o.tls_cert_file.empty() && o.tls_key_file.empty()) return {};
  if (o.tls_cert_file.empty() || o.tls_key_file.empty()) {
    return fail(errc::invalid_argument, "TLS needs both a certificate file and a key file");
  }
  tls.emplace(net::ssl::context::tls_server);
  beast::error_code ec;
  tls->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                       net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                       net::ssl::context::no_tlsv1_1 | net::ssl::context::single_dh_use,
                   ec);
  if (!ec) tls->use_certificate_chain_file(o.tls_cert_file, ec);
  if (ec) {
    tls.reset();
    return fail(errc::invalid_argument,
                "cannot use TLS certificate '" + o.tls_cert_file + "': " + ec.message());
  }
  tls->use_private_key_file(o.tls_key_file, net::ssl::context::pem, ec);
  if (ec) {
    tls.reset();
    return fail(errc::invalid_argument,
                "cannot use TLS key '" + o.tls_key_file + "': " + ec.message());
  }
  return {};
}

}  // namespace

result<void> http_server::impl::start() {
  if (auto loaded = load_tls(tls_, options_); !loaded) return loaded;
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
