#include <aise/task.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "json_fields.hpp"

namespace aise {

namespace {

using json = nlohmann::json;

constexpr task_state all_states[] = {
    task_state::pending, task_state::queued,    task_state::running,  task_state::succeeded,
    task_state::failed,  task_state::cancelled, task_state::retrying, task_state::awaiting_approval,
};

using detail::field_error;
using detail::find_field;
using detail::read_string;
using detail::read_time;

std::optional<aise::error> read_integer(const json& j, std::string_view prefix, const char* key,
                                        std::int64_t min, std::int64_t max,
                                        std::string_view expected, std::int64_t& out) {
  const json* v = find_field(j, key);
  if (v == nullptr) return std::nullopt;
  const std::string message = "expected " + std::string(expected);
  if (!v->is_number_integer()) return field_error(prefix, key, message);
  if (v->is_number_unsigned() &&
      v->get<std::uint64_t>() >
          static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    return field_error(prefix, key, message);
  }
  const auto value = v->get<std::int64_t>();
  if (value < min || value > max) return field_error(prefix, key, message);
  out = value;
  return std::nullopt;
}

std::optional<aise::error> read_int(const json& j, std::string_view prefix, const char* key,
                                    int min, std::string_view expected, int& out) {
  std::int64_t value = out;
  if (auto e =
          read_integer(j, prefix, key, min, std::numeric_limits<int>::max(), expected, value)) {
    return e;
  }
  out = static_cast<int>(value);
  return std::nullopt;
}

std::optional<aise::error> read_bool(const json& j, std::string_view prefix, const char* key,
                                     bool& out) {
  const json* v = find_field(j, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) return field_error(prefix, key, "expected true or false");
  out = v->get<bool>();
  return std::nullopt;
}

std::optional<aise::error> read_ids(const json& j, std::string_view prefix, const char* key,
                                    std::vector<std::string>& out) {
  const json* v = find_field(j, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_array()) return field_error(prefix, key, "expected an array of task ids");
  std::vector<std::string> ids;
  for (std::size_t i = 0; i < v->size(); ++i) {
    const json& id = (*v)[i];
    if (!id.is_string() || id.get_ref<const std::string&>().empty()) {
      return field_error(prefix, std::string(key) + "[" + std::to_string(i) + "]",
                         "expected a non-empty string");
    }
    ids.push_back(id.get<std::string>());
  }
  out = std::move(ids);
  return std::nullopt;
}

// Reads {"code", "message"} at `path` (e.g. "task.error") into `out`.
std::optional<aise::error> read_error(const json& j, std::string_view path, aise::error& out) {
  if (!j.is_object()) {
    return field_error(path, "", R"(expected an object with "code" and "message")");
  }
  const std::string p = std::string(path) + ".";
  std::string code;
  std::string message;
  if (auto e = read_string(j, p, "code", code)) return e;
  if (code.empty()) return field_error(p, "code", "missing or empty");
  if (auto e = read_string(j, p, "message", message)) return e;
  out = aise::error{parse_errc(code), std::move(message)};
  return std::nullopt;
}

std::optional<aise::error> read_spec(const json& j, task_spec& s) {
  constexpr std::string_view p = "task.";
  if (!j.is_object()) return field_error("task", "", "expected a JSON object");

  if (auto e = read_string(j, p, "kind", s.kind)) return e;
  if (s.kind.empty()) return field_error(p, "kind", "missing or empty");
  if (auto e = read_string(j, p, "id", s.id)) return e;
  if (auto e = read_string(j, p, "project", s.project)) return e;
  if (s.project.empty()) return field_error(p, "project", "must not be empty when given");
  if (auto e = read_string(j, p, "capability", s.capability)) return e;
  if (auto e = read_string(j, p, "description", s.description)) return e;
  if (auto e = read_string(j, p, "parent", s.parent)) return e;
  if (auto e =
          read_int(j, p, "priority", std::numeric_limits<int>::min(), "an integer", s.priority)) {
    return e;
  }
  if (auto e = read_int(j, p, "max_attempts", 1, "an integer >= 1", s.max_attempts)) return e;
  if (auto e = read_bool(j, p, "requires_approval", s.requires_approval)) return e;
  if (auto e = read_ids(j, p, "depends_on", s.depends_on)) return e;
  if (auto e = read_time(j, p, "deadline", s.deadline)) return e;

  // Bounded so that the conversion to nanoseconds cannot overflow.
  constexpr std::int64_t max_timeout_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(duration::max()).count();
  std::int64_t timeout_ms = 0;
  if (auto e = read_integer(j, p, "timeout_ms", 1, max_timeout_ms, "an integer > 0", timeout_ms)) {
    return e;
  }
  if (timeout_ms > 0) s.timeout = std::chrono::milliseconds(timeout_ms);

  if (const json* v = find_field(j, "on_dependency_failure")) {
    if (*v == "cancel") {
      s.on_dependency_failure = dependency_failure_policy::cancel;
    } else if (*v == "fail") {
      s.on_dependency_failure = dependency_failure_policy::fail;
    } else {
      return field_error(p, "on_dependency_failure", R"(expected "cancel" or "fail")");
    }
  }

  if (const json* v = find_field(j, "payload")) s.payload = *v;
  return std::nullopt;
}

std::optional<aise::error> read_task_fields(const json& j, task& t) {
  constexpr std::string_view p = "task.";
  std::string state;
  if (auto e = read_string(j, p, "state", state)) return e;
  if (state.empty()) return field_error(p, "state", "missing or empty");
  auto parsed = parse_task_state(state);
  if (!parsed) return field_error(p, "state", parsed.error().message());
  t.state = *parsed;

  if (auto e = read_int(j, p, "attempt", 0, "an integer >= 0", t.attempt)) return e;
  if (auto e = read_string(j, p, "agent", t.agent)) return e;
  if (auto e = read_time(j, p, "created_at", t.created_at)) return e;
  if (auto e = read_time(j, p, "updated_at", t.updated_at)) return e;
  if (auto e = read_time(j, p, "not_before", t.not_before)) return e;

  if (const json* v = find_field(j, "version")) {
    if (!v->is_number_unsigned() && !(v->is_number_integer() && v->get<std::int64_t>() >= 0)) {
      return field_error(p, "version", "expected an integer >= 0");
    }
    t.version = v->get<std::uint64_t>();
  }

  // A succeeded task whose handler returned null keeps an engaged (null)
  // result; for any other state a null result means "none".
  if (const auto it = j.find("result");
      it != j.end() && (!it->is_null() || t.state == task_state::succeeded)) {
    t.result = *it;
  }

  if (const json* v = find_field(j, "error")) {
    aise::error e;
    if (auto bad = read_error(*v, "task.error", e)) return bad;
    t.error = std::move(e);
  }
  return std::nullopt;
}

const char* to_string(dependency_failure_policy p) {
  return p == dependency_failure_policy::fail ? "fail" : "cancel";
}

json time_or_null(const std::optional<time_point>& t) {
  return t ? json(format_time(*t)) : json(nullptr);
}

json error_or_null(const std::optional<aise::error>& e) {
  return e ? to_json(*e) : json(nullptr);
}

// Turns the exceptions nlohmann::json can throw (and bad_alloc) into values:
// these parsers are called from handlers that must not throw.
template <class Fn>
auto guarded(std::string_view what, Fn&& fn) noexcept -> decltype(fn()) {
  try {
    return fn();
  } catch (const nlohmann::json::exception& e) {
    return aise::error{errc::invalid_argument, std::string(what) + ": " + e.what()};
  } catch (const std::exception& e) {
    return aise::error{errc::internal, std::string(what) + ": " + e.what()};
  }
}

}  // namespace

std::string_view to_string(task_state s) noexcept {
  switch (s) {
    case task_state::pending:
      return "pending";
    case task_state::queued:
      return "queued";
    case task_state::running:
      return "running";
    case task_state::succeeded:
      return "succeeded";
    case task_state::failed:
      return "failed";
    case task_state::cancelled:
      return "cancelled";
    case task_state::retrying:
      return "retrying";
    case task_state::awaiting_approval:
      return "awaiting_approval";
  }
  return "unknown";
}

result<task_state> parse_task_state(std::string_view name) {
  for (const task_state s : all_states) {
    if (to_string(s) == name) return s;
  }
  return fail(errc::invalid_argument, "unknown task state \"" + std::string(name) + "\"");
}

bool is_terminal(task_state s) noexcept {
  return s == task_state::succeeded || s == task_state::failed || s == task_state::cancelled;
}

bool can_transition(task_state from, task_state to) noexcept {
  using enum task_state;
  switch (from) {
    case pending:
      return to == queued || to == awaiting_approval || to == cancelled || to == failed;
    case awaiting_approval:
      return to == queued || to == cancelled || to == failed;
    case queued:
      return to == running || to == awaiting_approval || to == cancelled || to == failed;
    case running:
      return to == succeeded || to == failed || to == cancelled || to == retrying ||
             to == awaiting_approval;
    case retrying:
      return to == queued || to == cancelled || to == failed;
    case succeeded:
    case failed:
    case cancelled:
      return false;
  }
  return false;
}

result<void> check_transition(task_state from, task_state to) {
  if (can_transition(from, to)) return ok();
  return fail(errc::illegal_transition, "illegal task transition: " + std::string(to_string(from)) +
                                            " -> " + std::string(to_string(to)));
}

json to_json(const aise::error& e) {
  return {{"code", std::string(to_string(e.code()))}, {"message", e.message()}};
}

json to_json(const task& t) {
  json j = json::object();
  j["id"] = t.id;
  j["project"] = t.project;
  j["kind"] = t.kind;
  j["capability"] = t.capability;
  j["description"] = t.description;
  j["priority"] = t.priority;
  j["payload"] = t.payload;
  j["depends_on"] = t.depends_on;
  j["max_attempts"] = t.max_attempts;
  // Rounded up so that a sub-millisecond timeout does not read back as "none".
  j["timeout_ms"] = t.timeout
                        ? json(std::chrono::ceil<std::chrono::milliseconds>(*t.timeout).count())
                        : json(nullptr);
  j["deadline"] = time_or_null(t.deadline);
  j["requires_approval"] = t.requires_approval;
  j["on_dependency_failure"] = to_string(t.on_dependency_failure);
  j["parent"] = t.parent;
  j["state"] = std::string(to_string(t.state));
  j["attempt"] = t.attempt;
  j["agent"] = t.agent;
  j["result"] = t.result ? *t.result : json(nullptr);
  j["error"] = error_or_null(t.error);
  j["created_at"] = format_time(t.created_at);
  j["updated_at"] = format_time(t.updated_at);
  j["not_before"] = format_time(t.not_before);
  j["version"] = t.version;
  return j;
}

json to_json(const task_attempt& a) {
  json j = json::object();
  j["task_id"] = a.task_id;
  j["number"] = a.number;
  j["agent"] = a.agent;
  j["started_at"] = format_time(a.started_at);
  j["finished_at"] = time_or_null(a.finished_at);
  j["outcome"] = std::string(to_string(a.outcome));
  j["error"] = error_or_null(a.error);
  return j;
}

result<task_spec> task_spec_from_json(const json& j) {
  return guarded("task", [&]() -> result<task_spec> {
    task_spec s;
    if (auto e = read_spec(j, s)) return *e;
    return s;
  });
}

result<task> task_from_json(const json& j) {
  return guarded("task", [&]() -> result<task> {
    task t;
    if (auto e = read_spec(j, t)) return *e;
    if (auto e = read_task_fields(j, t)) return *e;
    return t;
  });
}

result<void> error_from_json(const json& j, aise::error& out) {
  try {
    if (auto e = read_error(j, "error", out)) return *e;
    return ok();
  } catch (const std::exception& e) {
    return aise::error{errc::internal, e.what()};
  }
}

errc parse_errc(std::string_view name) noexcept {
  for (int i = 0; i <= static_cast<int>(errc::internal); ++i) {
    const auto code = static_cast<errc>(i);
    if (to_string(code) == name) return code;
  }
  return errc::internal;
}

}  // namespace aise
