#pragma once
/// @file
/// Cooperative cancellation: the orchestrator cancels, a running task
/// handler observes it (polling `cancelled()` or via `on_cancel`).

#include <aise/core_export.hpp>

#include <functional>
#include <memory>

namespace aise {

namespace detail {
struct cancellation_state;
struct cancellation_access;
}  // namespace detail

/// A shared, thread-safe cancellation flag with callbacks.
///
/// Copies share one state. `cancel()` may be called from any thread, any
/// number of times; the first call sets the flag and runs the callbacks on
/// the calling thread (outside any lock). The orchestrator sets the flag
/// together with the task change and runs the callbacks right after
/// releasing its lock. Callbacks registered after
/// cancellation run immediately on the registering thread. Callbacks must
/// not throw (an exception is swallowed and logged nowhere).
class AISE_CORE_EXPORT cancellation_token {
 public:
  /// A fresh, not-cancelled token.
  cancellation_token();

  /// True once cancelled.
  [[nodiscard]] bool cancelled() const noexcept;
  /// Cancels; returns true for the call that actually cancelled.
  bool cancel() const;
  /// Runs `fn` once when cancelled (immediately if already cancelled).
  void on_cancel(std::function<void()> fn) const;

 private:
  friend struct detail::cancellation_access;
  std::shared_ptr<detail::cancellation_state> state_;
};

}  // namespace aise
