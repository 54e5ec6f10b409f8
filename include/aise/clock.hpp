#pragma once
/// @file
/// Time as libaise sees it: one injectable clock per runtime. Production code
/// uses the system clock; tests use `manual_clock` and move time by hand, so
/// retries, timeouts and backoff run deterministically with no sleeping.

#include <aise/core_export.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace aise {

/// Wall-clock instant used for every timestamp and deadline in libaise.
using time_point = std::chrono::system_clock::time_point;
/// Durations (nanosecond resolution).
using duration = std::chrono::nanoseconds;

/// Source of the current time.
///
/// Thread safety: implementations must allow `now()` from any thread.
/// Timers built on a clock (see runtime::schedule) fire when `now()` reaches
/// their due time; for a manual clock that happens only inside `advance()`.
class AISE_CORE_EXPORT clock {
 public:
  virtual ~clock() = default;
  /// The current instant.
  [[nodiscard]] virtual time_point now() const noexcept = 0;
  /// True when time moves only when told (tests). A runtime on a manual
  /// clock fires its timers from `manual_clock::advance`, never on its own.
  [[nodiscard]] virtual bool is_manual() const noexcept { return false; }
};

/// The real wall clock (std::chrono::system_clock). Stateless; shareable.
AISE_CORE_EXPORT std::shared_ptr<clock> make_system_clock();

/// A clock that stands still until `advance` or `set` moves it.
///
/// Thread safety: every member may be called from any thread. Listeners are
/// called on the thread that moves the clock, after the new time is visible,
/// and must not call `advance`/`set` themselves.
class AISE_CORE_EXPORT manual_clock final : public clock {
 public:
  /// Starts at `start` (default: 2026-01-01T00:00:00Z, a fixed instant so
  /// test output is reproducible).
  explicit manual_clock(time_point start = default_start());

  [[nodiscard]] time_point now() const noexcept override;
  [[nodiscard]] bool is_manual() const noexcept override { return true; }

  /// Moves time forward by `d` (negative values are ignored) and then runs
  /// the listeners, which fire due timers.
  void advance(duration d);
  /// Moves time to `t` if it is later than now; otherwise does nothing.
  void set(time_point t);

  /// Registers `fn` to run after every move; returns a key for `remove_listener`.
  std::size_t add_listener(std::function<void()> fn);
  /// Unregisters a listener; unknown keys are ignored.
  void remove_listener(std::size_t key);

  /// The default start instant.
  static time_point default_start() noexcept;

 private:
  void notify();
  mutable std::mutex mutex_;
  time_point now_;
  std::size_t next_key_ = 1;
  std::vector<std::pair<std::size_t, std::function<void()>>> listeners_;
};

/// Formats an instant as RFC 3339 UTC with microseconds, e.g. "2026-01-01T00:00:00.000000Z".
AISE_CORE_EXPORT std::string format_time(time_point t);
/// Parses what `format_time` writes (fractional seconds optional, "Z" required)
/// into `out`; returns false, leaving `out` unchanged, on malformed text.
AISE_CORE_EXPORT bool parse_time(const std::string& text, time_point& out) noexcept;

}  // namespace aise
