#include "ws_session.hpp"

#include <aise/orchestrator.hpp>
#include <aise/version.hpp>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <deque>
#include <exception>
#include <nlohmann/json.hpp>
#include <utility>

#include "api.hpp"

namespace aise::server {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace websocket = boost::beast::websocket;
namespace net = boost::asio;
using json = nlohmann::json;

namespace {

constexpr std::uint16_t close_unauthorized = 4001;
constexpr std::uint16_t close_slow_consumer = 4008;
constexpr std::size_t max_project_length = 256;
constexpr std::size_t max_read_cache = 1024;

// Client input echoed back may be invalid UTF-8: replace, never throw.
std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string event_frame(const event& e) {
  return dump(json{
      {"type", "event"}, {"project", e.project}, {"sequence", e.sequence}, {"event", to_json(e)}});
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> percent_decode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      out += ' ';
    } else if (in[i] == '%') {
      if (i + 2 >= in.size()) return std::nullopt;
      int hi = hex_value(in[i + 1]);
      int lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += in[i];
    }
  }
  return out;
}

// The `access_token` query parameter of a target, if any (an empty or
// malformed one counts as given, so it is refused rather than ignored).
std::optional<std::string> query_token(std::string_view target) {
  auto qmark = target.find('?');
  if (qmark == std::string_view::npos) return std::nullopt;
  std::string_view query = target.substr(qmark + 1);
  while (!query.empty()) {
    auto amp = query.find('&');
    auto pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    auto eq = pair.find('=');
    if (pair.substr(0, eq) != "access_token") continue;
    if (eq == std::string_view::npos) return std::string{};
    return percent_decode(pair.substr(eq + 1)).value_or(std::string{});
  }
  return std::nullopt;
}

// The token of an `Authorization: Bearer` header; an Authorization header
// of another scheme gives an empty token (refused).
std::optional<std::string> header_token(const http::request<http::string_body>& req) {
  auto it = req.find(http::field::authorization);
  if (it == req.end()) return std::nullopt;
  std::string_view value(it->value().data(), it->value().size());
  constexpr std::string_view scheme = "bearer ";
  if (value.size() < scheme.size() ||
      !beast::iequals(beast::string_view(value.data(), scheme.size()), "bearer ")) {
    return std::string{};
  }
  value.remove_prefix(scheme.size());
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  return std::string(value);
}

}  // namespace

// A group of live events of one project (or the agent events of a fan-out
// round), shared by every session that receives it.
struct ws_batch {
  std::vector<std::shared_ptr<const ws_live_event>> events;
  std::size_t bytes = 0;
  // For a project's batch whose sequences follow one another: the frames
  // joined by newlines, so a live session takes the batch with one copy.
  bool contiguous = false;
  std::string joined;
};

// One client. Everything runs on the strand of its stream, except the
// blocking calls (store, authenticate), which run on the handler pool and
// post their result back, and `push`, called by the fan-out.
class ws_session : public std::enable_shared_from_this<ws_session> {
 public:
  ws_session(ws_hub& hub, std::uint64_t id, flex_stream stream,
             http::request<http::string_body> req)
      : hub_(hub),
        opt_(hub.options()),
        id_(id),
        executor_(stream.get_executor()),
        ws_(std::move(stream)),
        req_(std::move(req)),
        auth_timer_(executor_),
        close_timer_(executor_) {}

  ~ws_session() {
    unregister();
    hub_.gone(id_);
  }

  ws_session(const ws_session&) = delete;
  ws_session& operator=(const ws_session&) = delete;

  void run() {
    net::dispatch(executor_, [self = shared_from_this()] { self->authenticate_upgrade(); });
  }

  // Called by `ws_hub::stop`.
  void stop() {
    net::dispatch(executor_, [self = shared_from_this()] {
      if (self->phase_ == phase::open) {
        self->close(websocket::close_code::going_away, "server stopping");
      } else if (self->phase_ == phase::upgrading) {
        self->stop_requested_ = true;
      }
    });
  }

  void force_close() {
    net::dispatch(executor_, [self = shared_from_this()] {
      beast::error_code ec;
      beast::get_lowest_layer(self->ws_).socket().close(ec);
    });
  }

