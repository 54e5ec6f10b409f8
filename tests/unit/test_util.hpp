#pragma once
// Helpers shared by the core tests: waiting on conditions with deadlines
// (never sleeping and hoping) and recording orchestrator events.

#include <aise/event.hpp>
#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>
#include <aise/task_context.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <spdlog/logger.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <string>
#include <vector>

namespace aise::test {

inline constexpr auto deadline = std::chrono::seconds(10);

// Runtime options for tests: a few threads, a logger that prints nothing,
// and the given clock (the system clock when null).
inline runtime_options quiet_options(std::size_t threads = 2,
                                     std::shared_ptr<aise::clock> clock = nullptr) {
  runtime_options o;
  o.threads = threads;
  o.clock = std::move(clock);
  // AISE_DEBUG_LOG=1 shows the runtime's log on stderr while debugging a test.
  spdlog::sink_ptr sink;
  if (std::getenv("AISE_DEBUG_LOG") != nullptr) {
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  } else {
    sink = std::make_shared<spdlog::sinks::null_sink_mt>();
  }
  o.logger = std::make_shared<spdlog::logger>("test", std::move(sink));
  return o;
}

// A notifier: code under test calls notify() after changing what a test
// waits for; the test waits until its predicate holds or the deadline passes.
class notifier {
 public:
  // Notifies under the lock: a waiter that returns may destroy the
  // notifier at once, so it must not be touched after the lock is released.
  template <class F>
  void update(F&& f) {
    std::lock_guard lock(mutex_);
    f();
    cv_.notify_all();
  }
  template <class Pred>
  bool wait(Pred pred, std::chrono::milliseconds limit = deadline) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, limit, pred);
  }
  std::mutex& mutex() { return mutex_; }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
};

// Records every event of an orchestrator.
class event_recorder {
 public:
  explicit event_recorder(orchestrator& o) : orch_(o) {
    key_ = o.subscribe([this](const event& e) { sig_.update([&] { events_.push_back(e); }); });
  }
  ~event_recorder() { orch_.unsubscribe(key_); }
  event_recorder(const event_recorder&) = delete;
  event_recorder& operator=(const event_recorder&) = delete;

  // Waits until an event of `type` about `subject` was seen.
  bool wait_for(const std::string& type, const std::string& subject,
                std::chrono::milliseconds limit = deadline) {
    return sig_.wait([&] { return has_locked(type, subject); }, limit);
  }
  // Waits until `n` events of `type` about `subject` were seen.
  bool wait_count(const std::string& type, const std::string& subject, std::size_t n,
                  std::chrono::milliseconds limit = deadline) {
    return sig_.wait([&] { return count_locked(type, subject) >= n; }, limit);
  }
  bool has(const std::string& type, const std::string& subject) {
    std::lock_guard lock(sig_.mutex());
    return has_locked(type, subject);
  }
  std::size_t count(const std::string& type, const std::string& subject = {}) {
    std::lock_guard lock(sig_.mutex());
    return count_locked(type, subject);
  }
  std::size_t count_locked(const std::string& type, const std::string& subject) const {
    std::size_t n = 0;
    for (const auto& e : events_) {
      if (e.type == type && (subject.empty() || e.subject == subject)) ++n;
    }
    return n;
  }
  // The types of the events about `subject`, in order.
  std::vector<std::string> types_of(const std::string& subject) {
    std::lock_guard lock(sig_.mutex());
    std::vector<std::string> out;
    for (const auto& e : events_) {
      if (e.subject == subject) out.push_back(e.type);
    }
    return out;
  }
  std::vector<event> all() {
    std::lock_guard lock(sig_.mutex());
    return {events_.begin(), events_.end()};
  }

 private:
  bool has_locked(const std::string& type, const std::string& subject) const {
    for (const auto& e : events_) {
      if (e.type == type && e.subject == subject) return true;
    }
    return false;
  }
  orchestrator& orch_;
  notifier sig_;
  std::deque<event> events_;
  std::size_t key_ = 0;
};

// Task contexts parked by async handlers, completed later by the test.
class parked_tasks {
 public:
  void park(task_context ctx) {
    sig_.update([&] { parked_.push_back(std::move(ctx)); });
  }
  bool wait_count(std::size_t n, std::chrono::milliseconds limit = deadline) {
    return sig_.wait([&] { return parked_.size() >= n; }, limit);
  }
  std::size_t size() {
    std::lock_guard lock(sig_.mutex());
    return parked_.size();
  }
  // Removes and returns the parked context of task `id`.
  task_context take(const std::string& id) {
    std::lock_guard lock(sig_.mutex());
    for (auto it = parked_.begin(); it != parked_.end(); ++it) {
      if (it->task().id == id) {
        task_context ctx = *it;
        parked_.erase(it);
        return ctx;
      }
    }
    throw std::runtime_error("no parked task " + id);
  }
  std::vector<task_context> take_all() {
    std::lock_guard lock(sig_.mutex());
    std::vector<task_context> out(parked_.begin(), parked_.end());
    parked_.clear();
    return out;
  }

 private:
  notifier sig_;
  std::deque<task_context> parked_;
};

}  // namespace aise::test
