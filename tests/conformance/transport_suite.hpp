#pragma once
/// @file
/// The transport conformance suite: the doctest cases every `aise::transport`
/// must pass unchanged, the in-process one as well as RabbitMQ.
///
/// Instantiate it once per transport, at namespace scope of a test source:
///
///     AISE_TRANSPORT_CONFORMANCE_SUITE(inproc, "inproc", aise::make_inproc_transport)
///
/// `id` is a C++ identifier unique within the executable, `label` a string
/// literal that prefixes the test names, and the rest a factory callable as
/// `factory()` that returns a fresh `std::shared_ptr<aise::transport>` for
/// each test case. Several instantiations may live in one executable.
/// `AISE_TRANSPORT_CONFORMANCE_SUITE_BASIC` holds the cases that use the
/// transport alone; `AISE_TRANSPORT_CONFORMANCE_SUITE_RUNTIME` the ones that
/// run `aise::runtime` on top of it; the full macro is both.
///
/// Delivery may be asynchronous (a broker in between), so no case assumes a
/// sink ran before `send` returned: each waits for a condition with a
/// deadline (`monitor::wait_until`), never by sleeping. Addresses and topics
/// are fresh per test and per run (`fresh_name`), so a broker that keeps
/// queues between runs cannot mix them up. Sinks keep their state alive by
/// `shared_ptr`, so a late delivery after a failed assertion stays harmless.

#include <aise/agent.hpp>
#include <aise/error.hpp>
#include <aise/message.hpp>
#include <aise/runtime.hpp>
#include <aise/transport.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <doctest/doctest.h>
#include <functional>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace aise::conformance {

/// Makes a fresh transport for one test case.
using transport_factory = std::function<std::shared_ptr<transport>()>;

/// How long a test waits for anything before it fails.
inline constexpr std::chrono::seconds default_deadline{10};

/// A mutex and a condition variable guarding some test state: change the
/// state in `update`, wait for a condition on it with `wait_until`.
class monitor {
 public:
  /// Runs `change` under the lock, then wakes the waiters.
  template <class F>
  void update(F&& change) {
    {
      std::lock_guard lock(mutex_);
      std::forward<F>(change)();
    }
    changed_.notify_all();
  }

  /// Runs `look` under the lock and returns what it returns.
  template <class F>
  auto read(F&& look) const -> decltype(look()) {
    std::lock_guard lock(mutex_);
    return std::forward<F>(look)();
  }

  /// Waits until `pred()` (called under the lock) holds or `timeout` passed;
  /// returns the last value of `pred()`.
  template <class Pred>
  [[nodiscard]] bool wait_until(Pred pred, std::chrono::nanoseconds timeout = default_deadline) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, std::move(pred));
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
};

/// A name unique in this process and, with high probability, across runs:
/// "conformance.<random run tag>.<counter>.<what>".
inline std::string fresh_name(std::string_view what) {
  static const std::string run_tag = [] {
    std::random_device rd;
    const std::uint64_t bits =
        (std::uint64_t{rd()} << 32) ^ std::uint64_t{rd()} ^
        static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    char text[16];
    const auto end = std::to_chars(text, text + sizeof text, bits, 16).ptr;
    return std::string(text, end);
  }();
  static std::atomic<std::uint64_t> counter{0};
  std::string name = "conformance.";
  name.append(run_tag).append(".").append(std::to_string(counter.fetch_add(1) + 1));
  name.append(".").append(what);
  return name;
}

/// "ok" or the error code's name, for readable assertions.
template <class T>
std::string code_of(const result<T>& r) {
  return r.ok() ? std::string("ok") : std::string(to_string(r.error().code()));
}

/// "ok" or "code: message".
template <class T>
std::string describe_result(const result<T>& r) {
  return r.ok() ? std::string("ok") : r.error().describe();
}

/// The integer `payload["seq"]`, or -1 when the payload has none.
inline std::int64_t seq_of(const message& m) {
  if (!m.payload.is_object()) return -1;
  const auto it = m.payload.find("seq");
  if (it == m.payload.end() || !it->is_number_integer()) return -1;
  return it->get<std::int64_t>();
}