  // Called by the fan-out: queues a batch for the strand, or marks the
  // session as a slow consumer when its inbox is full.
  void push(const std::shared_ptr<const ws_batch>& batch) {
    bool post = false;
    {
      std::lock_guard lock(inbox_mutex_);
      if (dead_) return;
      if (inbox_messages_ + batch->events.size() > opt_.max_queued_messages ||
          inbox_bytes_ + batch->bytes > opt_.max_queued_bytes) {
        overflow_ = true;
      } else {
        inbox_.push_back(batch);
        inbox_messages_ += batch->events.size();
        inbox_bytes_ += batch->bytes;
      }
      if (!drain_posted_) post = drain_posted_ = true;
    }
    if (post) net::post(executor_, [self = shared_from_this()] { self->drain(); });
  }

 private:
  enum class phase { upgrading, open, done };
  enum class sub_state { checking, replaying, live };

  struct subscription {
    sub_state state = sub_state::checking;
    std::uint64_t generation = 0;
    std::uint64_t last = 0;  // highest sequence sent
    std::vector<std::shared_ptr<const ws_live_event>> held;
    bool round_progress = false;  // this log-reading round sent something
    bool hole_retry = false;      // the round was started by a hole after a replay
    bool waiting_room = false;    // the log read waits for the client to take queued messages
  };

  // A message to send; `keep` owns `text`.
  struct out_message {
    std::shared_ptr<const void> keep;
    const std::string* text = nullptr;
    std::size_t count = 1;  // messages (lines) in `text`
  };

  // ---- upgrade and authentication ----

  void authenticate_upgrade() {
    if (!opt_.access.authenticate) {
      authed_ = true;
      return handshake();
    }
    auto token = header_token(req_);
    if (!token) token = query_token(std::string_view(req_.target().data(), req_.target().size()));
    if (!token) return handshake();  // an `auth` message must follow
    authenticate(std::move(*token), [self = shared_from_this()](result<std::string> r) {
      if (!r) return self->refuse_upgrade(r.error().message());
      self->authed_ = true;
      self->subject_ = std::move(*r);
      self->handshake();
    });
  }

  // Runs `authenticate` on the pool, `done` back on the strand.
  template <class Done>
  void authenticate(std::string token, Done done) {
    net::post(hub_.pool(), [self = shared_from_this(), token = std::move(token),
                            done = std::move(done)]() mutable {
      result<std::string> r = fail(errc::invalid_argument, "an empty token");
      if (!token.empty()) {
        try {
          r = self->opt_.access.authenticate(token);
        } catch (const std::exception& e) {
          r = fail(errc::internal, std::string("authentication failed: ") + e.what());
        } catch (...) {
          r = fail(errc::internal, "authentication failed");
        }
      }
      net::post(self->executor_,
                [done = std::move(done), r = std::move(r)]() mutable { done(std::move(r)); });
    });
  }

  void refuse_upgrade(const std::string& why) {
    auto res = std::make_shared<http::response<http::string_body>>(http::status::unauthorized,
                                                                   req_.version());
    res->set(http::field::server, "aise-server/" AISE_VERSION_STRING);
    res->set(http::field::content_type, "application/json");
    res->set(http::field::www_authenticate, "Bearer");
    res->body() = error_response(401, "unauthorized", why).body;
    res->keep_alive(false);
    res->prepare_payload();
    auto& stream = beast::get_lowest_layer(ws_);
    stream.expires_after(opt_.handshake_timeout);
    http::async_write(stream, *res,
                      [self = shared_from_this(), res](beast::error_code, std::size_t) {
                        self->phase_ = phase::done;
                        beast::error_code ec;
                        beast::get_lowest_layer(self->ws_).socket().shutdown(
                            net::ip::tcp::socket::shutdown_send, ec);
                        beast::get_lowest_layer(self->ws_).socket().close(ec);
                      });
  }

