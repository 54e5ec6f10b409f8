#pragma once
/// @file
/// The message envelope every agent, transport and binding speaks.

#include <aise/clock.hpp>
#include <aise/core_export.hpp>
#include <aise/error.hpp>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace aise {

/// Message type of a successful reply to a request; the payload is the
/// handler's result.
inline constexpr const char* reply_type = "aise.reply";
/// Message type of the reply a request gets when its handler failed or
/// nobody handles it; the payload is `{"code": "...", "message": "..."}`.
inline constexpr const char* error_reply_type = "aise.error";

/// One message: routing fields plus a JSON payload.
///
/// A message goes either to one agent (`recipient`) or to every subscriber
/// of a `topic`; exactly one of the two is set. Requests carry `reply_to`
/// (the requester's address) and a `correlation_id` that the reply repeats.
/// Plain value type: copyable, movable, no shared state.
struct AISE_CORE_EXPORT message {
  std::uint64_t id = 0;              ///< Unique per sender runtime; assigned on send when 0.
  std::string type;                  ///< What it is; handlers are chosen by it. Required.
  std::string sender;                ///< Address of the sending agent (empty from outside).
  std::string recipient;             ///< Direct address, or empty when `topic` is set.
  std::string topic;                 ///< Topic for publish/subscribe, or empty.
  std::uint64_t correlation_id = 0;  ///< Links a reply to its request; 0 = none.
  std::string reply_to;              ///< Where the reply goes; empty = no reply wanted.
  time_point created_at{};           ///< Set on send from the runtime's clock when empty.
  std::map<std::string, std::string> headers;  ///< Free-form string metadata.
  nlohmann::json payload;                      ///< The body.

  /// True when this is an error reply (type `aise.error`).
  [[nodiscard]] bool is_error_reply() const noexcept { return type == error_reply_type; }
  /// For an error reply, the error it carries; otherwise an `internal` error.
  [[nodiscard]] aise::error reply_error() const;
};

/// Serializes every field. Ids are 16-digit lower-case hex strings (so that
/// JavaScript clients keep all 64 bits); times are RFC 3339 UTC.
AISE_CORE_EXPORT nlohmann::json to_json(const message& m);

/// Parses what `to_json` writes. Errors (`invalid_argument`) name the
/// offending field: a missing or empty `type`, wrong field types, a bad id
/// or time, both or neither of recipient and topic.
AISE_CORE_EXPORT result<message> message_from_json(const nlohmann::json& j);

/// Formats an id as 16 lower-case hex digits.
AISE_CORE_EXPORT std::string format_id(std::uint64_t id);
/// Parses 1 to 16 hex digits; returns false on anything else.
AISE_CORE_EXPORT bool parse_id(const std::string& text, std::uint64_t& out) noexcept;

}  // namespace aise
