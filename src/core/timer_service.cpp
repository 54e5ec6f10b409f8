#include "timer_service.hpp"

#include <boost/asio/post.hpp>
#include <vector>

namespace aise::detail {

timer_service::timer_service(boost::asio::io_context& io, std::shared_ptr<aise::clock> clk)
    : io_(io), clock_(std::move(clk)) {
  guard_->self = this;
  if (clock_->is_manual()) {
    auto* manual = static_cast<manual_clock*>(clock_.get());  // is_manual() ⇒ manual_clock
    listener_key_ = manual->add_listener([g = guard_] { through(g, false); });
  } else {
    timer_ = std::make_unique<boost::asio::steady_timer>(io_);
  }
}

timer_service::~timer_service() {
  {
    std::lock_guard lock(guard_->mutex);  // waits for a callback in progress
    guard_->self = nullptr;
  }
  shutdown();
  if (clock_->is_manual()) static_cast<manual_clock*>(clock_.get())->remove_listener(listener_key_);
}

std::uint64_t timer_service::schedule_at(time_point due, std::function<void()> fn) {
  std::lock_guard lock(mutex_);
  if (closed_) return 0;
  const std::uint64_t id = next_id_++;
  queue_.emplace(std::make_pair(due, id), std::move(fn));
  due_of_.emplace(id, due);
  if (!clock_->is_manual()) {
    arm_locked();
  } else if (due <= clock_->now()) {
    // Already due on a manual clock: fire without waiting for the next advance.
    boost::asio::post(io_, [g = guard_] { through(g, false); });
  }
  return id;
}

bool timer_service::cancel(std::uint64_t id) {
  std::lock_guard lock(mutex_);
  auto it = due_of_.find(id);
  if (it == due_of_.end()) return false;
  queue_.erase(std::make_pair(it->second, id));
  due_of_.erase(it);
  return true;
}

void timer_service::shutdown() {
  std::lock_guard lock(mutex_);
  closed_ = true;
  queue_.clear();
  due_of_.clear();
  if (timer_) timer_->cancel();
}

std::size_t timer_service::size() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

void timer_service::arm_locked() {
  if (queue_.empty()) return;
  const time_point first = queue_.begin()->first.first;
  if (first >= armed_for_) return;  // an earlier or equal wake-up is pending
  armed_for_ = first;
  const auto delay = first - clock_->now();
  timer_->expires_after(delay.count() > 0
                            ? std::chrono::duration_cast<std::chrono::steady_clock::duration>(delay)
                            : std::chrono::steady_clock::duration::zero());
  timer_->async_wait([g = guard_](const boost::system::error_code& ec) {
    if (!ec) through(g, true);  // an error: re-armed earlier, or shut down
  });
}

void timer_service::through(const std::shared_ptr<guard>& g, bool after_wait) {
  std::lock_guard lock(g->mutex);
  if (g->self == nullptr) return;
  if (after_wait) {
    std::lock_guard inner(g->self->mutex_);
    g->self->armed_for_ = time_point::max();
  }
  g->self->fire_due();
}

void timer_service::fire_due() {
  std::vector<std::function<void()>> due;
  {
    std::lock_guard lock(mutex_);
    const time_point now = clock_->now();
    while (!queue_.empty() && queue_.begin()->first.first <= now) {
      auto node = queue_.extract(queue_.begin());
      due_of_.erase(node.key().second);
      due.push_back(std::move(node.mapped()));
    }
    if (!clock_->is_manual() && !closed_) {
      armed_for_ = time_point::max();
      arm_locked();
    }
  }
  for (auto& fn : due) boost::asio::post(io_, std::move(fn));
}

}  // namespace aise::detail