  void handshake() {
    auto& stream = beast::get_lowest_layer(ws_);
    if (hub_.stopping() || stop_requested_) {
      phase_ = phase::done;
      beast::error_code ec;
      stream.socket().close(ec);
      return;
    }
    stream.expires_never();  // the websocket stream's own timeouts take over
    if (opt_.send_buffer_bytes > 0) {
      beast::error_code ec;
      stream.socket().set_option(
          net::socket_base::send_buffer_size(static_cast<int>(opt_.send_buffer_bytes)), ec);
    }
    websocket::stream_base::timeout timeouts{};
    timeouts.handshake_timeout = opt_.handshake_timeout;
    timeouts.idle_timeout = opt_.idle_timeout;
    timeouts.keep_alive_pings = true;
    ws_.set_option(timeouts);
    ws_.set_option(websocket::stream_base::decorator([](websocket::response_type& res) {
      res.set(http::field::server, "aise-server/" AISE_VERSION_STRING);
    }));
    ws_.read_message_max(opt_.max_message_size);
    ws_.text(true);
    ws_.auto_fragment(false);  // a frame of batched messages goes out in one write
    ws_.async_accept(req_, [self = shared_from_this()](beast::error_code ec) {
      if (ec) {
        self->phase_ = phase::done;
        return;
      }
      self->req_ = {};
      self->phase_ = phase::open;
      if (!self->authed_) self->arm_auth_deadline();
      self->read();
      if (self->stop_requested_ || self->hub_.stopping()) {
        self->close(websocket::close_code::going_away, "server stopping");
      }
    });
  }

