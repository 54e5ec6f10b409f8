#pragma once
/// @file
/// Errors at the public boundary: `aise::error` (a code plus a message) and
/// `aise::result<T>`, a value-or-error returned by every fallible call.
///
/// Contract: both types are regular values (copyable, movable) with no
/// shared state; using one object from several threads at once follows the
/// usual rules for standard library values (const access is safe).
/// Accessing the value of a result that holds an error throws
/// `aise::bad_result_access`; that is a programming error, not a runtime one.

#include <aise/core_export.hpp>

#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace aise {

/// What went wrong, coarse enough to branch on. New codes are only ever
/// appended, so numeric values are stable (they cross the C API).
enum class errc : int {
  ok = 0,
  invalid_argument = 1,    ///< The caller passed something malformed.
  not_found = 2,           ///< An id or name that does not exist.
  already_exists = 3,      ///< A unique id or name is taken.
  illegal_transition = 4,  ///< A task state change the state machine forbids.
  conflict = 5,            ///< Someone else changed the object first (compare-and-set lost).
  timeout = 6,             ///< A deadline passed.
  cancelled = 7,           ///< The operation or task was cancelled.
  mailbox_full = 8,        ///< Back-pressure: the recipient's bounded mailbox is full.
  unavailable = 9,         ///< A dependency (database, broker, runtime) is down or stopping.
  cycle = 10,              ///< A task dependency graph has a cycle.
  handler_failed = 11,     ///< User code threw or reported a failure.
  no_handler = 12,         ///< A message or task kind nobody handles.
  rejected = 13,           ///< A human (or policy) rejected an approval step.
  limit_exceeded = 14,     ///< A configured limit (restarts, size, budget) was reached.
  internal = 15,           ///< A bug in libaise; please report it.
};

/// Stable lower-case name of a code, e.g. "not_found".
AISE_CORE_EXPORT std::string_view to_string(errc code) noexcept;

/// An error: a code to branch on and a message for humans.
class AISE_CORE_EXPORT error {
 public:
  /// Creates an `internal` error with an empty message; prefer the other constructor.
  error() = default;
  /// Creates an error with `code` and a human-readable `message`.
  error(errc code, std::string message) : code_(code), message_(std::move(message)) {}

  /// The code.
  [[nodiscard]] errc code() const noexcept { return code_; }
  /// The message, without the code.
  [[nodiscard]] const std::string& message() const noexcept { return message_; }
  /// "code: message", for logs.
  [[nodiscard]] std::string describe() const;

  friend bool operator==(const error& a, const error& b) noexcept {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  errc code_ = errc::internal;
  std::string message_;
};

/// Thrown only when a caller reads the value of a failed result (a bug in
/// the caller), carrying the error it held.
class AISE_CORE_EXPORT bad_result_access : public std::logic_error {
 public:
  explicit bad_result_access(const error& e);
  /// The error the result held.
  [[nodiscard]] const aise::error& held() const noexcept { return error_; }

 private:
  aise::error error_;
};

/// Either a `T` or an `error`. Check with `ok()` / `operator bool` before
/// calling `value()`; `error()` is valid only when `!ok()`.
template <class T>
class [[nodiscard]] result {
  static_assert(!std::is_same_v<std::remove_cv_t<T>, aise::error>,
                "result<error> is ambiguous: return result<void> and fill an out parameter");

 public:
  /// A successful result holding `value`.
  result(T value)
      : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT(google-explicit-constructor)
  /// A failed result holding `e`.
  result(aise::error e)
      : v_(std::in_place_index<1>, std::move(e)) {}  // NOLINT(google-explicit-constructor)
  /// A successful result holding a `T` made from `value` (so a handler
  /// returning `result<nlohmann::json>` can simply `return 42;`).
  template <class U,
            class = std::enable_if_t<
                !std::is_same_v<std::decay_t<U>, result> && !std::is_same_v<std::decay_t<U>, T> &&
                !std::is_same_v<std::decay_t<U>, aise::error> && std::is_constructible_v<T, U&&>>>
  result(U&& value)  // NOLINT(google-explicit-constructor,bugprone-forwarding-reference-overload)
      : v_(std::in_place_index<0>, std::forward<U>(value)) {}

  /// True when a value is held.
  [[nodiscard]] bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  /// The value; throws bad_result_access when an error is held.
  T& value() & {
    check();
    return std::get<0>(v_);
  }
  const T& value() const& {
    check();
    return std::get<0>(v_);
  }
  T&& value() && {
    check();
    return std::get<0>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  /// The error; precondition `!ok()`.
  [[nodiscard]] const aise::error& error() const& { return std::get<1>(v_); }

  /// The value, or `fallback` when an error is held.
  template <class U>
  T value_or(U&& fallback) const& {
    return ok() ? std::get<0>(v_) : static_cast<T>(std::forward<U>(fallback));
  }

 private:
  void check() const {
    if (!ok()) throw bad_result_access(std::get<1>(v_));
  }
  std::variant<T, aise::error> v_;
};

/// A result with no value: success or an error.
template <>
class [[nodiscard]] result<void> {
 public:
  /// Success.
  result() = default;
  /// Failure holding `e`.
  result(aise::error e)
      : error_(std::move(e)), ok_(false) {}  // NOLINT(google-explicit-constructor)

  [[nodiscard]] bool ok() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }
  /// Throws bad_result_access when an error is held.
  void value() const {
    if (!ok_) throw bad_result_access(error_);
  }
  /// The error; precondition `!ok()`.
  [[nodiscard]] const aise::error& error() const& { return error_; }

 private:
  aise::error error_;
  bool ok_ = true;
};

/// Shorthand for a successful `result<void>`.
inline result<void> ok() {
  return {};
}

/// Builds an error with a fmt-style message is left to callers; this helper
/// keeps call sites short: `return fail(errc::not_found, "task " + id);`.
inline aise::error fail(errc code, std::string message) {
  return {code, std::move(message)};
}

}  // namespace aise
