#include <aise/event.hpp>

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "json_fields.hpp"

namespace aise {

namespace {

using json = nlohmann::json;

constexpr std::string_view prefix = "event.";

aise::error field_error(std::string_view field, std::string_view what) {
  return detail::field_error(prefix, field, what);
}

using detail::find_field;

std::optional<aise::error> read_string(const json& j, const char* key, std::string& out) {
  return detail::read_string(j, prefix, key, out);
}

std::optional<aise::error> read_event(const json& j, event& e) {
  if (!j.is_object()) return aise::error{errc::invalid_argument, "event: expected a JSON object"};

  if (auto bad = read_string(j, "project", e.project)) return bad;
  if (e.project.empty()) return field_error("project", "missing or empty");
  if (auto bad = read_string(j, "type", e.type)) return bad;
  if (e.type.empty()) return field_error("type", "missing or empty");
  if (auto bad = read_string(j, "subject", e.subject)) return bad;

  if (const json* v = find_field(j, "sequence")) {
    if (!v->is_number_unsigned() && !(v->is_number_integer() && v->get<std::int64_t>() >= 0)) {
      return field_error("sequence", "expected an integer >= 0");
    }
    e.sequence = v->get<std::uint64_t>();
  }
  if (auto bad = detail::read_time(j, prefix, "at", e.at)) return bad;
  if (const auto it = j.find("data"); it != j.end()) e.data = *it;
  return std::nullopt;
}

}  // namespace

json to_json(const event& e) {
  json j = json::object();
  j["sequence"] = e.sequence;
  j["project"] = e.project;
  j["type"] = e.type;
  j["subject"] = e.subject;
  j["at"] = format_time(e.at);
  j["data"] = e.data;
  return j;
}

result<event> event_from_json(const json& j) {
  try {
    event e;
    if (auto bad = read_event(j, e)) return *bad;
    return e;
  } catch (const nlohmann::json::exception& ex) {
    return aise::error{errc::invalid_argument, std::string("event: ") + ex.what()};
  } catch (const std::exception& ex) {
    return aise::error{errc::internal, std::string("event: ") + ex.what()};
  }
}

}  // namespace aise