  void arm_auth_deadline() {
    auth_timer_.expires_after(opt_.auth_timeout);
    auth_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->authed_) return;
      self->close(close_unauthorized, "no auth message in time");
    });
  }

  // ---- reading ----

  void read() {
    ws_.async_read(rbuf_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      self->on_read(ec);
    });
  }

  void on_read(beast::error_code ec) {
    if (ec) return finished();
    std::string text = beast::buffers_to_string(rbuf_.data());
    rbuf_.consume(rbuf_.size());
    if (!closing_) {
      if (!ws_.got_text()) {
        send_error(nullptr, "invalid_argument", "binary messages are not accepted");
      } else {
        handle(text);
      }
    }
    read();  // also while closing: the client's close frame ends the read
  }

  void handle(const std::string& text) {
    auto j = json::parse(text, nullptr, false);
    if (j.is_discarded()) return send_error(nullptr, "bad_json", "the message is not JSON");
    json id = nullptr;
    if (j.is_object() && j.contains("id")) id = j["id"];
    if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
      return send_error(id, "invalid_argument", "a message is an object with a string \"type\"");
    }
    const auto type = j["type"].get<std::string>();
    if (type == "auth") return on_auth(j, id);
    if (!authed_) {
      return send_error(id, "unauthorized", "send {\"type\": \"auth\", \"token\": ...} first");
    }
    if (type == "subscribe") return on_subscribe(j, id);
    if (type == "unsubscribe") return on_unsubscribe(j, id);
    if (type == "ping") return send(with_id({{"type", "pong"}}, id));
    send_error(id, "unknown_type", "unknown message type '" + type + "'", {{"type", type}});
  }

  static json with_id(json j, const json& id) {
    if (!id.is_null()) j["id"] = id;
    return j;
  }

  void on_auth(const json& j, const json& id) {
    if (!j.contains("token") || !j["token"].is_string()) {
      return send_error(id, "invalid_argument", "\"token\" must be a string", {{"field", "token"}});
    }
    if (authed_ || auth_pending_) {
      return send_error(id, "already_authenticated", "this connection is authenticated already");
    }
    auth_pending_ = true;
    authenticate(
        j["token"].get<std::string>(), [self = shared_from_this(), id](result<std::string> r) {
          self->auth_pending_ = false;
          if (self->closing_) return;
          if (!r) return self->close(close_unauthorized, "unauthorized");
          self->authed_ = true;
          self->subject_ = std::move(*r);
          self->auth_timer_.cancel();
          self->send(with_id({{"type", "authenticated"}, {"subject", self->subject_}}, id));
        });
  }

  void on_subscribe(const json& j, const json& id) {
    if (j.contains("agents")) {
      if (j.contains("project") || !j["agents"].is_boolean() || !j["agents"].get<bool>()) {
        return send_error(id, "invalid_argument",
                          "subscribe to agents with {\"type\": \"subscribe\", \"agents\": true}",
                          {{"field", "agents"}});
      }
      agents_ = true;
      hub_.set_agents(id_, shared_from_this(), true);
      return send(with_id({{"type", "subscribed"}, {"agents", true}}, id));
    }
    if (!j.contains("project") || !j["project"].is_string() ||
        j["project"].get_ref<const std::string&>().empty() ||
        j["project"].get_ref<const std::string&>().size() > max_project_length) {
      return send_error(id, "invalid_argument", "\"project\" must be a non-empty string",
                        {{"field", "project"}});
    }
    std::optional<std::uint64_t> after;
    if (j.contains("after") && !j["after"].is_null()) {
      if (!j["after"].is_number_unsigned()) {
        return send_error(id, "invalid_argument", "\"after\" must be a sequence (an integer >= 0)",
                          {{"field", "after"}});
      }
      after = j["after"].get<std::uint64_t>();
    }
    auto project = j["project"].get<std::string>();
    if (subs_.contains(project)) {
      return send_error(id, "already_subscribed",
                        "subscribed to '" + project + "' already (unsubscribe first)",
                        {{"project", project}});
    }
    if (subs_.size() >= opt_.max_subscriptions) {
      return send_error(id, "limit_exceeded",
                        "at most " + std::to_string(opt_.max_subscriptions) + " subscriptions",
                        {{"limit", opt_.max_subscriptions}});
    }
    auto& s = subs_[project];
    s.generation = ++generations_;
    check_project(project, s.generation, after, id);
  }

  // On the pool: the project exists, the subject may read it, and where a
  // live-only subscription starts. Then on the strand: register, replay.
  void check_project(const std::string& project, std::uint64_t generation,
                     std::optional<std::uint64_t> after, const json& id) {
    net::post(hub_.pool(), [self = shared_from_this(), project, generation, after, id] {
      auto& store = self->opt_.events->store();
      result<std::uint64_t> start = fail(errc::internal, "");
      auto p = store.get_project(project);
      if (!p) {
        start = p.error();
      } else if (!self->may_read(project)) {
        start = fail(errc::rejected, "");
      } else if (after) {
        start = *after;
      } else {
        start = store.last_sequence(project);
      }
      net::post(self->executor_, [self, project, generation, id, start = std::move(start)] {
        self->on_checked(project, generation, id, start);
      });
    });
  }

  void on_checked(const std::string& project, std::uint64_t generation, const json& id,
                  const result<std::uint64_t>& start) {
    auto it = subs_.find(project);
    if (closing_ || it == subs_.end() || it->second.generation != generation) return;
    if (!start) {
      subs_.erase(it);
      if (start.error().code() == errc::rejected) {
        return send_error(id, "forbidden", "not allowed to read project '" + project + "'",
                          {{"project", project}});
      }
      if (start.error().code() == errc::not_found) {
        return send_error(id, "not_found", "no project '" + project + "'", {{"project", project}});
      }
      return send_error(id, "unavailable", start.error().message(), {{"project", project}});
    }
    it->second.last = *start;
    // Live first, then the log: nothing falls between the two.
    hub_.add_project(project, id_, shared_from_this());
    send(with_id({{"type", "subscribed"}, {"project", project}, {"after", *start}}, id));
    start_replay(project, it->second, false);
  }

  void on_unsubscribe(const json& j, const json& id) {
    if (j.contains("agents")) {
      agents_ = false;
      hub_.set_agents(id_, shared_from_this(), false);
      return send(with_id({{"type", "unsubscribed"}, {"agents", true}}, id));
    }
    if (!j.contains("project") || !j["project"].is_string()) {
      return send_error(id, "invalid_argument", "\"project\" must be a string",
                        {{"field", "project"}});
    }
    auto project = j["project"].get<std::string>();
    auto it = subs_.find(project);
    if (it == subs_.end()) {
      return send_error(id, "not_found", "not subscribed to '" + project + "'",
                        {{"project", project}});
    }
    subs_.erase(it);
    hub_.remove_project(project, id_);
    send(with_id({{"type", "unsubscribed"}, {"project", project}}, id));
  }

  bool may_read(const std::string& project) const {
    if (!opt_.access.authenticate || !opt_.access.may_read) return true;
    try {
      return opt_.access.may_read(subject_, project);
    } catch (...) {
      return false;
    }
  }

  // ---- the event log ----

  void start_replay(const std::string& project, subscription& s, bool hole) {
    s.state = sub_state::replaying;
    s.round_progress = false;
    s.hole_retry = hole;
    read_log(project, s);
  }

  void read_log(const std::string& project, subscription& s) {
    s.waiting_room = !room();
    if (s.waiting_room) {
      waiting_.emplace_back(project, s.generation);  // resumed by on_write
      return;
    }
    net::post(hub_.pool(), [self = shared_from_this(), project, generation = s.generation,
                            after = s.last] {
      auto events = self->opt_.events->store().read_events(project, after, self->opt_.replay_page);
      net::post(self->executor_, [self, project, generation, events = std::move(events)] {
        self->on_log(project, generation, events);
      });
    });
  }

  void on_log(const std::string& project, std::uint64_t generation,
              const result<std::vector<event>>& events) {
    auto it = subs_.find(project);
    if (closing_ || it == subs_.end() || it->second.generation != generation) return;
    auto& s = it->second;
    if (!events) {
      subs_.erase(it);
      hub_.remove_project(project, id_);
      return send_error(nullptr, "unavailable",
                        "cannot read the event log: " + events.error().message() +
                            "; subscribe again with \"after\"",
                        {{"project", project}, {"after", s.last}});
    }
    for (const auto& e : *events) {
      if (e.sequence <= s.last) continue;
      auto text = std::make_shared<const std::string>(event_frame(e));
      if (!enqueue({text, text.get()})) return;
      s.last = e.sequence;
      s.round_progress = true;
    }
    if (events->size() >= opt_.replay_page) return read_log(project, s);
    // The end of the log: go live with what was held meanwhile. A hole that
    // stays after a round that found nothing new was dropped by retention.
    s.state = sub_state::live;
    const bool accept_gap = s.hole_retry && !s.round_progress;
    auto held = std::move(s.held);
    s.held.clear();
    for (std::size_t i = 0; i < held.size(); ++i) {
      const auto& ev = held[i];
      if (ev->sequence <= s.last) continue;
      if (ev->sequence != s.last + 1 && !accept_gap) {
        s.held.assign(held.begin() + static_cast<std::ptrdiff_t>(i), held.end());
        return start_replay(project, s, true);
      }
      if (!enqueue({ev, &ev->frame})) return;
      s.last = ev->sequence;
    }
  }

  // ---- live events ----

  void drain() {
    std::vector<std::shared_ptr<const ws_batch>> batches;
    bool overflow = false;
    {
      std::lock_guard lock(inbox_mutex_);
      batches.swap(inbox_);
      inbox_messages_ = 0;
      inbox_bytes_ = 0;
      drain_posted_ = false;
      overflow = overflow_;
    }
    if (phase_ != phase::open || closing_) return;
    if (overflow) return slow_consumer();
    for (const auto& batch : batches) {
      if (take_whole(batch)) continue;
      for (const auto& ev : batch->events) {
        on_live(ev);
        if (closing_) return;
      }
      if (closing_) return;
    }
  }

  // The common case, in one piece: a live subscription and a batch of its
  // project that starts right after what was sent.
  bool take_whole(const std::shared_ptr<const ws_batch>& batch) {
    if (!batch->contiguous || batch->events.empty()) return false;
    auto it = subs_.find(batch->events.front()->project);
    if (it == subs_.end() || it->second.state != sub_state::live ||
        batch->events.front()->sequence != it->second.last + 1) {
      return false;
    }
    if (enqueue({batch, &batch->joined, batch->events.size()})) {
      it->second.last = batch->events.back()->sequence;
    }
    return true;
  }

  void on_live(const std::shared_ptr<const ws_live_event>& ev) {
    auto it = subs_.find(ev->project);
    if (it == subs_.end()) {
      if (ev->agent && agents_ && may_read_cached(ev->project)) enqueue({ev, &ev->frame});
      return;
    }
    auto& s = it->second;
    switch (s.state) {
      case sub_state::checking:
        return;  // the log read that follows the check covers it
      case sub_state::replaying:
        if (s.held.size() >= opt_.max_queued_messages) {
          // Behind by that many live events: a client that does not even
          // take the log is a slow consumer; else read them from the log.
          if (s.waiting_room) return slow_consumer();
          s.held.clear();
        }
        s.held.push_back(ev);
        return;
      case sub_state::live:
        if (ev->sequence <= s.last) return;  // sent already (from the log, or as an agent event)
        if (ev->sequence != s.last + 1) {
          s.held.push_back(ev);
          return start_replay(ev->project, s, false);
        }
        if (enqueue({ev, &ev->frame})) s.last = ev->sequence;
        return;
    }
  }

  bool may_read_cached(const std::string& project) {
    if (!opt_.access.authenticate || !opt_.access.may_read) return true;
    auto it = read_cache_.find(project);
    if (it != read_cache_.end()) return it->second;
    if (read_cache_.size() >= max_read_cache) read_cache_.clear();
    bool ok = may_read(project);
    read_cache_.emplace(project, ok);
    return ok;
  }

  // ---- writing ----

  void send(const json& j) {
    auto text = std::make_shared<const std::string>(dump(j));
    enqueue({text, text.get()});
  }

  void send_error(const json& id, std::string_view code, std::string_view message,
                  json details = nullptr) {
    send(with_id(
        {{"type", "error"},
         {"error", {{"code", code}, {"message", message}, {"details", std::move(details)}}}},
        id));
  }

  [[nodiscard]] bool room() const {
    return queued_messages_ < opt_.max_queued_messages / 2 &&
           queue_bytes_ < opt_.max_queued_bytes / 2;
  }

  bool enqueue(out_message m) {
    if (closing_) return false;
    if (queued_messages_ + m.count > opt_.max_queued_messages ||
        queue_bytes_ + m.text->size() > opt_.max_queued_bytes) {
      slow_consumer();
      return false;
    }
    queue_bytes_ += m.text->size();
    queued_messages_ += m.count;
    queue_.push_back(std::move(m));
    write();
    return true;
  }

  // Queued messages go out together, one JSON object per line, in frames of
  // at most max_frame_bytes (a longer message, or a joined batch, goes alone), copied into one
  // buffer (cheaper for Beast than a long gather list).
  void write() {
    if (writing_ || queue_.empty() || closing_) return;
    frame_.clear();
    while (!queue_.empty()) {
      auto& m = queue_.front();
      if (!frame_.empty() && frame_.size() + 1 + m.text->size() > opt_.max_frame_bytes) break;
      if (!frame_.empty()) frame_ += '\n';
      frame_ += *m.text;
      queue_bytes_ -= m.text->size();
      queued_messages_ -= m.count;
      queue_.pop_front();
    }
    writing_ = true;
    ws_.async_write(
        net::buffer(frame_),
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_write(ec); });
  }

  void on_write(beast::error_code ec) {
    writing_ = false;
    if (ec || closing_) return;  // the read ends with the same error and finishes
    if (room() && !waiting_.empty()) {
      auto waiting = std::move(waiting_);
      waiting_.clear();
      for (auto& [project, generation] : waiting) {
        auto it = subs_.find(project);
        if (it != subs_.end() && it->second.generation == generation) read_log(project, it->second);
      }
    }
    write();
  }

  // ---- closing ----

  void slow_consumer() {
    close(close_slow_consumer, "slow consumer: more than " +
                                   std::to_string(opt_.max_queued_messages) + " messages or " +
                                   std::to_string(opt_.max_queued_bytes) + " bytes queued");
  }

  // Drops every buffer and registration, then closes with `code`. The
  // close frame waits for a write in progress; the socket is closed anyway
  // after handshake_timeout.
  void close(websocket::close_code code, std::string reason) {
    close(static_cast<std::uint16_t>(code), std::move(reason));
  }

  void close(std::uint16_t code, std::string reason) {
    if (closing_ || phase_ != phase::open) return;
    closing_ = true;
    drop_everything();
    close_timer_.expires_after(opt_.handshake_timeout);
    close_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec) return;
      beast::error_code ignored;
      beast::get_lowest_layer(self->ws_).socket().close(ignored);
    });
    if (reason.size() > 120) reason.resize(120);
    ws_.async_close(
        websocket::close_reason(static_cast<websocket::close_code>(code), reason),
        [self = shared_from_this()](beast::error_code) { self->close_timer_.cancel(); });
  }

  void finished() {
    phase_ = phase::done;
    closing_ = true;
    drop_everything();
    close_timer_.cancel();
    beast::error_code ec;
    beast::get_lowest_layer(ws_).socket().close(ec);
  }

  void drop_everything() {
    {
      std::lock_guard lock(inbox_mutex_);
      dead_ = true;
      inbox_.clear();
      inbox_messages_ = 0;
      inbox_bytes_ = 0;
    }
    auth_timer_.cancel();
    queue_.clear();
    queue_bytes_ = 0;
    queued_messages_ = 0;
    waiting_.clear();
    unregister();
    subs_.clear();
    read_cache_.clear();
  }

  void unregister() {
    for (const auto& [project, s] : subs_) hub_.remove_project(project, id_);
    if (agents_) hub_.set_agents(id_, nullptr, false);
    agents_ = false;
  }

  ws_hub& hub_;
  const ws_options& opt_;
  std::uint64_t id_;
  net::any_io_executor executor_;
  websocket::stream<flex_stream> ws_;
  http::request<http::string_body> req_;
  net::steady_timer auth_timer_;
  net::steady_timer close_timer_;
  beast::flat_buffer rbuf_;

  phase phase_ = phase::upgrading;
  bool stop_requested_ = false;
  bool closing_ = false;
  bool authed_ = false;
  bool auth_pending_ = false;
  std::string subject_;
  bool agents_ = false;
  std::unordered_map<std::string, bool> read_cache_;
  std::map<std::string, subscription> subs_;
  std::uint64_t generations_ = 0;
  std::vector<std::pair<std::string, std::uint64_t>> waiting_;

  std::deque<out_message> queue_;
  std::size_t queue_bytes_ = 0;
  std::size_t queued_messages_ = 0;
  std::string frame_;  // being written
  bool writing_ = false;

  std::mutex inbox_mutex_;
  std::vector<std::shared_ptr<const ws_batch>> inbox_;
  std::size_t inbox_messages_ = 0;
  std::size_t inbox_bytes_ = 0;
  bool drain_posted_ = false;
  bool overflow_ = false;
  bool dead_ = false;
};

