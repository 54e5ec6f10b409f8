#pragma once
// A raw rabbitmq-c client for tests: what libaise never does on purpose.
// Used by the RabbitMQ transport, task-queue and distributed tests.

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <chrono>
#include <cstdint>
#include <doctest/doctest.h>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace aise::test {

/// A raw rabbitmq-c connection for what libaise never does on purpose
/// (garbage into a queue, reading a dead-letter queue, counting messages).
class raw_connection {
 public:
  explicit raw_connection(const std::string& url) {
    amqp_connection_info info{};
    std::vector<char> buffer(url.begin(), url.end());
    buffer.push_back('\0');
    REQUIRE(amqp_parse_url(buffer.data(), &info) == AMQP_STATUS_OK);
    state_ = amqp_new_connection();
    amqp_socket_t* socket = amqp_tcp_socket_new(state_);
    REQUIRE(socket != nullptr);
    REQUIRE(amqp_socket_open(socket, info.host, info.port) == AMQP_STATUS_OK);
    REQUIRE(amqp_login(state_, info.vhost, 0, AMQP_DEFAULT_FRAME_SIZE, 0, AMQP_SASL_METHOD_PLAIN,
                       info.user, info.password)
                .reply_type == AMQP_RESPONSE_NORMAL);
    REQUIRE(amqp_channel_open(state_, 1) != nullptr);
  }
  ~raw_connection() {
    (void)amqp_channel_close(state_, 1, AMQP_REPLY_SUCCESS);
    (void)amqp_connection_close(state_, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(state_);
  }
  raw_connection(const raw_connection&) = delete;
  raw_connection& operator=(const raw_connection&) = delete;

  void publish(const std::string& exchange, const std::string& key, const std::string& body) {
    REQUIRE(amqp_basic_publish(state_, 1, amqp_cstring_bytes(exchange.c_str()),
                               amqp_cstring_bytes(key.c_str()), 0, 0, nullptr,
                               amqp_cstring_bytes(body.c_str())) == AMQP_STATUS_OK);
  }

  /// A message taken from `queue` (basic.get, acknowledged): body and text headers.
  struct got {
    std::string body;
    std::map<std::string, std::string> headers;
  };
  std::optional<got> get(const std::string& queue) {
    const auto reply = amqp_basic_get(state_, 1, amqp_cstring_bytes(queue.c_str()), 1);
    REQUIRE(reply.reply_type == AMQP_RESPONSE_NORMAL);
    if (reply.reply.id != AMQP_BASIC_GET_OK_METHOD) return std::nullopt;
    amqp_message_t m;
    REQUIRE(amqp_read_message(state_, 1, &m, 0).reply_type == AMQP_RESPONSE_NORMAL);
    got g;
    g.body.assign(static_cast<const char*>(m.body.bytes), m.body.len);
    if ((m.properties._flags & AMQP_BASIC_HEADERS_FLAG) != 0) {
      for (int i = 0; i < m.properties.headers.num_entries; ++i) {
        const auto& e = m.properties.headers.entries[i];
        if (e.value.kind == AMQP_FIELD_KIND_UTF8 || e.value.kind == AMQP_FIELD_KIND_BYTES) {
          g.headers[std::string(static_cast<const char*>(e.key.bytes), e.key.len)] = std::string(
              static_cast<const char*>(e.value.value.bytes.bytes), e.value.value.bytes.len);
        }
      }
    }
    amqp_destroy_message(&m);
    return g;
  }

  /// Waits (at most 15 s) for a message in `queue`.
  std::optional<got> wait_get(const std::string& queue) {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (std::chrono::steady_clock::now() < give_up) {
      if (auto g = get(queue)) return g;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return std::nullopt;
  }

  /// Ready messages in `queue` (passive declare).
  std::uint32_t ready_messages(const std::string& queue) {
    auto* ok = amqp_queue_declare(state_, 1, amqp_cstring_bytes(queue.c_str()), 1, 0, 0, 0,
                                  amqp_empty_table);
    REQUIRE(ok != nullptr);
    return ok->message_count;
  }

  /// Deletes the queues and exchanges of `prefix` a case made (best effort).
  void clean(const std::string& prefix, const std::vector<std::string>& capabilities) {
    for (const auto& q : {prefix + "dead", prefix + "outcomes"}) delete_queue(q);
    const std::string queues = prefix + "task.";
    for (const auto& c : capabilities) delete_queue(queues + c);
    for (const auto& x : {prefix + "dead", prefix + "tasks", prefix + "control"}) {
      (void)amqp_exchange_delete(state_, 1, amqp_cstring_bytes(x.c_str()), 0);
    }
  }

  void delete_queue(const std::string& q) {
    (void)amqp_queue_delete(state_, 1, amqp_cstring_bytes(q.c_str()), 0, 0);
  }

 private:
  amqp_connection_state_t state_ = nullptr;
};

}  // namespace aise::test
