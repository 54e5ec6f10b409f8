#pragma once
/// @file
/// Token buckets keyed by a string (a client address, a user id): each key
/// may spend `burst` requests at once and gets `rate` back per second.
/// aise-server keeps one limiter per IP (checked before authentication, so
/// it also slows down password guessing), one per user (after it), and a
/// stricter one per IP for the login route (server/README.md, "Rate limits").
///
/// Thread safety: `take` may be called from any number of threads (one
/// mutex; the work under it is a hash lookup and some arithmetic).
/// Memory: at most `max_keys` buckets; when full, buckets that have refilled
/// completely (their clients went quiet) are dropped first, and if none
/// has, the table is cleared (which only ever errs on the generous side).
#include <chrono>
#include <cstddef>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace aise::server {

/// How fast a key may go; `rate` 0 turns the limiter off.
struct rate_limit_options {
  double rate = 0;   ///< Tokens (requests) added per second.
  double burst = 1;  ///< Bucket size: requests allowed at once (at least 1).
  std::size_t max_keys = 100000;
};

/// The answer of `take`.
struct rate_decision {
  bool allowed = true;
  std::chrono::seconds retry_after{
      0};  ///< When refused: whole seconds until a token is there (>= 1).
};

class rate_limiter {
 public:
  using time_point = std::chrono::steady_clock::time_point;

  explicit rate_limiter(rate_limit_options options) : options_(options) {}

  /// Takes one token of `key`'s bucket at `now` (monotonic).
  rate_decision take(std::string_view key, time_point now);

  /// False when `rate` is 0: `take` always allows.
  [[nodiscard]] bool enabled() const noexcept { return options_.rate > 0; }

 private:
  struct bucket {
    double tokens = 0;
    time_point last{};
  };
  void make_room(time_point now);

  rate_limit_options options_;
  std::mutex mutex_;
  std::unordered_map<std::string, bucket> buckets_;
};

}  // namespace aise::server