// ---- the hub ----

ws_hub::ws_hub(ws_options options, net::io_context& io, net::thread_pool& pool)
    : options_(std::move(options)), io_(io), pool_(pool) {}

ws_hub::~ws_hub() {
  stop();
}

void ws_hub::start() {
  if (options_.events == nullptr) return;
  auto key = options_.events->subscribe([this](const event& e) { on_event(e); });
  std::lock_guard lock(mutex_);
  listener_ = key;
}

bool ws_hub::stopping() {
  std::lock_guard lock(mutex_);
  return stopping_;
}

void ws_hub::accept(flex_stream stream, http::request<http::string_body> req) {
  std::shared_ptr<ws_session> s;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      beast::error_code ec;
      stream.socket().close(ec);
      return;
    }
    auto id = next_id_++;
    s = std::make_shared<ws_session>(*this, id, std::move(stream), std::move(req));
    sessions_.emplace(id, s);
    clients_.fetch_add(1);
  }
  s->run();
}

void ws_hub::stop() {
  std::vector<std::shared_ptr<ws_session>> live;
  std::optional<std::size_t> listener;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
    listener = listener_;
    listener_.reset();
    for (auto& [id, weak] : sessions_) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
  }
  // Outside the lock: unsubscribe waits for a listener call in progress.
  if (listener) options_.events->unsubscribe(*listener);
  for (auto& s : live) s->stop();
}

