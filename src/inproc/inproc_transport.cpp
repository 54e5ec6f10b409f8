// The in-process transport: a table from address to sink, read under a
// shared lock, with delivery on the sender's thread.
//
// Hot path (send): shared lock, hash lookup with the message's own string,
// enter the endpoint's gate, unlock, call the sink, leave the gate. No
// allocation beyond what moving the message costs, no std::function copy,
// no shared_ptr copy.
//
// Unbinding: a sink must never run after its subscription's reset returned,
// and sinks must not run under the table lock (a sink may send, bind or
// unbind). Each endpoint therefore has a gate: an atomic count of calls in
// flight plus a "closed" bit. Reset first removes the endpoint from the
// table (exclusive lock), then sets the closed bit and waits until the calls
// in flight have left; only then may the endpoint be destroyed. A sender
// enters the gate while it still holds the shared lock, so the endpoint
// cannot be unbound, closed or destroyed before it is counted, and the count
// keeps it alive until the sender leaves: no reference count is needed on
// the hot path. Publish works from a copy of the subscriber list (it holds
// shared_ptrs) and so may meet an endpoint closed since; it checks the bit
// when it enters and skips a closed endpoint. The gate's mutex and condition
// variable are used only once it is closed, so they cost nothing otherwise.
//
// A sink may reset its own subscription (a receiver that unbinds itself on a
// "stop" message). Reset then waits for the calls in flight of other threads
// only, telling its own apart by a thread-local chain of delivery frames,
// and hands the endpoint to its outermost frame on this thread, which keeps
// it alive until that sink call has returned.

#include <aise/error.hpp>
#include <aise/message.hpp>
#include <aise/transport.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace aise {
namespace {

class endpoint;

// One sink call in progress on this thread.
struct delivery_frame {
  const endpoint* target;
  delivery_frame* outer;
  std::shared_ptr<endpoint> keep_alive;  // set when the sink reset its own subscription
};

thread_local delivery_frame* current_frame = nullptr;

// A receiver (bound address or topic subscriber) and the gate around its sink.
class endpoint {
 public:
  endpoint(std::string name, message_sink sink) : name_(std::move(name)), sink_(std::move(sink)) {}

  [[nodiscard]] const std::string& name() const noexcept { return name_; }

  // Enters the gate of an endpoint found in the table. Precondition: the
  // caller holds the table's lock (shared or exclusive), so the endpoint is
  // bound and therefore not closed.
  void enter_bound() noexcept { state_.fetch_add(1, std::memory_order_relaxed); }

  // Enters the gate of an endpoint the caller keeps alive by other means;
  // false (and not entered) when it is closed.
  bool try_enter() noexcept {
    if ((state_.fetch_add(1, std::memory_order_acquire) & closed_bit) == 0) return true;
    leave();
    return false;
  }

  // Calls the sink, then leaves the gate. Precondition: entered.
  result<void> deliver(message&& m) noexcept {
    delivery_frame frame{this, current_frame, nullptr};
    current_frame = &frame;
    result<void> r = call_sink(std::move(m));
    current_frame = frame.outer;
    leave();
    return r;
    // frame.keep_alive, if set, destroys this endpoint here, after the last use.
  }

  // Closes the gate and waits until no call of another thread is in flight;
  // the sink is never called again. Precondition: no longer in the table.
  void close(const std::shared_ptr<endpoint>& self) noexcept {
    const std::uint32_t before = state_.fetch_or(closed_bit, std::memory_order_acq_rel);
    std::size_t own = 0;
    delivery_frame* outermost_own = nullptr;
    for (delivery_frame* f = current_frame; f != nullptr; f = f->outer) {
      if (f->target == this) {
        ++own;
        outermost_own = f;
      }
    }
    if ((before & ~closed_bit) > own) {
      std::unique_lock lock(mutex_);
      left_.wait(lock,
                 [&] { return (state_.load(std::memory_order_acquire) & ~closed_bit) <= own; });
    }
    if (outermost_own == nullptr) {
      // Release what the sink captured now rather than with the last
      // shared_ptr, so a sink that holds its owner cannot keep it alive.
      sink_ = nullptr;
    } else {
      // The sink is running below us on this thread: it must outlive that call.
      outermost_own->keep_alive = self;
    }
  }

 private:
  static constexpr std::uint32_t closed_bit = std::uint32_t{1} << 31;

  result<void> call_sink(message&& m) noexcept {
    try {
      return sink_(std::move(m));
    } catch (const std::exception& e) {
      return describe_throw(e.what());
    } catch (...) {
      return describe_throw("an exception not derived from std::exception");
    }
  }

  [[nodiscard]] result<void> describe_throw(std::string_view what) const noexcept {
    try {
      std::string text = "the sink of '";
      text.append(name_).append("' threw: ").append(what);
      return aise::error(errc::internal, std::move(text));
    } catch (...) {
      return aise::error(errc::internal, {});
    }
  }

  void leave() noexcept {
    std::uint32_t s = state_.load(std::memory_order_relaxed);
    while ((s & closed_bit) == 0) {
      if (state_.compare_exchange_weak(s, s - 1, std::memory_order_release,
                                       std::memory_order_relaxed)) {
        return;
      }
    }
    // Closed: the closer may be waiting, and may destroy the endpoint as soon
    // as it sees the count drop, so drop it under the closer's mutex.
    std::lock_guard lock(mutex_);
    state_.fetch_sub(1, std::memory_order_release);
    left_.notify_all();
  }