/// A message to `recipient` carrying `{"seq": seq}`.
inline message seq_message(const std::string& recipient, std::int64_t seq) {
  message m;
  m.type = "conformance.seq";
  m.sender = "conformance.sender";
  m.recipient = recipient;
  m.payload = {{"seq", seq}};
  return m;
}

/// Sends `m`, retrying while the receiver pushes back with `mailbox_full`
/// (what a well-behaved sender does) until `default_deadline`. Cases that
/// do not test back-pressure use it, so that a transport with a bounded
/// queue in front of a fast sink cannot fail them by filling up briefly.
inline result<void> send_patiently(transport& t, const message& m) {
  const auto give_up = std::chrono::steady_clock::now() + default_deadline;
  for (;;) {
    result<void> r = t.send(m);
    if (r.ok() || r.error().code() != errc::mailbox_full ||
        std::chrono::steady_clock::now() >= give_up) {
      return r;
    }
    std::this_thread::yield();
  }
}

/// A receiver that accepts and keeps every message, and notices calls made
/// after its subscription was reset (`mark_reset` right after `reset()`).
class inbox : public std::enable_shared_from_this<inbox> {
 public:
  static std::shared_ptr<inbox> make() { return std::make_shared<inbox>(); }

  /// A sink that stores into this inbox (and keeps it alive).
  message_sink sink() {
    return [self = shared_from_this()](message&& m) -> result<void> {
      if (self->reset_returned_.load()) self->late_calls_.fetch_add(1);
      self->mon_.update([&] { self->got_.push_back(std::move(m)); });
      return {};
    };
  }

  /// Records that the subscription feeding this inbox was reset and the
  /// reset returned: every later sink call is a contract violation.
  void mark_reset() noexcept { reset_returned_.store(true); }

  /// Waits until at least `n` messages arrived.
  [[nodiscard]] bool wait_for(std::size_t n, std::chrono::nanoseconds timeout = default_deadline) {
    return mon_.wait_until([&] { return got_.size() >= n; }, timeout);
  }

  [[nodiscard]] std::size_t size() const {
    return mon_.read([&] { return got_.size(); });
  }
  [[nodiscard]] std::vector<message> messages() const {
    return mon_.read([&] { return got_; });
  }
  /// Sink calls after `mark_reset`; must stay 0.
  [[nodiscard]] int calls_after_reset() const noexcept { return late_calls_.load(); }

 private:
  monitor mon_;
  std::vector<message> got_;  // guarded by mon_
  std::atomic<bool> reset_returned_{false};
  std::atomic<int> late_calls_{0};
};

/// Sequence numbers of `messages`, in arrival order.
inline std::vector<std::int64_t> seqs_of(const std::vector<message>& messages) {
  std::vector<std::int64_t> seqs;
  seqs.reserve(messages.size());
  for (const auto& m : messages) seqs.push_back(seq_of(m));
  return seqs;
}

/// `first, first + 1, ..., last - 1`.
inline std::vector<std::int64_t> seq_range(std::int64_t first, std::int64_t last) {
  std::vector<std::int64_t> seqs;
  for (std::int64_t i = first; i < last; ++i) seqs.push_back(i);
  return seqs;
}

