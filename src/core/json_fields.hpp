#pragma once
// Reading fields of JSON objects with errors that name the field, shared by
// the from_json parsers (message, task, event). Absent and null both mean
// "not given": clients in other languages often send explicit nulls, and
// to_json writes them for empty optionals. Errors read
// "<prefix><field>: <what>", e.g. "task.timeout_ms: expected an integer > 0",
// so a REST client can point at the offending input.

#include <aise/clock.hpp>
#include <aise/error.hpp>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace aise::detail {

inline aise::error field_error(std::string_view prefix, std::string_view field,
                               std::string_view what) {
  std::string text(prefix);
  text += field;
  text += ": ";
  text += what;
  return {errc::invalid_argument, std::move(text)};
}

inline const nlohmann::json* find_field(const nlohmann::json& j, const char* key) {
  const auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

inline std::optional<aise::error> read_string(const nlohmann::json& j, std::string_view prefix,
                                              const char* key, std::string& out) {
  const nlohmann::json* v = find_field(j, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) return field_error(prefix, key, "expected a string");
  out = v->get_ref<const std::string&>();
  return std::nullopt;
}

inline std::optional<aise::error> read_time(const nlohmann::json& j, std::string_view prefix,
                                            const char* key, std::optional<time_point>& out) {
  const nlohmann::json* v = find_field(j, key);
  if (v == nullptr) return std::nullopt;
  time_point t;
  if (!v->is_string() || !parse_time(v->get_ref<const std::string&>(), t)) {
    return field_error(prefix, key,
                       R"(expected an RFC 3339 UTC time such as "2026-01-01T00:00:00Z")");
  }
  out = t;
  return std::nullopt;
}

inline std::optional<aise::error> read_time(const nlohmann::json& j, std::string_view prefix,
                                            const char* key, time_point& out) {
  std::optional<time_point> t;
  if (auto e = read_time(j, prefix, key, t)) return e;
  if (t) out = *t;
  return std::nullopt;
}

}  // namespace aise::detail
