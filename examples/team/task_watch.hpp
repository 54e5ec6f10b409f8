#pragma once
/// @file
/// Follows one task's state through the orchestrator's event stream, so that
/// a thread outside the runtime (here: main) can wait for a state.
///
/// Why not `orchestrator::wait`: main must act on a state that is not
/// terminal (awaiting_approval), and it wants to know that the event listener
/// has already printed the event it waited for. Thread-safe.

#include <aise/event.hpp>
#include <aise/task.hpp>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>

namespace team {

/// The last known state of one task, fed by an event listener.
class task_watch {
 public:
  /// Watches the task with id `task_id`.
  explicit task_watch(std::string task_id);

  /// Records `e` if it is a state change of the watched task. Called from
  /// the event listener: takes a mutex briefly and never waits.
  void observe(const aise::event& e);

  /// Sets the state known from elsewhere (a resumed run reads it from the store).
  void set(aise::task_state state);

  /// Waits until the watched task's state satisfies `accept` or `deadline`
  /// passes. Returns the last state seen (empty before the first event).
  std::optional<aise::task_state> wait_until(const std::function<bool(aise::task_state)>& accept,
                                             std::chrono::steady_clock::time_point deadline);

 private:
  const std::string task_id_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<aise::task_state> state_;
};

}  // namespace team
