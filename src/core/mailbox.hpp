#pragma once
// A bounded multi-producer, single-consumer mailbox of one agent. Producers
// are transports' sinks and libaise internals on any thread; the consumer is
// the agent's strand. A mutex guards a vector: a push appends, and the
// consumer swaps the whole vector out for its empty one (`take_all`), so a
// batch costs one lock and, once both vectors have grown, no allocation.
// The "scheduled" flag makes sure exactly one drain of an agent is in
// flight at any time.

#include <aise/error.hpp>
#include <aise/message.hpp>

#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace aise::detail {

// A message for a handler, or an internal job (start, stop, timer callback,
// reply continuation, task attempt) to run on the agent's strand.
struct mail_item {
  mail_item() = default;
  explicit mail_item(message&& m) : msg(std::move(m)) {}
  explicit mail_item(std::function<void()>&& j) : job(std::move(j)) {}
  message msg;
  std::function<void()> job;
};

class mailbox {
 public:
  enum class push_result { queued, queued_and_schedule, full, closed };

  explicit mailbox(std::size_t capacity) : capacity_(capacity) {}

  // `bounded` items count against the capacity; the rest are admitted anyway
  // (see agent.hpp: they answer work the agent itself started).
  push_result push(message&& m, bool bounded);
  // Jobs are always admitted (unless closed).
  push_result push_job(std::function<void()> job);
  // Moves every queued item into `out` (which must be empty); false, and
  // the agent unscheduled, when there was nothing.
  bool take_all(std::vector<mail_item>& out);
  // Drops every queued item; returns how many.
  std::size_t clear();
  // No more pushes; returns the number of items dropped.
  std::size_t close();
  [[nodiscard]] bool closed() const;
  [[nodiscard]] std::size_t size() const;
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

 private:
  mutable std::mutex mutex_;
  std::vector<mail_item> items_;
  std::size_t capacity_;
  bool scheduled_ = false;
  bool closed_ = false;
};

}  // namespace aise::detail
