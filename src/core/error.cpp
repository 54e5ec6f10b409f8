#include <aise/error.hpp>

#include <string>
#include <string_view>

namespace aise {

std::string_view to_string(errc code) noexcept {
  switch (code) {
    case errc::ok:
      return "ok";
    case errc::invalid_argument:
      return "invalid_argument";
    case errc::not_found:
      return "not_found";
    case errc::already_exists:
      return "already_exists";
    case errc::illegal_transition:
      return "illegal_transition";
    case errc::conflict:
      return "conflict";
    case errc::timeout:
      return "timeout";
    case errc::cancelled:
      return "cancelled";
    case errc::mailbox_full:
      return "mailbox_full";
    case errc::unavailable:
      return "unavailable";
    case errc::cycle:
      return "cycle";
    case errc::handler_failed:
      return "handler_failed";
    case errc::no_handler:
      return "no_handler";
    case errc::rejected:
      return "rejected";
    case errc::limit_exceeded:
      return "limit_exceeded";
    case errc::internal:
      return "internal";
  }
  // A value cast from an integer that no enumerator names (e.g. from the C API).
  return "unknown";
}

std::string error::describe() const {
  std::string out(to_string(code_));
  if (!message_.empty()) {
    out += ": ";
    out += message_;
  }
  return out;
}

bad_result_access::bad_result_access(const aise::error& e)
    : std::logic_error(e.describe()), error_(e) {}

}  // namespace aise