bool ws_hub::wait(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return sessions_.empty(); });
}

void ws_hub::close_all() {
  std::vector<std::shared_ptr<ws_session>> live;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, weak] : sessions_) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
  }
  for (auto& s : live) s->force_close();
}

void ws_hub::add_project(const std::string& project, std::uint64_t id,
                         const std::shared_ptr<ws_session>& s) {
  std::lock_guard lock(mutex_);
  by_project_[project][id] = s;
}

void ws_hub::remove_project(const std::string& project, std::uint64_t id) {
  std::lock_guard lock(mutex_);
  auto it = by_project_.find(project);
  if (it == by_project_.end()) return;
  it->second.erase(id);
  if (it->second.empty()) by_project_.erase(it);
}

void ws_hub::set_agents(std::uint64_t id, const std::shared_ptr<ws_session>& s, bool on) {
  std::lock_guard lock(mutex_);
  if (on) {
    agents_[id] = s;
  } else {
    agents_.erase(id);
  }
}

void ws_hub::gone(std::uint64_t id) {
  std::lock_guard lock(mutex_);
  sessions_.erase(id);
  clients_.fetch_sub(1);
  changed_.notify_all();
}

// The orchestrator's listener: copies the event into the backlog and
// returns; the fan-out runs on the socket threads.
void ws_hub::on_event(const event& e) {
  std::lock_guard lock(backlog_mutex_);
  if (backlog_.size() >= options_.max_fanout_backlog) return;  // the sessions read it from the log
  backlog_.push_back(e);
  if (!fan_out_posted_) {
    fan_out_posted_ = true;
    net::post(io_, [this] { fan_out(); });
  }
}