/// A message with every field set to something a careless encoding would
/// lose: ids beyond 2^53, Unicode, quotes, empty strings, nested JSON, a
/// payload of a few hundred kilobytes (several AMQP frames), a null payload.
inline message sample_message(const std::string& recipient, int i) {
  message m;
  m.id = 0xfedc'ba98'7654'0000ULL + static_cast<std::uint64_t>(i);
  m.type = "conformance.sample";
  m.sender = "conformance.sender";
  m.recipient = recipient;
  m.correlation_id = 0x8000'0000'0000'0000ULL + static_cast<std::uint64_t>(i);
  m.reply_to = "conformance.reply-to";
  // Whole seconds (2026-01-01T00:00:00Z + i), so any sane time encoding keeps it exactly.
  m.created_at = time_point{std::chrono::seconds(1'767'225'600 + i)};
  m.headers = {{"seq", std::to_string(i)}, {"empty", ""}, {"unicode", "gr\u00fc\u00dfe \u2713"}};
  m.payload = {{"seq", i},
               {"text", "h\u00e9llo \"quoted\" \\ back\nslash \u2713"},
               {"list", {1, -2.5, true, nullptr, "x"}},
               {"nested", {{"a", {{"b", "c"}}}, {"empty", nlohmann::json::object()}}},
               {"big", std::uint64_t{18'446'744'073'709'551'557ULL}}};
  switch (i) {
    case 0:
      m.payload["blob"] = std::string(300'000, 'x');
      break;
    case 1:
      m.payload = nullptr;
      break;
    case 2:
      m.payload = "just a string";
      break;
    case 3:
      m.headers.clear();
      break;
    default:
      break;
  }
  return m;
}

// ---------------------------------------------------------------------------
// (a) delivery
// ---------------------------------------------------------------------------

/// Every message sent arrives once, in order, with every field intact.
inline void check_delivery(const transport_factory& make) {
  auto t = make();
  REQUIRE(t != nullptr);
  CHECK_FALSE(t->name().empty());

  const std::string address = fresh_name("delivery");
  auto box = inbox::make();
  auto bound = t->bind(address, box->sink());
  REQUIRE_MESSAGE(bound.ok(), describe_result(bound));

  constexpr int n = 100;
  std::vector<message> sent;
  for (int i = 0; i < n; ++i) {
    sent.push_back(sample_message(address, i));
    const auto r = send_patiently(*t, sent.back());
    REQUIRE_MESSAGE(r.ok(), "send #" << i << ": " << describe_result(r));
  }
  REQUIRE_MESSAGE(box->wait_for(n), "delivered " << box->size() << " of " << n);

  const auto got = box->messages();
  CHECK(got.size() == static_cast<std::size_t>(n));
  for (std::size_t k = 0; k < got.size() && k < sent.size(); ++k) {
    // One sender, one address: arrival order is send order.
    const message& g = got[k];
    const message& s = sent[k];
    INFO("message #" << k);
    CHECK(g.correlation_id == s.correlation_id);
    CHECK(g.id == s.id);
    CHECK(g.type == s.type);
    CHECK(g.sender == s.sender);
    CHECK(g.recipient == s.recipient);
    CHECK(g.topic.empty());
    CHECK(g.reply_to == s.reply_to);
    CHECK((g.created_at == s.created_at));
    CHECK((g.headers == s.headers));
    CHECK(g.payload == s.payload);
  }
}

// ---------------------------------------------------------------------------
// (b) per-sender ordering
// ---------------------------------------------------------------------------

/// Four threads send 2,000 messages each to one address; each thread's
/// messages arrive in its send order, none lost or repeated.
inline void check_per_sender_ordering(const transport_factory& make) {
  constexpr int senders = 4;
  constexpr int per_sender = 2000;
  auto t = make();
  REQUIRE(t != nullptr);
  const std::string address = fresh_name("ordering");
  auto box = inbox::make();
  auto bound = t->bind(address, box->sink());
  REQUIRE_MESSAGE(bound.ok(), describe_result(bound));

  std::atomic<int> failures{0};
  std::mutex first_failure_mutex;
  std::string first_failure;
  std::latch start(senders);
  {
    std::vector<std::jthread> threads;
    threads.reserve(senders);
    for (int k = 0; k < senders; ++k) {
      threads.emplace_back([&, k] {
        start.arrive_and_wait();
        for (int i = 0; i < per_sender; ++i) {
          message m;
          m.type = "conformance.seq";
          m.sender = "conformance.sender-" + std::to_string(k);
          m.recipient = address;
          m.payload = {{"sender", k}, {"seq", i}};
          const auto r = send_patiently(*t, m);
          if (!r.ok() && failures.fetch_add(1) == 0) {
            std::lock_guard lock(first_failure_mutex);
            first_failure = describe_result(r);
          }
        }
      });
    }
  }
  CHECK_MESSAGE(failures.load() == 0, "first failed send: " << first_failure);

  constexpr std::size_t total = std::size_t{senders} * per_sender;
  REQUIRE_MESSAGE(box->wait_for(total), "delivered " << box->size() << " of " << total);
  const auto got = box->messages();
  CHECK(got.size() == total);

  std::vector<std::int64_t> expected(senders, 0);
  std::string first_problem;
  for (const auto& m : got) {
    const auto k = m.payload.is_object() ? m.payload.value("sender", -1) : -1;
    const auto seq = seq_of(m);
    if (k < 0 || k >= senders) {
      if (first_problem.empty()) first_problem = "a message without a valid sender";
      continue;
    }
    if (m.sender != "conformance.sender-" + std::to_string(k) && first_problem.empty()) {
      first_problem = "sender field '" + m.sender + "' does not match its payload";
    }
    if (seq != expected[static_cast<std::size_t>(k)] && first_problem.empty()) {
      first_problem = "sender " + std::to_string(k) + ": got #" + std::to_string(seq) +
                      ", expected #" + std::to_string(expected[static_cast<std::size_t>(k)]);
    }
    expected[static_cast<std::size_t>(k)] = seq + 1;
  }
  CHECK_MESSAGE(first_problem.empty(), first_problem);
  for (int k = 0; k < senders; ++k) CHECK(expected[static_cast<std::size_t>(k)] == per_sender);
}

// ---------------------------------------------------------------------------
// (c) topic fan-out
// ---------------------------------------------------------------------------

/// Every subscriber of a topic gets every message published to exactly that
/// topic, in publish order; a reset subscriber gets nothing more; a topic
/// without subscribers swallows messages without error.
inline void check_topic_fan_out(const transport_factory& make) {
  constexpr int n = 50;
  auto t = make();
  REQUIRE(t != nullptr);
  const std::string topic = fresh_name("news");

  std::vector<std::shared_ptr<inbox>> boxes;
  std::vector<subscription> subs;
  for (int k = 0; k < 3; ++k) {
    boxes.push_back(inbox::make());
    auto s = t->subscribe(topic, boxes.back()->sink());
    REQUIRE_MESSAGE(s.ok(), describe_result(s));
    subs.push_back(std::move(s).value());
  }
  // Topics match exactly: neither a longer name nor a prefix sees the messages.
  auto longer = inbox::make();
  auto longer_sub = t->subscribe(topic + ".more", longer->sink());
  REQUIRE_MESSAGE(longer_sub.ok(), describe_result(longer_sub));
  auto prefix = inbox::make();
  auto prefix_sub = t->subscribe(topic.substr(0, topic.size() - 1), prefix->sink());
  REQUIRE_MESSAGE(prefix_sub.ok(), describe_result(prefix_sub));

  auto publish_range = [&](int first, int last) {
    for (int i = first; i < last; ++i) {
      message m;
      m.type = "conformance.news";
      m.sender = "conformance.publisher";
      m.topic = topic;
      m.headers = {{"seq", std::to_string(i)}};
      m.payload = {{"seq", i}};
      const auto r = t->publish(std::move(m));
      REQUIRE_MESSAGE(r.ok(), "publish #" << i << ": " << describe_result(r));
    }
  };

  publish_range(0, n);
  for (std::size_t k = 0; k < boxes.size(); ++k) {
    INFO("subscriber " << k);
    REQUIRE_MESSAGE(boxes[k]->wait_for(n), "delivered " << boxes[k]->size() << " of " << n);
    const auto got = boxes[k]->messages();
    CHECK(seqs_of(got) == seq_range(0, n));
    for (const auto& m : got) {
      CHECK(m.topic == topic);
      CHECK(m.recipient.empty());
      CHECK(m.type == "conformance.news");
      CHECK(m.sender == "conformance.publisher");
      CHECK(m.headers.at("seq") == std::to_string(seq_of(m)));
    }
  }

  // Unsubscribe the third; it must not be called once reset returned.
  subs[2].reset();
  boxes[2]->mark_reset();
  CHECK_FALSE(subs[2].active());

  publish_range(n, 2 * n);
  for (std::size_t k = 0; k < 2; ++k) {
    INFO("subscriber " << k);
    REQUIRE_MESSAGE(boxes[k]->wait_for(2 * n), "delivered " << boxes[k]->size() << " of " << 2 * n);
    CHECK(seqs_of(boxes[k]->messages()) == seq_range(0, 2 * n));
  }
  CHECK(boxes[2]->size() == static_cast<std::size_t>(n));
  CHECK(boxes[2]->calls_after_reset() == 0);
  CHECK(longer->size() == 0);
  CHECK(prefix->size() == 0);

  // Nobody listens: not an error.
  message lonely;
  lonely.type = "conformance.news";
  lonely.topic = fresh_name("nobody-listens");
  lonely.payload = {{"seq", 0}};
  const auto r = t->publish(lonely);
  CHECK_MESSAGE(r.ok(), describe_result(r));

  // Everybody unsubscribed: still not an error, and nobody is called.
  for (std::size_t k = 0; k < 2; ++k) {
    subs[k].reset();
    boxes[k]->mark_reset();
  }
  const auto after = t->publish([&] {
    message m;
    m.type = "conformance.news";
    m.topic = topic;
    m.payload = {{"seq", 2 * n}};
    return m;
  }());
  CHECK_MESSAGE(after.ok(), describe_result(after));
  // Show the publish had time to go wrong: a message on another topic,
  // published after it, has arrived.
  const auto probe = t->publish([&] {
    message m;
    m.type = "conformance.news";
    m.topic = topic + ".more";
    m.payload = {{"seq", 0}};
    return m;
  }());
  CHECK_MESSAGE(probe.ok(), describe_result(probe));
  CHECK(longer->wait_for(1));
  for (const auto& b : boxes) CHECK(b->calls_after_reset() == 0);
}

// ---------------------------------------------------------------------------
// (d) errors and rebinding
// ---------------------------------------------------------------------------

/// Unknown addresses, empty names and double binds fail with the documented
/// codes; an address can be bound again after its binding was reset.
inline void check_errors_and_rebinding(const transport_factory& make) {
  auto t = make();
  REQUIRE(t != nullptr);

  {
    const std::string nobody = fresh_name("nobody-home");
    const auto r = t->send(seq_message(nobody, 0));
    CHECK(code_of(r) == "not_found");
    if (!r.ok()) {
      CHECK_MESSAGE(r.error().message().find(nobody) != std::string::npos,
                    "the error should name the address: " << r.error().message());
    }
  }
  {
    message m = seq_message("", 0);
    CHECK(code_of(t->send(m)) == "invalid_argument");
    m.topic = fresh_name("topic-not-recipient");  // a topic does not make a send valid
    CHECK(code_of(t->send(m)) == "invalid_argument");
  }
  {
    message m = seq_message("", 0);
    CHECK(code_of(t->publish(m)) == "invalid_argument");
    m.recipient = fresh_name("recipient-not-topic");  // nor a recipient a publish
    CHECK(code_of(t->publish(m)) == "invalid_argument");
  }
  CHECK(code_of(t->bind("", inbox::make()->sink())) == "invalid_argument");
  CHECK(code_of(t->subscribe("", inbox::make()->sink())) == "invalid_argument");

  const std::string address = fresh_name("rebind");
  auto first_box = inbox::make();
  auto first = t->bind(address, first_box->sink());
  REQUIRE_MESSAGE(first.ok(), describe_result(first));

  auto second_box = inbox::make();
  const auto second = t->bind(address, second_box->sink());
  CHECK(code_of(second) == "already_exists");

  auto r = send_patiently(*t, seq_message(address, 1));
  REQUIRE_MESSAGE(r.ok(), describe_result(r));
  REQUIRE(first_box->wait_for(1));

  first->reset();
  first_box->mark_reset();
  CHECK_FALSE(first->active());

  auto third_box = inbox::make();
  auto third = t->bind(address, third_box->sink());
  REQUIRE_MESSAGE(third.ok(), "rebinding after reset: " << describe_result(third));
  r = send_patiently(*t, seq_message(address, 2));
  REQUIRE_MESSAGE(r.ok(), describe_result(r));
  REQUIRE(third_box->wait_for(1));
  CHECK(seqs_of(third_box->messages()) == std::vector<std::int64_t>{2});
  CHECK(seqs_of(first_box->messages()) == std::vector<std::int64_t>{1});
  CHECK(first_box->calls_after_reset() == 0);
  CHECK(second_box->size() == 0);
}

// ---------------------------------------------------------------------------
// (e) back-pressure
// ---------------------------------------------------------------------------

/// A sink that holds at most `capacity` messages and refuses more with
/// `mailbox_full` until the test drains it.
struct bounded_receiver {
  explicit bounded_receiver(std::size_t cap) : capacity(cap) {}

  message_sink sink(const std::shared_ptr<bounded_receiver>& self) {
    return [self](message&& m) -> result<void> {
      const auto seq = seq_of(m);
      bool refused = false;
      self->mon.update([&] {
        if (self->held >= self->capacity) {
          ++self->refusals;
          refused = true;
        } else {
          ++self->held;
          self->accepted.push_back(seq);
        }
      });
      if (refused) return aise::error(errc::mailbox_full, "conformance: the bounded sink is full");
      return {};
    };
  }

  monitor mon;
  const std::size_t capacity;
  // Guarded by mon:
  std::size_t held = 0;                // accepted and not yet drained
  std::vector<std::int64_t> accepted;  // every accepted message, in order
  std::size_t refusals = 0;
};

/// Sends beyond a sink's capacity. Asserted for any transport, synchronous
/// or not: some send fails with `mailbox_full`; every send that returned ok
/// is delivered exactly once (after draining), no failed send is delivered,
/// nothing twice; once drained, sends succeed again.
inline void check_back_pressure(const transport_factory& make) {
  constexpr std::size_t capacity = 8;
  auto t = make();
  REQUIRE(t != nullptr);
  const std::string address = fresh_name("back-pressure");
  auto rx = std::make_shared<bounded_receiver>(capacity);
  auto bound = t->bind(address, rx->sink(rx));
  REQUIRE_MESSAGE(bound.ok(), describe_result(bound));

  // Flood without draining: 3 × capacity messages, and more (up to a bound
  // and the deadline) until a send reports mailbox_full, since a transport
  // with a queue of its own in front of the sink refuses only once that is
  // full too.
  std::set<std::int64_t> sent_ok;
  std::size_t full = 0;
  std::vector<std::string> other_failures;
  constexpr std::int64_t min_sends = 3 * static_cast<std::int64_t>(capacity);
  constexpr std::int64_t max_sends = min_sends + 20'000;
  const auto give_up = std::chrono::steady_clock::now() + default_deadline;
  std::int64_t next = 0;
  for (; next < max_sends; ++next) {
    if (next >= min_sends && (full > 0 || std::chrono::steady_clock::now() >= give_up)) break;
    const auto r = t->send(seq_message(address, next));
    if (r.ok()) {
      sent_ok.insert(next);
    } else if (r.error().code() == errc::mailbox_full) {
      ++full;
    } else {
      other_failures.push_back(describe_result(r));
    }
  }
  CHECK_MESSAGE(full > 0, "no send failed with mailbox_full in " << next << " sends");
  CHECK_MESSAGE(
      other_failures.empty(),
      "unexpected: " << (other_failures.empty() ? std::string() : other_failures.front()));
  CHECK(sent_ok.size() >= capacity);

  // Drain while waiting: every message whose send returned ok arrives.
  auto drain_until_all_arrived = [&] {
    return rx->mon.wait_until([&] {
      rx->held = 0;
      const std::set<std::int64_t> got(rx->accepted.begin(), rx->accepted.end());
      return std::includes(got.begin(), got.end(), sent_ok.begin(), sent_ok.end());
    });
  };
  REQUIRE_MESSAGE(drain_until_all_arrived(), "messages whose send returned ok were lost");

  // Drained: the receiver takes `capacity` messages again without refusing.
  for (std::size_t i = 0; i < capacity; ++i, ++next) {
    const auto r = t->send(seq_message(address, next));
    CHECK_MESSAGE(r.ok(), "send after draining: " << describe_result(r));
    if (r.ok()) sent_ok.insert(next);
  }
  CHECK_MESSAGE(drain_until_all_arrived(), "messages sent after draining were lost");

  const auto accepted = rx->mon.read([&] { return rx->accepted; });
  std::set<std::int64_t> seen;
  for (const auto seq : accepted) {
    CHECK_MESSAGE(seen.insert(seq).second, "message #" << seq << " was delivered twice");
    CHECK_MESSAGE(sent_ok.count(seq) == 1,
                  "message #" << seq << " was delivered although its send failed");
  }
}

// ---------------------------------------------------------------------------
// (f) throwing sinks
// ---------------------------------------------------------------------------

/// A sink that throws on `"throw"` payloads (std::exception) and `"throw
/// other"` (anything else) and records the rest.
inline message_sink throwing_sink(const std::shared_ptr<inbox>& box) {
  return [box, store = box->sink()](message&& m) -> result<void> {
    if (m.payload == "throw") throw std::runtime_error("conformance: thrown on purpose");
    if (m.payload == "throw other") throw 42;  // NOLINT(hicpp-exception-baseclass): on purpose
    return store(std::move(m));
  };
}

/// A sink that throws fails only its own delivery (send may report it as
/// `internal`, or not at all when delivery is asynchronous); the binding,
/// other bindings and other subscribers keep working.
inline void check_throwing_sink(const transport_factory& make) {
  auto t = make();
  REQUIRE(t != nullptr);
  const std::string address = fresh_name("thrower");
  auto box = inbox::make();
  auto bound = t->bind(address, throwing_sink(box));
  REQUIRE_MESSAGE(bound.ok(), describe_result(bound));

  auto poison = [&](std::string_view what) {
    message m = seq_message(address, -1);
    m.payload = what;
    return m;
  };
  for (const char* what : {"throw", "throw other"}) {
    const auto r = t->send(poison(what));
    CHECK_MESSAGE((r.ok() || r.error().code() == errc::internal),
                  what << ": " << describe_result(r));
  }
  auto r = send_patiently(*t, seq_message(address, 1));
  REQUIRE_MESSAGE(r.ok(), "the same binding after a throw: " << describe_result(r));
  REQUIRE(box->wait_for(1));
  CHECK(seqs_of(box->messages()) == std::vector<std::int64_t>{1});

  const std::string other_address = fresh_name("bystander");
  auto other = inbox::make();
  auto other_bound = t->bind(other_address, other->sink());
  REQUIRE_MESSAGE(other_bound.ok(), describe_result(other_bound));
  r = send_patiently(*t, seq_message(other_address, 2));
  REQUIRE_MESSAGE(r.ok(), "another binding after a throw: " << describe_result(r));
  REQUIRE(other->wait_for(1));

  // Topics: a throwing subscriber does not keep the message from the others.
  const std::string topic = fresh_name("thrower-topic");
  auto thrower_box = inbox::make();
  auto listener = inbox::make();
  auto s1 = t->subscribe(topic, throwing_sink(thrower_box));
  auto s2 = t->subscribe(topic, listener->sink());
  REQUIRE_MESSAGE(s1.ok(), describe_result(s1));
  REQUIRE_MESSAGE(s2.ok(), describe_result(s2));
  message m;
  m.type = "conformance.news";
  m.topic = topic;
  m.payload = "throw";
  const auto p = t->publish(m);
  CHECK_MESSAGE((p.ok() || p.error().code() == errc::internal), describe_result(p));
  m.payload = {{"seq", 3}};
  const auto q = t->publish(m);
  CHECK_MESSAGE(q.ok(), describe_result(q));
  REQUIRE(listener->wait_for(2));
  REQUIRE(thrower_box->wait_for(1));
  CHECK(listener->messages()[0].payload == "throw");
  CHECK(seq_of(listener->messages()[1]) == 3);
  CHECK(seqs_of(thrower_box->messages()) == std::vector<std::int64_t>{3});
}

// ---------------------------------------------------------------------------
// (g) request/reply through aise::runtime
// ---------------------------------------------------------------------------

/// Answers "echo" requests with their payload; handles "slow" without ever
/// replying.
class echo_agent : public agent {
 public:
  echo_agent() {
    on_request("echo", [](const message& m) -> result<nlohmann::json> { return m.payload; });
    on("slow", [](const message&) {});
  }
};

/// Two runtimes share the transport; requests cross it both ways, time out
/// when nobody answers, and fail with `not_found` for an unknown address.
inline void check_runtime_requests(const transport_factory& make) {
  auto t = make();
  REQUIRE(t != nullptr);
  auto options = [&](std::string_view name) {
    runtime_options o;
    o.name = fresh_name(name);
    o.threads = 2;
    o.transport = t;
    return o;
  };
  runtime a(options("runtime-a"));
  runtime b(options("runtime-b"));

  spawn_options so;
  so.kind = "conformance.echo";
  so.name = fresh_name("echo-b");
  const auto echo_b = b.spawn<echo_agent>(so);
  REQUIRE_MESSAGE(echo_b.ok(), describe_result(echo_b));
  so.name = fresh_name("echo-a");
  const auto echo_a = a.spawn<echo_agent>(so);
  REQUIRE_MESSAGE(echo_a.ok(), describe_result(echo_a));

  const nlohmann::json payload = {
      {"text", "ping \u2713"}, {"n", 42}, {"list", {1, 2.5, nullptr}}, {"nested", {{"k", "v"}}}};

  auto reply = a.call(*echo_b, "echo", payload, default_deadline);
  REQUIRE_MESSAGE(reply.ok(), "a -> b: " << describe_result(reply));
  CHECK_FALSE(reply->is_error_reply());
  CHECK(reply->payload == payload);

  reply = b.call(*echo_a, "echo", payload, default_deadline);
  REQUIRE_MESSAGE(reply.ok(), "b -> a: " << describe_result(reply));
  CHECK(reply->payload == payload);

  const auto started = std::chrono::steady_clock::now();
  const auto slow = a.call(*echo_b, "slow", payload, std::chrono::milliseconds(200));
  const auto waited = std::chrono::steady_clock::now() - started;
  CHECK(code_of(slow) == "timeout");
  CHECK(waited >= std::chrono::milliseconds(100));
  CHECK(waited < default_deadline);

  const auto unknown = a.call(fresh_name("nobody-home"), "echo", payload, default_deadline);
  CHECK(code_of(unknown) == "not_found");

  // The timed-out request left nothing broken behind.
  reply = a.call(*echo_b, "echo", payload, default_deadline);
  REQUIRE_MESSAGE(reply.ok(), "after a timeout: " << describe_result(reply));
  CHECK(reply->payload == payload);

  const auto a_down = a.shutdown();
  CHECK_MESSAGE(a_down.ok(), describe_result(a_down));
  const auto b_down = b.shutdown();
  CHECK_MESSAGE(b_down.ok(), describe_result(b_down));
}

}  // namespace aise::conformance

/// The cases (a)–(f), which need nothing but the transport.
#define AISE_TRANSPORT_CONFORMANCE_SUITE_BASIC(id, label, ...)                    \
  namespace {                                                                     \
  std::shared_ptr<::aise::transport> aise_conformance_make_##id() {               \
    return (__VA_ARGS__)();                                                       \
  }                                                                               \
  }                                                                               \
  TEST_CASE(label " transport: delivery keeps every field") {                     \
    ::aise::conformance::check_delivery(&aise_conformance_make_##id);             \
  }                                                                               \
  TEST_CASE(label " transport: messages of one sender arrive in order") {         \
    ::aise::conformance::check_per_sender_ordering(&aise_conformance_make_##id);  \
  }                                                                               \
  TEST_CASE(label " transport: publish reaches every subscriber") {               \
    ::aise::conformance::check_topic_fan_out(&aise_conformance_make_##id);        \
  }                                                                               \
  TEST_CASE(label " transport: errors and rebinding") {                           \
    ::aise::conformance::check_errors_and_rebinding(&aise_conformance_make_##id); \
  }                                                                               \
  TEST_CASE(label " transport: back-pressure") {                                  \
    ::aise::conformance::check_back_pressure(&aise_conformance_make_##id);        \
  }                                                                               \
  TEST_CASE(label " transport: a throwing sink breaks nothing") {                 \
    ::aise::conformance::check_throwing_sink(&aise_conformance_make_##id);        \
  }                                                                               \
  static_assert(true, "require a semicolon")

/// The case (g): request/reply between two runtimes over the transport.
#define AISE_TRANSPORT_CONFORMANCE_SUITE_RUNTIME(id, label, ...)                      \
  namespace {                                                                         \
  std::shared_ptr<::aise::transport> aise_conformance_runtime_make_##id() {           \
    return (__VA_ARGS__)();                                                           \
  }                                                                                   \
  }                                                                                   \
  TEST_CASE(label " transport: requests between runtimes") {                          \
    ::aise::conformance::check_runtime_requests(&aise_conformance_runtime_make_##id); \
  }                                                                                   \
  static_assert(true, "require a semicolon")

/// The whole suite, (a)–(g).
#define AISE_TRANSPORT_CONFORMANCE_SUITE(id, label, ...)          \
  AISE_TRANSPORT_CONFORMANCE_SUITE_BASIC(id, label, __VA_ARGS__); \
  AISE_TRANSPORT_CONFORMANCE_SUITE_RUNTIME(id, label, __VA_ARGS__)
