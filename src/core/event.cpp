#include <aise/event.hpp>

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace aise {

namespace {

using json = nlohmann::json;

aise::error field_error(std::string_view field, std::string_view what) {
  std::string text("event.");
  text += field;
  text += ": ";
  text += what;
  return {errc::invalid_argument, std::move(text)};
}

const json* find_field(const json& j, const char* key) {
  const auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

std::optional<aise::error> read_string(const json& j, const char* key, std::string& out) {
  const json* v = find_field(j, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) return field_error(key, "expected a string");
  out = v->get_ref<const std::string&>();
  return std::nullopt;
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
  if (const json* v = find_field(j, "at")) {
    if (!v->is_string() || !parse_time(v->get_ref<const std::string&>(), e.at)) {
      return field_error("at", R"(expected an RFC 3339 UTC time such as "2026-01-01T00:00:00Z")");
    }
  }
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
