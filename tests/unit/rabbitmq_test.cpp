// aise::rabbitmq on a real RabbitMQ: the transport conformance suite,
// unchanged, and what only this transport promises (errors at creation,
// undecodable messages, exclusivity across processes, reconnection).
// scripts/test.sh starts a private broker (scripts/services.sh) and sets
// AISE_TEST_RABBITMQ_URL. Every transport here uses a name prefix unique to
// this process, so parallel runs on one broker do not meet. The two
// reconnection cases drive the broker through scripts/services.sh (close
// connections, stop and start it), so they need the broker that script runs.

#include <aise/message.hpp>
#include <aise/rabbitmq.hpp>
#include <aise/transport.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <doctest/doctest.h>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "conformance/transport_suite.hpp"
#include "raw_amqp.hpp"

namespace {

using aise::conformance::code_of;
using aise::conformance::describe_result;
using aise::conformance::fresh_name;
using aise::conformance::inbox;
using aise::conformance::seq_message;
using aise::conformance::seqs_of;
using namespace std::chrono_literals;

std::string broker_url() {
  const char* url = std::getenv("AISE_TEST_RABBITMQ_URL");
  REQUIRE_MESSAGE(url != nullptr,
                  "AISE_TEST_RABBITMQ_URL is not set: run the tests through scripts/test.sh, "
                  "which starts RabbitMQ (or: eval \"$(scripts/services.sh start rabbitmq)\" "
                  "and export it)");
  return url;
}

/// "aise-test.<pid>.<random>.": names of this process only.
const std::string& process_prefix() {
  static const std::string prefix = [] {
    std::random_device rd;
    return "aise-test." + std::to_string(::getpid()) + "." + std::to_string(rd() % 1'000'000) + ".";
  }();
  return prefix;
}

aise::rabbitmq_options test_options() {
  aise::rabbitmq_options o;
  o.url = broker_url();
  o.prefix = process_prefix();
  o.connection_name = process_prefix() + "conn";
  o.queue_bound = 100;
  o.prefetch = 16;
  o.queue_expiry = 10min;  // queues a crashed test leaves behind go away
  o.reconnect_backoff = 50ms;
  o.reconnect_backoff_max = 500ms;
  return o;
}

std::shared_ptr<aise::rabbitmq_transport> make(const aise::rabbitmq_options& o) {
  auto t = aise::make_rabbitmq_transport(o);
  REQUIRE_MESSAGE(t.ok(), describe_result(t));
  return *t;
}

std::shared_ptr<aise::transport> make_test_transport() {
  return make(test_options());
}

/// Waits until `pred()` holds, at most `timeout`.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 10s) {
  const auto give_up = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= give_up) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

/// Retries `op` while it fails with `unavailable` (the connection being reopened).
template <class Op>
aise::result<void> while_unavailable(Op op) {
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  for (;;) {
    auto r = op();
    if (r.ok() || r.error().code() != aise::errc::unavailable ||
        std::chrono::steady_clock::now() >= give_up) {
      return r;
    }
    std::this_thread::sleep_for(20ms);
  }
}

/// Runs scripts/services.sh with `args`; returns its exit status.
int services(const std::string& args) {
  const std::string command = "bash '" AISE_SOURCE_DIR "/scripts/services.sh' " + args + " >&2";
  return std::system(command.c_str());  // NOLINT(cert-env33-c): a test helper
}

}  // namespace

AISE_TRANSPORT_CONFORMANCE_SUITE(rabbitmq, "rabbitmq", make_test_transport);

