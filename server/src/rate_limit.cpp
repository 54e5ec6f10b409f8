#include "rate_limit.hpp"

#include <algorithm>
#include <cmath>

namespace aise::server {

namespace {

double seconds_between(rate_limiter::time_point from, rate_limiter::time_point to) {
  if (to <= from) return 0;
  return std::chrono::duration<double>(to - from).count();
}

}  // namespace

rate_decision rate_limiter::take(std::string_view key, time_point now) {
  if (!enabled()) return {};
  const double burst = std::max(1.0, options_.burst);
  std::lock_guard lock(mutex_);
  auto it = buckets_.find(std::string(key));
  if (it == buckets_.end()) {
    if (buckets_.size() >= options_.max_keys) make_room(now);
    it = buckets_.emplace(std::string(key), bucket{burst, now}).first;
  }
  auto& b = it->second;
  b.tokens = std::min(burst, b.tokens + seconds_between(b.last, now) * options_.rate);
  b.last = std::max(b.last, now);
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return {};
  }
  auto wait = std::ceil((1 - b.tokens) / options_.rate);
  return {false, std::chrono::seconds(std::max<long long>(1, static_cast<long long>(wait)))};
}

void rate_limiter::make_room(time_point now) {
  const double burst = std::max(1.0, options_.burst);
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    double refilled = it->second.tokens + seconds_between(it->second.last, now) * options_.rate;
    it = refilled >= burst ? buckets_.erase(it) : std::next(it);
  }
  if (buckets_.size() >= options_.max_keys) buckets_.clear();
}

}  // namespace aise::server
