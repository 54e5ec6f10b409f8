#include "mailbox.hpp"

namespace aise::detail {

mailbox::push_result mailbox::push(message&& m, bool bounded) {
  std::lock_guard lock(mutex_);
  if (closed_) return push_result::closed;
  if (bounded && items_.size() >= capacity_) return push_result::full;
  items_.emplace_back(std::move(m));
  if (scheduled_) return push_result::queued;
  scheduled_ = true;
  return push_result::queued_and_schedule;
}

mailbox::push_result mailbox::push_job(std::function<void()> job) {
  std::lock_guard lock(mutex_);
  if (closed_) return push_result::closed;
  items_.emplace_back(std::move(job));
  if (scheduled_) return push_result::queued;
  scheduled_ = true;
  return push_result::queued_and_schedule;
}

bool mailbox::take_all(std::vector<mail_item>& out) {
  std::lock_guard lock(mutex_);
  if (items_.empty()) {
    scheduled_ = false;
    return false;
  }
  out.swap(items_);
  return true;
}

std::size_t mailbox::clear() {
  std::vector<mail_item> dropped;
  {
    std::lock_guard lock(mutex_);
    dropped.swap(items_);
  }
  return dropped.size();  // destroyed outside the lock: jobs may own heavy captures
}

std::size_t mailbox::close() {
  std::vector<mail_item> dropped;
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
    dropped.swap(items_);
  }
  return dropped.size();
}

bool mailbox::closed() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

std::size_t mailbox::size() const {
  std::lock_guard lock(mutex_);
  return items_.size();
}

}  // namespace aise::detail
