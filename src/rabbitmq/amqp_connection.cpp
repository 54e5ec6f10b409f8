#include "rabbitmq/amqp_connection.hpp"

#include <amqp_tcp_socket.h>
#include <cstring>
#include <fmt/format.h>
#include <vector>

namespace aise::rabbitmq_detail {

namespace {

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<decltype(tv.tv_sec)>(ms.count() / 1000);
  tv.tv_usec = static_cast<decltype(tv.tv_usec)>((ms.count() % 1000) * 1000);
  return tv;
}

std::string reply_text(amqp_bytes_t text) {
  return text.len == 0 ? std::string("(no reason given)") : string_of(text);
}

}  // namespace

amqp_bytes_t bytes_of(std::string_view text) noexcept {
  amqp_bytes_t b;
  b.len = text.size();
  b.bytes = const_cast<char*>(text.data());  // NOLINT(cppcoreguidelines-pro-type-const-cast):
                                             // rabbitmq-c takes non-const views it does not write
  return b;
}

std::string string_of(amqp_bytes_t bytes) {
  if (bytes.len == 0 || bytes.bytes == nullptr) return {};
  return {static_cast<const char*>(bytes.bytes), bytes.len};
}

result<broker_address> parse_broker_url(const std::string& url) {
  if (url.rfind("amqp://", 0) != 0) {
    if (url.rfind("amqps://", 0) == 0) {
      return error(errc::invalid_argument,
                   "rabbitmq: amqps:// (TLS) is not supported yet; use amqp://");
    }
    return error(
        errc::invalid_argument,
        fmt::format("rabbitmq: the URL must look like amqp://user:password@host:port/vhost "
                    "(scheme given: '{}')",
                    url.substr(0, url.find(':'))));
  }
  std::vector<char> buffer(url.begin(), url.end());
  buffer.push_back('\0');
  amqp_connection_info info{};
  if (amqp_parse_url(buffer.data(), &info) != AMQP_STATUS_OK || info.host == nullptr ||
      *info.host == '\0') {
    return error(errc::invalid_argument,
                 "rabbitmq: malformed URL (expected amqp://user:password@host:port/vhost)");
  }
  broker_address a;
  a.host = info.host;
  a.port = info.port;
  a.user = info.user != nullptr ? info.user : "guest";
  a.password = info.password != nullptr ? info.password : "guest";
  a.vhost = info.vhost != nullptr && *info.vhost != '\0' ? info.vhost : "/";
  a.shown =
      fmt::format("amqp://{}@{}:{}/{}", a.user, a.host, a.port, a.vhost == "/" ? "%2F" : a.vhost);
  return a;
}

amqp_failure library_failure(int status, std::string_view what) {
  amqp_failure f;
  f.connection_lost = true;
  const char* text = amqp_error_string2(status);
  f.error = error(errc::unavailable,
                  fmt::format("rabbitmq: {}: {}", what, text != nullptr ? text : "unknown error"));
  return f;
}

result<std::unique_ptr<connection>> connection::open(const broker_address& address,
                                                     const connection_settings& settings) {
  std::unique_ptr<connection> c(
      new connection());  // NOLINT(cppcoreguidelines-owning-memory): private constructor
  c->state_ = amqp_new_connection();
  if (c->state_ == nullptr) return error(errc::unavailable, "rabbitmq: out of memory");
  amqp_socket_t* socket = amqp_tcp_socket_new(c->state_);
  if (socket == nullptr) {
    c->broken_ = true;
    return error(errc::unavailable, "rabbitmq: cannot create a TCP socket");
  }
  const auto where = fmt::format("cannot connect to {}", address.shown);
  auto tv = to_timeval(settings.connect_timeout);
  if (const int rc = amqp_socket_open_noblock(socket, address.host.c_str(), address.port, &tv);
      rc != AMQP_STATUS_OK) {
    c->broken_ = true;
    return library_failure(rc, where).error;
  }
  amqp_set_handshake_timeout(c->state_, &tv);
  auto rpc = to_timeval(settings.rpc_timeout);
  amqp_set_rpc_timeout(c->state_, &rpc);

  amqp_table_entry_t entries[1];
  entries[0].key = amqp_cstring_bytes("connection_name");
  entries[0].value.kind = AMQP_FIELD_KIND_UTF8;
  entries[0].value.value.bytes = bytes_of(settings.name);
  amqp_table_t properties;
  properties.num_entries = settings.name.empty() ? 0 : 1;
  properties.entries = entries;
  const amqp_rpc_reply_t login = amqp_login_with_properties(
      c->state_, address.vhost.c_str(), 0, AMQP_DEFAULT_FRAME_SIZE, settings.heartbeat_seconds,
      &properties, AMQP_SASL_METHOD_PLAIN, address.user.c_str(), address.password.c_str());
  if (login.reply_type != AMQP_RESPONSE_NORMAL) {
    c->broken_ = true;
    if (login.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
        login.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
      const auto* m = static_cast<amqp_connection_close_t*>(login.reply.decoded);
      return error(errc::unavailable, fmt::format("rabbitmq: {}: the broker refused: {} {}", where,
                                                  m->reply_code, reply_text(m->reply_text)));
    }
    if (login.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        login.library_error == AMQP_STATUS_CONNECTION_CLOSED) {
      return error(errc::unavailable,
                   fmt::format("rabbitmq: {}: the broker closed the connection during login "
                               "(wrong user or password, or unknown vhost '{}'?)",
                               where, address.vhost));
    }
    return c->rpc_failure(login, 0, where).error;
  }
  return c;
}

