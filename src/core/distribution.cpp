// JSON forms of the distribution seam's messages (include/aise/distribution.hpp).
#include <aise/distribution.hpp>

#include <exception>
#include <fmt/format.h>
#include <string>

namespace aise {

using json = nlohmann::json;

namespace {

error malformed(std::string_view what, std::string_view why) {
  return error(errc::invalid_argument, fmt::format("malformed {}: {}", what, why));
}

}  // namespace

json to_json(const task_handoff& h) {
  json deps = json::object();
  for (const auto& [id, value] : h.dependency_results) deps[id] = value;
  return {{"task", to_json(h.task)}, {"dependency_results", std::move(deps)}};
}

result<task_handoff> task_handoff_from_json(const json& j) {
  if (!j.is_object()) return malformed("task hand-off", "not an object");
  auto t = j.find("task");
  if (t == j.end()) return malformed("task hand-off", "no 'task'");
  auto parsed = task_from_json(*t);
  if (!parsed) return malformed("task hand-off", parsed.error().message());
  task_handoff h;
  h.task = std::move(parsed.value());
  if (h.task.state != task_state::running || h.task.attempt < 1) {
    return malformed("task hand-off",
                     fmt::format("task {} is {} attempt {}, not a running attempt", h.task.id,
                                 to_string(h.task.state), h.task.attempt));
  }
  auto d = j.find("dependency_results");
  if (d != j.end() && !d->is_null()) {
    if (!d->is_object()) return malformed("task hand-off", "'dependency_results' is not an object");
    for (const auto& [id, value] : d->items()) h.dependency_results.emplace(id, value);
  }
  return h;
}

json to_json(const task_outcome& o) {
  json j = json::object();
  j["task"] = o.task_id;
  j["attempt"] = o.attempt;
  j["worker"] = o.worker;
  j["agent"] = o.agent;
  j["state"] = std::string(to_string(o.state));
  j["result"] = o.result ? *o.result : json(nullptr);
  j["error"] = o.error ? to_json(*o.error) : json(nullptr);
  j["retryable"] = o.retryable;
  return j;
}

result<task_outcome> task_outcome_from_json(const json& j) {
  try {
    if (!j.is_object()) return malformed("task outcome", "not an object");
    task_outcome o;
    o.task_id = j.at("task").get<std::string>();
    o.attempt = j.at("attempt").get<int>();
    o.worker = j.value("worker", std::string());
    o.agent = j.value("agent", std::string());
    auto state = parse_task_state(j.at("state").get<std::string>());
    if (!state) return malformed("task outcome", state.error().message());
    o.state = *state;
    if (o.state != task_state::succeeded && o.state != task_state::failed &&
        o.state != task_state::awaiting_approval) {
      return malformed("task outcome",
                       fmt::format("state {} is not an outcome", to_string(o.state)));
    }
    if (o.task_id.empty() || o.attempt < 1) return malformed("task outcome", "no task or attempt");
    if (auto r = j.find("result"); r != j.end() && o.state == task_state::succeeded) o.result = *r;
    if (auto e = j.find("error"); e != j.end() && !e->is_null()) {
      aise::error err;
      if (auto read = error_from_json(*e, err); !read) {
        return malformed("task outcome", read.error().message());
      }
      o.error = std::move(err);
    }
    if (o.state != task_state::succeeded && !o.error) {
      return malformed("task outcome", "a failed or escalated outcome needs an error");
    }
    o.retryable = j.value("retryable", true);
    return o;
  } catch (const std::exception& e) {
    return malformed("task outcome", e.what());
  }
}

}  // namespace aise
