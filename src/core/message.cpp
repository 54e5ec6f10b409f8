#include <aise/message.hpp>
#include <aise/task.hpp>  // parse_errc

#include <cstdint>
#include <exception>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "json_fields.hpp"

namespace aise {

namespace {

using json = nlohmann::json;

constexpr std::string_view prefix = "message.";

aise::error field_error(std::string_view field, std::string_view what) {
  return detail::field_error(prefix, field, what);
}

using detail::find_field;

std::optional<aise::error> read_string(const json& j, const char* key, std::string& out) {
  return detail::read_string(j, prefix, key, out);
}

// Ids travel as hex strings, never as JSON numbers: a JavaScript client
// would silently round a 64-bit number.
std::optional<aise::error> read_id(const json& j, const char* key, std::uint64_t& out) {
  const json* v = find_field(j, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string() || !parse_id(v->get_ref<const std::string&>(), out)) {
    return field_error(key, "expected a string of 1 to 16 hex digits");
  }
  return std::nullopt;
}

std::optional<aise::error> read_headers(const json& j, std::map<std::string, std::string>& out) {
  const json* v = find_field(j, "headers");
  if (v == nullptr) return std::nullopt;
  if (!v->is_object()) return field_error("headers", "expected an object of strings");
  for (const auto& [key, value] : v->items()) {
    if (!value.is_string()) return field_error("headers." + key, "expected a string");
    out.emplace(key, value.get<std::string>());
  }
  return std::nullopt;
}

std::optional<aise::error> read_message(const json& j, message& m) {
  if (!j.is_object()) return aise::error{errc::invalid_argument, "message: expected a JSON object"};

  if (auto e = read_string(j, "type", m.type)) return e;
  if (m.type.empty()) return field_error("type", "missing or empty");
  if (auto e = read_string(j, "sender", m.sender)) return e;
  if (auto e = read_string(j, "recipient", m.recipient)) return e;
  if (auto e = read_string(j, "topic", m.topic)) return e;
  if (m.recipient.empty() == m.topic.empty()) {
    return aise::error{errc::invalid_argument,
                       std::string("message.recipient, message.topic: exactly one must be set (") +
                           (m.topic.empty() ? "neither is" : "both are") + ")"};
  }
  if (auto e = read_string(j, "reply_to", m.reply_to)) return e;
  if (auto e = read_id(j, "id", m.id)) return e;
  if (auto e = read_id(j, "correlation_id", m.correlation_id)) return e;

  if (auto e = detail::read_time(j, prefix, "created_at", m.created_at)) return e;

  if (auto e = read_headers(j, m.headers)) return e;
  if (const auto it = j.find("payload"); it != j.end()) m.payload = *it;
  return std::nullopt;
}

}  // namespace

aise::error message::reply_error() const {
  if (!is_error_reply()) {
    return {errc::internal, "not an error reply: message type is \"" + type + "\""};
  }
  // Lenient on purpose: the reply may come from another runtime or language,
  // and the caller is better served by a partial error than by none.
  if (payload.is_object()) {
    const auto code = payload.find("code");
    if (code != payload.end() && code->is_string()) {
      const auto text = payload.find("message");
      return {
          parse_errc(code->get_ref<const std::string&>()),
          text != payload.end() && text->is_string() ? text->get<std::string>() : std::string()};
    }
  }
  return {errc::internal, "malformed error reply: the payload has no \"code\" string"};
}

json to_json(const message& m) {
  json j = json::object();
  j["id"] = format_id(m.id);
  j["type"] = m.type;
  j["sender"] = m.sender;
  j["recipient"] = m.recipient;
  j["topic"] = m.topic;
  j["correlation_id"] = format_id(m.correlation_id);
  j["reply_to"] = m.reply_to;
  j["created_at"] = format_time(m.created_at);
  j["headers"] = m.headers;
  j["payload"] = m.payload;
  return j;
}

result<message> message_from_json(const json& j) {
  try {
    message m;
    if (auto e = read_message(j, m)) return *e;
    return m;
  } catch (const nlohmann::json::exception& e) {
    return aise::error{errc::invalid_argument, std::string("message: ") + e.what()};
  } catch (const std::exception& e) {
    return aise::error{errc::internal, std::string("message: ") + e.what()};
  }
}

std::string format_id(std::uint64_t id) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(16, '0');
  for (auto it = out.rbegin(); it != out.rend(); ++it) {
    *it = digits[id & 0xfU];
    id >>= 4U;
  }
  return out;
}

bool parse_id(const std::string& text, std::uint64_t& out) noexcept {
  if (text.empty() || text.size() > 16) return false;
  std::uint64_t value = 0;
  for (const char c : text) {
    unsigned digit = 0;
    if (c >= '0' && c <= '9') {
      digit = static_cast<unsigned>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      digit = static_cast<unsigned>(c - 'a' + 10);
    } else if (c >= 'A' && c <= 'F') {
      digit = static_cast<unsigned>(c - 'A' + 10);
    } else {
      return false;
    }
    value = (value << 4U) | digit;
  }
  out = value;
  return true;
}

}  // namespace aise