connection::~connection() {
  if (state_ == nullptr) return;
  if (!broken_) (void)amqp_connection_close(state_, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(state_);
}

int connection::fd() const noexcept {
  return amqp_get_sockfd(state_);
}

amqp_failure connection::last_rpc_failure(std::string_view what) {
  return rpc_failure(amqp_get_rpc_reply(state_), 0, what);
}

amqp_failure connection::rpc_failure(const amqp_rpc_reply_t& reply, amqp_channel_t channel,
                                     std::string_view what) {
  amqp_failure f;
  switch (reply.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      f.error = error(errc::internal, fmt::format("rabbitmq: {}: no error", what));
      return f;
    case AMQP_RESPONSE_NONE:
      f.connection_lost = true;
      f.error = error(errc::unavailable, fmt::format("rabbitmq: {}: no reply", what));
      break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      f = library_failure(reply.library_error, what);
      break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const auto* m = static_cast<amqp_connection_close_t*>(reply.reply.decoded);
        f.connection_lost = true;
        f.reply_code = m->reply_code;
        f.error = error(errc::unavailable,
                        fmt::format("rabbitmq: {}: the broker closed the connection: {} {}", what,
                                    m->reply_code, reply_text(m->reply_text)));
        confirm_connection_close();
      } else if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const auto* m = static_cast<amqp_channel_close_t*>(reply.reply.decoded);
        f.channel_closed = true;
        f.reply_code = m->reply_code;
        errc code = errc::unavailable;
        switch (m->reply_code) {
          case AMQP_NOT_FOUND:
            code = errc::not_found;
            break;
          case AMQP_ACCESS_REFUSED:
          case AMQP_RESOURCE_LOCKED:
            code = errc::already_exists;
            break;
          case AMQP_PRECONDITION_FAILED:
            code = errc::invalid_argument;
            break;
          default:
            break;
        }
        f.error = error(code, fmt::format("rabbitmq: {}: {} {}", what, m->reply_code,
                                          reply_text(m->reply_text)));
        if (channel != 0) confirm_channel_close(channel);
      } else {
        f.connection_lost = true;
        f.error = error(errc::unavailable,
                        fmt::format("rabbitmq: {}: unexpected method {:#x}", what, reply.reply.id));
      }
      break;
  }
  if (f.connection_lost) broken_ = true;
  return f;
}

void connection::confirm_channel_close(amqp_channel_t channel) noexcept {
  amqp_channel_close_ok_t ok{};
  if (amqp_send_method(state_, channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK) {
    broken_ = true;
  }
}

void connection::confirm_connection_close() noexcept {
  amqp_connection_close_ok_t ok{};
  (void)amqp_send_method(state_, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
  broken_ = true;
}

result<void> connection::open_channel(amqp_channel_t channel, std::string_view what) {
  if (amqp_channel_open(state_, channel) == nullptr) {
    return rpc_failure(amqp_get_rpc_reply(state_), channel, what).error;
  }
  return {};
}

result<void> connection::declare_direct_exchange(amqp_channel_t channel, const std::string& name) {
  amqp_exchange_declare(state_, channel, bytes_of(name), amqp_cstring_bytes("direct"), 0, 1, 0, 0,
                        amqp_empty_table);
  const amqp_rpc_reply_t reply = amqp_get_rpc_reply(state_);
  if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
    return rpc_failure(reply, channel, fmt::format("declaring the exchange '{}'", name)).error;
  }
  return {};
}

int connection::poll_frame(amqp_frame_t& frame) noexcept {
  timeval zero{};
  return amqp_simple_wait_frame_noblock(state_, &frame, &zero);
}

bool connection::has_buffered_frames() const noexcept {
  return amqp_frames_enqueued(state_) != 0 || amqp_data_in_buffer(state_) != 0;
}

}  // namespace aise::rabbitmq_detail
