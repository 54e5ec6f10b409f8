#pragma once
// Timers on a runtime's clock. With a real clock one asio::steady_timer is
// armed for the earliest due time; with a manual clock due timers fire from
// the clock's listener (inside manual_clock::advance). Either way the
// callbacks run on the io_context, never under the service's lock.

#include <aise/clock.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>

namespace aise::detail {

class timer_service {
 public:
  timer_service(boost::asio::io_context& io, std::shared_ptr<aise::clock> clk);
  ~timer_service();
  timer_service(const timer_service&) = delete;
  timer_service& operator=(const timer_service&) = delete;

  std::uint64_t schedule_at(time_point due, std::function<void()> fn);
  std::uint64_t schedule_after(duration delay, std::function<void()> fn) {
    return schedule_at(clock_->now() + delay, std::move(fn));
  }
  bool cancel(std::uint64_t id);
  // Drops every timer; later schedules are ignored (they return 0).
  void shutdown();
  [[nodiscard]] std::size_t size() const;

 private:
  void fire_due();
  void arm_locked();

  boost::asio::io_context& io_;
  std::shared_ptr<aise::clock> clock_;
  mutable std::mutex mutex_;
  std::map<std::pair<time_point, std::uint64_t>, std::function<void()>> queue_;
  std::unordered_map<std::uint64_t, time_point> due_of_;
  std::uint64_t next_id_ = 1;
  bool closed_ = false;
  std::unique_ptr<boost::asio::steady_timer> timer_;  // real clocks only
  time_point armed_for_ = time_point::max();
  std::size_t listener_key_ = 0;
  // Callbacks (clock listener, asio handlers) reach the service through this
  // guard: they hold its mutex while they use the service, and the
  // destructor clears `self` under it, so none can run on a dead service.
  struct guard {
    std::mutex mutex;
    timer_service* self = nullptr;
  };
  std::shared_ptr<guard> guard_ = std::make_shared<guard>();
  // Runs fire_due() if the service still lives (`after_wait` also disarms).
  static void through(const std::shared_ptr<guard>& g, bool after_wait);
};

}  // namespace aise::detail