TEST_CASE("rabbitmq: a bad URL or an unreachable broker fails creation with a clear error") {
  auto o = test_options();
  o.connect_timeout = 2s;

  o.url = "http://127.0.0.1:1/";
  auto t = aise::make_rabbitmq_transport(o);
  CHECK(code_of(t) == "invalid_argument");

  o.url = "amqp://127.0.0.1:notaport/";
  t = aise::make_rabbitmq_transport(o);
  CHECK(code_of(t) == "invalid_argument");

  // Nobody listens on port 1: refused at once, and the password is not shown.
  o.url = "amqp://someone:s3cret@127.0.0.1:1/%2F";
  t = aise::make_rabbitmq_transport(o);
  REQUIRE(code_of(t) == "unavailable");
  CHECK_MESSAGE(t.error().message().find("127.0.0.1:1") != std::string::npos, t.error().message());
  CHECK_MESSAGE(t.error().message().find("s3cret") == std::string::npos, t.error().message());

  // The real broker with a wrong password.
  const std::string url = broker_url();
  const auto at = url.find('@');
  REQUIRE(at != std::string::npos);
  o.url = "amqp://guest:wrong-password" + url.substr(at);
  t = aise::make_rabbitmq_transport(o);
  REQUIRE(code_of(t) == "unavailable");
  CHECK_MESSAGE(t.error().message().find("wrong-password") == std::string::npos,
                t.error().message());

  o = test_options();
  o.prefetch = 0;
  CHECK(code_of(aise::make_rabbitmq_transport(o)) == "invalid_argument");
  o = test_options();
  o.queue_bound = 0;
  CHECK(code_of(aise::make_rabbitmq_transport(o)) == "invalid_argument");
}

TEST_CASE("rabbitmq: names longer than AMQP allows are invalid_argument") {
  auto t = make_test_transport();
  const std::string long_name(300, 'x');
  CHECK(code_of(t->bind(long_name, inbox::make()->sink())) == "invalid_argument");
  CHECK(code_of(t->subscribe(long_name, inbox::make()->sink())) == "invalid_argument");
  CHECK(code_of(t->send(seq_message(long_name, 0))) == "invalid_argument");
}

TEST_CASE("rabbitmq: an undecodable message is rejected and counted and consuming goes on") {
  const auto o = test_options();
  auto t = make(o);
  const std::string address = fresh_name("poison");
  auto box = inbox::make();
  auto bound = t->bind(address, box->sink());
  REQUIRE_MESSAGE(bound.ok(), describe_result(bound));

  aise::test::raw_connection raw(broker_url());
  raw.publish(o.prefix + "direct", address, "this is not JSON");
  raw.publish(o.prefix + "direct", address, R"({"json": "but not a message"})");
  auto r = t->send(seq_message(address, 7));
  REQUIRE_MESSAGE(r.ok(), describe_result(r));

  REQUIRE(box->wait_for(1));
  CHECK(seqs_of(box->messages()) == std::vector<std::int64_t>{7});
  CHECK(eventually([&] { return t->stats().undecodable == 2; }));
  // Rejected without requeueing: the queue is empty, nothing loops.
  CHECK(raw.ready_messages(o.prefix + "addr." + address) == 0);
  std::this_thread::sleep_for(100ms);
  CHECK(t->stats().undecodable == 2);
  CHECK(box->size() == 1);
}

TEST_CASE("rabbitmq: an address has one receiver across transports (processes)") {
  const auto o = test_options();
  auto a = make(o);
  auto b = make(o);
  const std::string address = fresh_name("shared");
  auto box = inbox::make();
  auto bound = a->bind(address, box->sink());
  REQUIRE_MESSAGE(bound.ok(), describe_result(bound));

  auto other = inbox::make();
  CHECK(code_of(b->bind(address, other->sink())) == "already_exists");

  // b sends to a's address through the broker.
  auto r = b->send(seq_message(address, 1));
  REQUIRE_MESSAGE(r.ok(), describe_result(r));
  REQUIRE(box->wait_for(1));

  // Once a let go (reset returned), the address is gone and b may bind it.
  bound->reset();
  box->mark_reset();
  CHECK(code_of(b->send(seq_message(address, 9))) == "not_found");
  auto rebound = b->bind(address, other->sink());
  REQUIRE_MESSAGE(rebound.ok(), describe_result(rebound));
  r = a->send(seq_message(address, 2));
  REQUIRE_MESSAGE(r.ok(), describe_result(r));
  REQUIRE(other->wait_for(1));
  CHECK(seqs_of(other->messages()) == std::vector<std::int64_t>{2});
  CHECK(box->calls_after_reset() == 0);
}

