#include "task_watch.hpp"

#include <string_view>
#include <utility>

namespace team {

task_watch::task_watch(std::string task_id) : task_id_(std::move(task_id)) {}

void task_watch::observe(const aise::event& e) {
  constexpr std::string_view prefix = "task.";
  if (e.subject != task_id_ || !e.type.starts_with(prefix)) return;
  auto state = aise::parse_task_state(std::string_view(e.type).substr(prefix.size()));
  if (!state) return;
  {
    std::lock_guard lock(mutex_);
    state_ = *state;
  }
  changed_.notify_all();
}

std::optional<aise::task_state> task_watch::wait_until(
    const std::function<bool(aise::task_state)>& accept,
    std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mutex_);
  changed_.wait_until(lock, deadline, [&] { return state_ && accept(*state_); });
  return state_;
}

void task_watch::set(aise::task_state state) {
  {
    std::lock_guard lock(mutex_);
    state_ = state;
  }
  changed_.notify_all();
}

}  // namespace team