  const std::string name_;
  message_sink sink_;
  std::atomic<std::uint32_t> state_{0};  // calls in flight | closed_bit
  std::mutex mutex_;                     // used by close() and leave() once closed
  std::condition_variable left_;
};

// Addresses are short names chosen by the application, hashed on every send:
// a multiply-xorshift over 8-byte words costs a fraction of std::hash's
// byte-oriented Murmur. Transparent, so string_view lookups need no copy.
struct address_hash {
  using is_transparent = void;

  std::size_t operator()(std::string_view s) const noexcept {
    constexpr std::uint64_t mul = 0xbf58476d1ce4e5b9ULL;
    std::uint64_t h = 0x9e3779b97f4a7c15ULL ^ s.size();
    const char* p = s.data();
    std::size_t n = s.size();
    for (; n >= 8; p += 8, n -= 8) {
      std::uint64_t word = 0;
      std::memcpy(&word, p, 8);
      h = (h ^ word) * mul;
      h ^= h >> 31;
    }
    std::uint64_t tail = 0;
    for (std::size_t i = 0; i < n; ++i) {
      tail |= std::uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
    }
    h = (h ^ tail) * mul;
    h ^= h >> 29;
    return static_cast<std::size_t>(h);
  }
};

template <class V>
using address_map = std::unordered_map<std::string, V, address_hash, std::equal_to<>>;

class inproc_transport final : public transport,
                               public std::enable_shared_from_this<inproc_transport> {
 public:
  [[nodiscard]] std::string_view name() const noexcept override { return "inproc"; }

  result<subscription> bind(std::string address, message_sink sink) override {
    if (address.empty()) return aise::error(errc::invalid_argument, "bind: the address is empty");
    if (!sink) return aise::error(errc::invalid_argument, "bind: the sink is empty");
    try {
      auto e = std::make_shared<endpoint>(address, std::move(sink));
      {
        std::unique_lock lock(mutex_);
        if (!bindings_.try_emplace(std::move(address), e).second) {
          return aise::error(errc::already_exists, "address '" + e->name() + "' is already bound");
        }
      }
      return subscription([weak = weak_from_this(), e] {
        if (auto self = weak.lock()) self->unbind(e);
        e->close(e);
      });
    } catch (const std::exception& ex) {
      return aise::error(errc::internal, std::string("bind: ") + ex.what());
    }
  }

  result<subscription> subscribe(std::string topic, message_sink sink) override {
    if (topic.empty()) return aise::error(errc::invalid_argument, "subscribe: the topic is empty");
    if (!sink) return aise::error(errc::invalid_argument, "subscribe: the sink is empty");
    try {
      auto e = std::make_shared<endpoint>(topic, std::move(sink));
      {
        std::unique_lock lock(mutex_);
        topics_[std::move(topic)].push_back(e);
      }
      return subscription([weak = weak_from_this(), e] {
        if (auto self = weak.lock()) self->unsubscribe(e);
        e->close(e);
      });
    } catch (const std::exception& ex) {
      return aise::error(errc::internal, std::string("subscribe: ") + ex.what());
    }
  }

  result<void> send(message m) override {
    try {
      if (m.recipient.empty()) {
        return aise::error(errc::invalid_argument, "send: the message has no recipient");
      }
      endpoint* e = nullptr;
      {
        std::shared_lock lock(mutex_);
        const auto it = bindings_.find(m.recipient);
        if (it != bindings_.end()) {
          e = it->second.get();
          e->enter_bound();  // keeps *e alive once the lock is gone
        }
      }
      if (e != nullptr) return e->deliver(std::move(m));
      return aise::error(errc::not_found, "no receiver is bound to address '" + m.recipient + "'");
    } catch (const std::exception& ex) {
      return aise::error(errc::internal, std::string("send: ") + ex.what());
    }
  }

  result<void> publish(message m) override {
    try {
      if (m.topic.empty()) {
        return aise::error(errc::invalid_argument, "publish: the message has no topic");
      }
      std::vector<std::shared_ptr<endpoint>> receivers;
      {
        std::shared_lock lock(mutex_);
        const auto it = topics_.find(m.topic);
        if (it == topics_.end()) return {};
        receivers = it->second;
      }
      result<void> first_failure;
      for (std::size_t i = 0; i < receivers.size(); ++i) {
        endpoint& e = *receivers[i];
        if (!e.try_enter()) continue;  // unsubscribed since the copy
        // The last subscriber gets the original, the others a copy each.
        const bool last = i + 1 == receivers.size();
        result<void> r = last ? e.deliver(std::move(m))  // NOLINT(bugprone-use-after-move)
                              : e.deliver(message(m));   // NOLINT(bugprone-use-after-move)
        if (!r && first_failure) first_failure = std::move(r);
      }
      return first_failure;
    } catch (const std::exception& ex) {
      return aise::error(errc::internal, std::string("publish: ") + ex.what());
    }
  }

 private:
  void unbind(const std::shared_ptr<endpoint>& e) noexcept {
    std::unique_lock lock(mutex_);
    const auto it = bindings_.find(e->name());
    if (it != bindings_.end() && it->second == e) bindings_.erase(it);
  }

  void unsubscribe(const std::shared_ptr<endpoint>& e) noexcept {
    std::unique_lock lock(mutex_);
    const auto it = topics_.find(e->name());
    if (it == topics_.end()) return;
    auto& list = it->second;
    list.erase(std::remove(list.begin(), list.end(), e), list.end());
    if (list.empty()) topics_.erase(it);
  }

  std::shared_mutex mutex_;  // guards bindings_ and topics_; never held while a sink runs
  address_map<std::shared_ptr<endpoint>> bindings_;
  address_map<std::vector<std::shared_ptr<endpoint>>> topics_;
};

}  // namespace

std::shared_ptr<transport> make_inproc_transport() {
  return std::make_shared<inproc_transport>();
}

}  // namespace aise