TEST_CASE("rabbitmq: topics match exactly even with wildcard characters") {
  auto t = make_test_transport();
  const std::string base = fresh_name("wild");
  auto star = inbox::make();
  auto hash = inbox::make();
  auto exact = inbox::make();
  auto s1 = t->subscribe(base + ".*", star->sink());
  auto s2 = t->subscribe(base + ".#", hash->sink());
  auto s3 = t->subscribe(base + ".x", exact->sink());
  REQUIRE(s1.ok());
  REQUIRE(s2.ok());
  REQUIRE(s3.ok());
  aise::message m;
  m.type = "test.news";
  m.topic = base + ".x";
  m.payload = {{"seq", 1}};
  REQUIRE(t->publish(m).ok());
  m.topic = base + ".*";
  m.payload = {{"seq", 2}};
  REQUIRE(t->publish(m).ok());
  REQUIRE(exact->wait_for(1));
  REQUIRE(star->wait_for(1));
  // A later message on a topic hash listens to shows the earlier ones had time to arrive.
  m.topic = base + ".#";
  m.payload = {{"seq", 3}};
  REQUIRE(t->publish(m).ok());
  REQUIRE(hash->wait_for(1));
  CHECK(seqs_of(exact->messages()) == std::vector<std::int64_t>{1});
  CHECK(seqs_of(star->messages()) == std::vector<std::int64_t>{2});
  CHECK(seqs_of(hash->messages()) == std::vector<std::int64_t>{3});
}

TEST_CASE(
    "rabbitmq: consuming resumes after the broker closed the connections and nothing "
    "sent is lost") {
  auto o = test_options();
  o.connection_name = process_prefix() + "reconnect-" + std::to_string(std::random_device{}());
  auto t = make(o);
  REQUIRE(t->stats().consumer_connected);

  // The receiver refuses until the connections are cut, so the first messages are
  // in flight (delivered, unacknowledged) when that happens.
  std::atomic<bool> open{false};
  auto box = inbox::make();
  auto accept = box->sink();
  const std::string address = fresh_name("reconnect");
  auto bound = t->bind(address, [&open, accept](aise::message&& m) -> aise::result<void> {
    if (!open.load()) return aise::error(aise::errc::mailbox_full, "closed for now");
    return accept(std::move(m));
  });
  REQUIRE_MESSAGE(bound.ok(), describe_result(bound));
  auto news = inbox::make();
  const std::string topic = fresh_name("reconnect-news");
  auto subscribed = t->subscribe(topic, news->sink());
  REQUIRE_MESSAGE(subscribed.ok(), describe_result(subscribed));

  for (int i = 0; i < 5; ++i) {
    auto r = t->send(seq_message(address, i));
    REQUIRE_MESSAGE(r.ok(), describe_result(r));
  }
  REQUIRE(eventually([&] { return t->stats().refusals > 0; }));

  REQUIRE(services("disconnect rabbitmq '" + o.connection_name + "'") == 0);
  REQUIRE_MESSAGE(eventually([&] { return t->stats().reconnects >= 1; }),
                  "the consuming connection was not reopened");
  open.store(true);
  REQUIRE(eventually([&] { return t->stats().consumer_connected; }));

  // Sending works again (the first call may find the publishing connection closed).
  for (int i = 5; i < 10; ++i) {
    auto r = while_unavailable([&] { return t->send(seq_message(address, i)); });
    REQUIRE_MESSAGE(r.ok(), describe_result(r));
  }
  REQUIRE_MESSAGE(box->wait_for(10), "delivered " << box->size() << " of 10");
  CHECK(seqs_of(box->messages()) == aise::conformance::seq_range(0, 10));

  // The subscription was declared again: a publication reaches it.
  aise::message m;
  m.type = "test.news";
  m.topic = topic;
  m.payload = {{"seq", 1}};
  CHECK(eventually(
      [&] {
        (void)t->publish(m);
        return news->wait_for(1, 50ms);
      },
      10s));
}