// One fan-out job at a time (fan_out_posted_ stays set while it runs), so
// batches reach the sessions in sequence order whatever the socket threads.
void ws_hub::fan_out() {
  for (;;) {
    std::vector<event> events;
    {
      std::lock_guard lock(backlog_mutex_);
      if (backlog_.empty()) {
        fan_out_posted_ = false;
        return;
      }
      events.swap(backlog_);
    }
    fan_out(std::move(events));
  }
}

void ws_hub::fan_out(std::vector<event> events) {
  // Who listens, per project of this round (a session registering after
  // this reads these events from the log).
  std::unordered_map<std::string, std::vector<std::shared_ptr<ws_session>>> listeners;
  std::vector<std::shared_ptr<ws_session>> agent_listeners;
  {
    std::lock_guard lock(mutex_);
    for (const auto& e : events) {
      if (listeners.contains(e.project)) continue;
      auto& list = listeners[e.project];
      auto it = by_project_.find(e.project);
      if (it == by_project_.end()) continue;
      list.reserve(it->second.size());
      for (auto& [id, weak] : it->second) {
        if (auto s = weak.lock()) list.push_back(std::move(s));
      }
    }
    for (auto& [id, weak] : agents_) {
      if (auto s = weak.lock()) agent_listeners.push_back(std::move(s));
    }
  }
  // Serialize each event once; group by project, keeping the order.
  std::unordered_map<std::string, std::shared_ptr<ws_batch>> batches;
  auto agent_batch = std::make_shared<ws_batch>();
  for (const auto& e : events) {
    const bool agent = e.type.starts_with("agent.");
    const bool project_listened = !listeners[e.project].empty();
    if (!project_listened && !(agent && !agent_listeners.empty())) continue;
    auto ev = std::make_shared<ws_live_event>();
    ev->project = e.project;
    ev->sequence = e.sequence;
    ev->agent = agent;
    ev->frame = event_frame(e);
    if (project_listened) {
      auto& b = batches[e.project];
      if (!b) b = std::make_shared<ws_batch>();
      b->bytes += ev->frame.size();
      b->events.push_back(ev);
    }
    if (agent && !agent_listeners.empty()) {
      agent_batch->bytes += ev->frame.size();
      agent_batch->events.push_back(std::move(ev));
    }
  }
  for (auto& [project, batch] : batches) {
    batch->contiguous = true;
    batch->joined.reserve(batch->bytes + batch->events.size());
    for (std::size_t i = 0; i < batch->events.size(); ++i) {
      if (i > 0) {
        batch->joined += '\n';
        if (batch->events[i]->sequence != batch->events[i - 1]->sequence + 1) {
          batch->contiguous = false;
        }
      }
      batch->joined += batch->events[i]->frame;
    }
    if (!batch->contiguous) batch->joined.clear();
    std::shared_ptr<const ws_batch> shared = std::move(batch);
    for (auto& s : listeners[project]) s->push(shared);
  }
  if (!agent_batch->events.empty()) {
    std::shared_ptr<const ws_batch> shared = std::move(agent_batch);
    for (auto& s : agent_listeners) s->push(shared);
  }
  // The last reference of a session may go here: `gone` takes mutex_, not held now.
  listeners.clear();
  agent_listeners.clear();
}

}  // namespace aise::server