TEST_CASE("rabbitmq: a broker restart loses no confirmed message and consuming resumes") {
  auto o = test_options();
  o.connect_timeout = 2s;
  auto t = make(o);

  std::atomic<bool> open{false};
  auto box = inbox::make();
  auto accept = box->sink();
  const std::string address = fresh_name("restart");
  auto bound = t->bind(address, [&open, accept](aise::message&& m) -> aise::result<void> {
    if (!open.load()) return aise::error(aise::errc::mailbox_full, "closed for now");
    return accept(std::move(m));
  });
  REQUIRE_MESSAGE(bound.ok(), describe_result(bound));
  for (int i = 0; i < 5; ++i) {
    auto r = t->send(seq_message(address, i));
    REQUIRE_MESSAGE(r.ok(), describe_result(r));
  }
  REQUIRE(eventually([&] { return t->stats().refusals > 0; }));

  REQUIRE(services("stop rabbitmq") == 0);
  // Down: calls fail at once with unavailable, they do not hang.
  const auto started = std::chrono::steady_clock::now();
  const auto down = t->send(seq_message(address, 99));
  CHECK(code_of(down) == "unavailable");
  CHECK(code_of(t->bind(fresh_name("while-down"), inbox::make()->sink())) == "unavailable");
  CHECK(std::chrono::steady_clock::now() - started < 5s);
  CHECK(eventually([&] { return !t->stats().consumer_connected; }));

  REQUIRE(services("start rabbitmq") == 0);
  open.store(true);
  REQUIRE_MESSAGE(eventually([&] { return t->stats().consumer_connected; }, 20s),
                  "the consuming connection was not reopened");
  for (int i = 5; i < 10; ++i) {
    auto r = while_unavailable([&] { return t->send(seq_message(address, i)); });
    REQUIRE_MESSAGE(r.ok(), describe_result(r));
  }
  // The five confirmed before the restart were on disk; none was acknowledged.
  REQUIRE_MESSAGE(box->wait_for(10), "delivered " << box->size() << " of 10");
  CHECK(seqs_of(box->messages()) == aise::conformance::seq_range(0, 10));
}

TEST_CASE("rabbitmq: a sink may bind send and reset its own subscription from inside") {
  auto t = make_test_transport();
  const std::string first = fresh_name("reentrant-first");
  const std::string second = fresh_name("reentrant-second");
  auto second_box = inbox::make();

  struct state {
    std::mutex mutex;
    aise::subscription own;
    aise::subscription inner;
    std::string failure;
    std::atomic<int> calls{0};
  };
  auto s = std::make_shared<state>();
  auto bound = t->bind(first, [s, t, second, second_box](aise::message&&) -> aise::result<void> {
    s->calls.fetch_add(1);
    std::lock_guard lock(s->mutex);
    auto inner = t->bind(second, second_box->sink());
    if (!inner) {
      s->failure = "bind: " + inner.error().describe();
      return {};
    }
    s->inner = std::move(*inner);
    if (auto r = t->send(seq_message(second, 2)); !r) s->failure = "send: " + r.error().describe();
    s->own.reset();  // this very binding, from inside its sink
    return {};
  });
  REQUIRE_MESSAGE(bound.ok(), describe_result(bound));
  {
    std::lock_guard lock(s->mutex);
    s->own = std::move(*bound);
  }
  auto r = t->send(seq_message(first, 1));
  REQUIRE_MESSAGE(r.ok(), describe_result(r));
  REQUIRE(second_box->wait_for(1));
  CHECK(seqs_of(second_box->messages()) == std::vector<std::int64_t>{2});
  {
    std::lock_guard lock(s->mutex);
    CHECK_MESSAGE(s->failure.empty(), s->failure);
    CHECK_FALSE(s->own.active());
  }
  // The reset removed the first address: sends to it fail once the queue is gone.
  CHECK(eventually([&] { return code_of(t->send(seq_message(first, 3))) == "not_found"; }));
  CHECK(s->calls.load() == 1);
  std::lock_guard lock(s->mutex);
  s->inner.reset();
}

TEST_CASE("rabbitmq: a sink may drop the last reference to the transport") {
  auto holder = std::make_shared<std::shared_ptr<aise::transport>>(make_test_transport());
  std::weak_ptr<aise::transport> weak = *holder;
  auto go = std::make_shared<std::atomic<bool>>(false);
  auto dropped = std::make_shared<std::atomic<bool>>(false);
  const std::string address = fresh_name("last-reference");
  auto bound =
      (*holder)->bind(address, [holder, go, dropped](aise::message&&) -> aise::result<void> {
        // Refused until the test has stopped using the transport, then it is let go here.
        if (!go->load()) return aise::error(aise::errc::mailbox_full, "not yet");
        holder->reset();
        dropped->store(true);
        return {};
      });
  REQUIRE_MESSAGE(bound.ok(), describe_result(bound));
  const auto r = (*holder)->send(seq_message(address, 1));
  REQUIRE_MESSAGE(r.ok(), describe_result(r));
  go->store(true);
  CHECK(eventually([&] { return dropped->load() && weak.expired(); }));
  bound->reset();  // the transport is gone: nothing to do, nothing breaks
}
