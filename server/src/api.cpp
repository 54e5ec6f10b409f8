#include "api.hpp"

#include <aise/clock.hpp>
#include <aise/event.hpp>
#include <aise/metrics.hpp>
#include <aise/runtime.hpp>
#include <aise/store.hpp>
#include <aise/task.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <exception>
#include <map>
#include <optional>

#include "embedded.hpp"
#include "web.hpp"

namespace aise::server {

namespace {

using json = nlohmann::json;

// Invalid UTF-8 (an id taken from a percent-decoded path, echoed in a
// message) is replaced rather than thrown on.
std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

response json_response(int status, const json& j) {
  return {status, dump(j), {}};
}

// A client's mistake found deep in a handler: thrown, caught in
// `api::handle` (and nowhere else) and sent as the response it carries.
struct client_error {
  response res;
};

[[noreturn]] void reject_with(int status, std::string_view code, std::string_view message,
                              json details = nullptr) {
  throw client_error{error_response(status, code, message, std::move(details))};
}

[[noreturn]] void reject_with(const aise::error& e) {
  throw client_error{error_response(e)};
}

template <class T>
T take(result<T> r) {
  if (!r) reject_with(r.error());
  return std::move(r).value();
}

void take(const result<void>& r) {
  if (!r) reject_with(r.error());
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes %XX escapes (and '+' as a space in queries); nullopt on a bad escape.
std::optional<std::string> percent_decode(std::string_view in, bool plus_is_space) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return std::nullopt;
      int hi = hex_value(in[i + 1]);
      int lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

struct call {
  const request& req;
  orchestrator& orch;
  authenticator& auth;
  const api_options& options;
  artifact_store* artifacts;        // null: none configured
  upload_start* upload;             // set by begin_upload: the body is streamed into a sink
  std::vector<std::string> params;  // the {…} segments of the route, in order
  std::multimap<std::string, std::string, std::less<>> query;
  const principal* who = nullptr;   // set for every route that is not public
  std::optional<task> scoped_task;  // a task route's task, read for its access check

  [[nodiscard]] store& db() const { return orch.store(); }
  [[nodiscard]] actor_info actor() const {
    return {who != nullptr ? who->user.username : std::string(), req.remote};
  }

  [[nodiscard]] std::optional<std::string> query_value(std::string_view name) const {
    auto it = query.find(name);
    if (it == query.end()) return std::nullopt;
    return it->second;
  }
};

// ---- request bodies ----

// The body as a JSON object; an empty body counts as {} when allowed.
json body_object(const call& c, bool empty_is_object) {
  if (c.req.body.empty() && empty_is_object) return json::object();
  json j = json::parse(c.req.body, nullptr, false);
  if (j.is_discarded()) reject_with(400, "bad_json", "request body is not valid JSON");
  if (!j.is_object()) {
    reject_with(400, "invalid_argument", "request body must be a JSON object",
                {{"type", j.type_name()}});
  }
  return j;
}

// An optional string field: absent or null gives nullopt.
std::optional<std::string> string_field(const json& body, const char* name,
                                        std::size_t max_length) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) {
    reject_with(400, "invalid_argument", std::string("field '") + name + "' must be a string",
                {{"field", name}, {"type", it->type_name()}});
  }
  auto s = it->get<std::string>();
  if (s.size() > max_length) {
    reject_with(400, "invalid_argument",
                std::string("field '") + name + "' is longer than " + std::to_string(max_length),
                {{"field", name}, {"max_length", max_length}});
  }
  return s;
}

std::optional<json> object_field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_object()) {
    reject_with(400, "invalid_argument", std::string("field '") + name + "' must be an object",
                {{"field", name}, {"type", it->type_name()}});
  }
  return *it;
}

bool id_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == ':';
}

// Ids a client chooses: 1 … max_id_length characters of [A-Za-z0-9._:-].
void check_id(const call& c, const std::string& id, const char* field) {
  if (id.empty() || id.size() > c.options.max_id_length ||
      !std::all_of(id.begin(), id.end(), id_char)) {
    reject_with(400, "invalid_argument",
                std::string("field '") + field + "' must be 1 to " +
                    std::to_string(c.options.max_id_length) + " characters of [A-Za-z0-9._:-]",
                {{"field", field}});
  }
}

// ---- query parameters ----

std::uint64_t number_param(const call& c, std::string_view name, std::uint64_t fallback,
                           std::uint64_t min, std::uint64_t max) {
  auto v = c.query_value(name);
  if (!v) return fallback;
  std::uint64_t n = 0;
  auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (ec != std::errc{} || end != v->data() + v->size() || v->empty() || n < min || n > max) {
    reject_with(400, "invalid_argument",
                "query parameter '" + std::string(name) + "' must be an integer from " +
                    std::to_string(min) + " to " + std::to_string(max),
                {{"parameter", name}});
  }
  return n;
}

std::size_t page_limit(const call& c) {
  return static_cast<std::size_t>(
      number_param(c, "limit", c.options.default_page_size, 1, c.options.max_page_size));
}

json next_or_null(const std::string& cursor) {
  return cursor.empty() ? json(nullptr) : json(cursor);
}

// ---- JSON forms ----

json project_json(const project& p) {
  return {{"id", p.id},
          {"name", p.name},
          {"description", p.description},
          {"metadata", p.metadata},
          {"archived", p.archived},
          {"created_at", format_time(p.created_at)},
          {"updated_at", format_time(p.updated_at)}};
}

// The library's task form plus the two field names the FastAPI peer uses.
json task_json(const task& t) {
  json j = to_json(t);
  j["project_id"] = t.project;
  j["status"] = std::string(to_string(t.state));
  return j;
}

json agent_record_json(const agent_record& a) {
  return {{"name", a.id},
          {"kind", a.kind},
          {"project", a.project},
          {"status", a.status},
          {"capabilities", a.capabilities},
          {"restarts", a.restarts},
          {"running_tasks", nullptr},
          {"concurrency", nullptr},
          {"last_heartbeat",
           a.last_heartbeat == time_point{} ? json(nullptr) : json(format_time(a.last_heartbeat))}};
}

json agent_status_json(const agent_status& a, const std::optional<agent_record>& stored) {
  return {{"name", a.name},
          {"kind", a.kind},
          {"project", a.project},
          {"status", a.status},
          {"capabilities", a.capabilities},
          {"restarts", a.restarts},
          {"running_tasks", a.running_tasks},
          {"concurrency", a.concurrency},
          {"last_heartbeat", stored && stored->last_heartbeat != time_point{}
                                 ? json(format_time(stored->last_heartbeat))
                                 : json(nullptr)}};
}

// ---- handlers ----

response healthz(const call&) {
  return json_response(200, {{"status", "ok"}});
}

response readyz(const call& c) {
  auto probe = c.db().list_projects("", 1);
  if (!probe && probe.error().code() == errc::unavailable) {
    return error_response(503, "unavailable", "the store is not reachable",
                          {{"store", c.db().backend()}, {"reason", probe.error().message()}});
  }
  take(std::move(probe));
  return json_response(200, {{"status", "ready"}, {"store", c.db().backend()}});
}

project existing_project(const call& c, const std::string& id) {
  return take(c.db().get_project(id));
}

response create_project(const call& c) {
  json body = body_object(c, false);
  project p;
  auto name = string_field(body, "name", 200);
  if (!name || name->empty()) {
    reject_with(400, "invalid_argument", "field 'name' is required and must not be empty",
                {{"field", "name"}});
  }
  p.name = std::move(*name);
  p.description = string_field(body, "description", 10000).value_or("");
  if (auto m = object_field(body, "metadata")) p.metadata = std::move(*m);
  if (auto id = string_field(body, "id", c.options.max_id_length)) {
    check_id(c, *id, "id");
    p.id = std::move(*id);
  } else {
    p.id = c.orch.rt().make_id("p");
  }
  auto created = take(c.db().create_project(std::move(p)));
  // The creator administers the project (a global admin has every role anyway).
  if (!c.who->user.global_admin) {
    take(c.auth.set_role(c.who->user.id, created.id, project_role::admin, c.actor()));
  }
  return json_response(201, project_json(created));
}

response list_projects(const call& c) {
  auto limit = page_limit(c);
  if (!c.who->user.global_admin) {
    // The caller's own projects, in id order like the store's pages.
    auto cursor = c.query_value("cursor").value_or("");
    json items = json::array();
    std::string next;
    for (auto it = c.who->roles.upper_bound(cursor); it != c.who->roles.end(); ++it) {
      if (items.size() == limit) {
        next = items.back()["id"].get<std::string>();
        break;
      }
      auto p = c.db().get_project(it->first);
      if (!p && p.error().code() == errc::not_found) continue;  // a role outliving its project
      items.push_back(project_json(take(std::move(p))));
    }
    return json_response(200, {{"items", std::move(items)}, {"next", next_or_null(next)}});
  }
  auto page = take(c.db().list_projects(c.query_value("cursor").value_or(""), limit));
  json items = json::array();
  for (const auto& p : page.items) items.push_back(project_json(p));
  return json_response(200,
                       {{"items", std::move(items)}, {"next", next_or_null(page.next_cursor)}});
}

response get_project(const call& c) {
  return json_response(200, project_json(existing_project(c, c.params[0])));
}

response update_project(const call& c) {
  json body = body_object(c, false);
  project p = existing_project(c, c.params[0]);
  if (p.archived) {
    reject_with(409, "conflict", "project " + p.id + " is archived", {{"project", p.id}});
  }
  if (auto name = string_field(body, "name", 200)) {
    if (name->empty()) {
      reject_with(400, "invalid_argument", "field 'name' must not be empty", {{"field", "name"}});
    }
    p.name = std::move(*name);
  }
  if (auto d = string_field(body, "description", 10000)) p.description = std::move(*d);
  if (auto m = object_field(body, "metadata")) p.metadata = std::move(*m);
  p.updated_at = time_point{};  // the store's clock fills it in
  return json_response(200, project_json(take(c.db().update_project(std::move(p)))));
}

response archive_project(const call& c) {
  project p = existing_project(c, c.params[0]);
  if (p.archived) return json_response(200, project_json(p));  // idempotent
  p.archived = true;
  p.updated_at = time_point{};
  return json_response(200, project_json(take(c.db().update_project(std::move(p)))));
}

response create_task(const call& c) {
  json body = body_object(c, false);
  project p = existing_project(c, c.params[0]);
  if (p.archived) {
    reject_with(409, "conflict", "project " + p.id + " is archived; it takes no new tasks",
                {{"project", p.id}});
  }
  if (auto in_body = string_field(body, "project", c.options.max_id_length);
      in_body && *in_body != p.id) {
    reject_with(400, "invalid_argument", "field 'project' differs from the project in the path",
                {{"field", "project"}});
  }
  task_spec spec = take(task_spec_from_json(body));
  if (!spec.id.empty()) check_id(c, spec.id, "id");
  spec.project = p.id;
  auto id = take(c.orch.submit(std::move(spec)));
  return json_response(201, task_json(take(c.orch.get(id))));
}

std::vector<task_state> state_filter(const call& c) {
  std::vector<task_state> states;
  for (std::string_view name : {"status", "state"}) {
    auto [lo, hi] = c.query.equal_range(name);
    for (auto it = lo; it != hi; ++it) {
      std::string_view list = it->second;
      while (!list.empty()) {
        auto comma = list.find(',');
        auto item = list.substr(0, comma);
        auto s = parse_task_state(item);
        if (!s) {
          reject_with(400, "invalid_argument", "unknown task state '" + std::string(item) + "'",
                      {{"parameter", name}});
        }
        states.push_back(*s);
        list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
      }
    }
  }
  return states;
}

response list_tasks(const call& c) {
  task_filter f;
  f.project = existing_project(c, c.params[0]).id;
  f.states = state_filter(c);
  f.capability = c.query_value("capability").value_or("");
  f.after = c.query_value("cursor").value_or("");
  f.limit = page_limit(c);
  auto page = take(c.db().list_tasks(f));
  json items = json::array();
  for (const auto& t : page.items) items.push_back(task_json(t));
  return json_response(200,
                       {{"items", std::move(items)}, {"next", next_or_null(page.next_cursor)}});
}

response get_task(const call& c) {
  if (c.scoped_task) return json_response(200, task_json(*c.scoped_task));
  return json_response(200, task_json(take(c.orch.get(c.params[0]))));
}

response cancel_task(const call& c) {
  json body = body_object(c, true);
  auto reason = string_field(body, "reason", 10000).value_or("cancelled by request");
  take(c.orch.cancel(c.params[0], std::move(reason)));
  return json_response(200, task_json(take(c.orch.get(c.params[0]))));
}

// POST /api/v1/tasks/{id}/retry: a failed or cancelled task runs again as a
// new task (orchestrator::retry); 201 with the new task and `retry_of`.
response retry_task(const call& c) {
  auto id = take(c.orch.retry(c.params[0]));
  json j = task_json(take(c.orch.get(id)));
  j["retry_of"] = c.params[0];
  auto res = json_response(201, j);
  res.headers.emplace_back("Location", "/api/v1/tasks/" + id);
  return res;
}

response approve_task(const call& c) {
  json body = body_object(c, true);
  auto by = string_field(body, "by", 200).value_or("");
  take(c.orch.approve(c.params[0], std::move(by)));
  return json_response(200, task_json(take(c.orch.get(c.params[0]))));
}

response reject_task(const call& c) {
  json body = body_object(c, true);
  auto by = string_field(body, "by", 200).value_or("");
  auto reason = string_field(body, "reason", 10000).value_or("");
  take(c.orch.reject(c.params[0], std::move(by), std::move(reason)));
  return json_response(200, task_json(take(c.orch.get(c.params[0]))));
}

response task_attempts(const call& c) {
  json items = json::array();
  for (const auto& a : take(c.db().list_attempts(c.params[0]))) items.push_back(to_json(a));
  return json_response(200, {{"items", std::move(items)}});
}

response project_events(const call& c) {
  const auto id = existing_project(c, c.params[0]).id;
  auto after = number_param(c, "after", 0, 0, UINT64_MAX);
  auto limit = page_limit(c);
  auto events = take(c.db().read_events(id, after, limit));
  json items = json::array();
  for (const auto& e : events) items.push_back(to_json(e));
  json next = events.size() == limit ? json(std::to_string(events.back().sequence)) : json(nullptr);
  return json_response(200, {{"items", std::move(items)}, {"next", std::move(next)}});
}

response agent_kinds(const call& c) {
  return json_response(200, {{"items", c.orch.kinds()}});
}

// Agents of projects the caller may not see are left out of listings and
// answered 404 by name, like ones that do not exist.
bool sees(const call& c, const std::string& project) {
  return c.who->can(project, project_role::viewer);
}

response list_agents(const call& c) {
  auto project = c.query_value("project").value_or("");
  // The store knows agents of earlier runs and of worker processes; the
  // orchestrator knows the live state of the ones it supervises.
  std::map<std::string, json> by_name;
  std::map<std::string, agent_record> stored;
  for (auto& a : take(c.db().list_agents(project))) {
    if (!sees(c, a.project)) continue;
    by_name[a.id] = agent_record_json(a);
    stored.emplace(a.id, std::move(a));
  }
  for (const auto& a : c.orch.agents()) {
    if (!project.empty() && a.project != project) continue;
    if (!sees(c, a.project)) continue;
    auto it = stored.find(a.name);
    by_name[a.name] = agent_status_json(
        a, it == stored.end() ? std::nullopt : std::optional<agent_record>(it->second));
  }
  json items = json::array();
  for (auto& [name, j] : by_name) items.push_back(std::move(j));
  return json_response(200, {{"items", std::move(items)}});
}

// The latest snapshot of an agent as {version, taken_at, state}, or null.
json snapshot_json(const call& c, const std::string& name) {
  auto snap = c.db().load_snapshot(name);
  if (!snap) {
    if (snap.error().code() == errc::not_found) return nullptr;
    reject_with(snap.error());
  }
  return {{"version", snap->version},
          {"taken_at", format_time(snap->taken_at)},
          {"state", snap->state}};
}

response get_agent(const call& c) {
  const auto& name = c.params[0];
  auto stored = c.db().get_agent(name);
  if (!stored && stored.error().code() != errc::not_found) reject_with(stored.error());
  std::optional<agent_record> record;
  if (stored) record = stored.value();
  if (auto live = c.orch.agent_info(name); live && sees(c, live->project)) {
    json j = agent_status_json(*live, record);
    j["snapshot"] = snapshot_json(c, name);
    return json_response(200, j);
  }
  if (record && sees(c, record->project)) {
    json j = agent_record_json(*record);
    j["snapshot"] = snapshot_json(c, name);
    return json_response(200, j);
  }
  reject_with(404, "not_found", "no agent '" + name + "'", {{"agent", name}});
}

// Throws unless the caller has at least `needed` in `project`: 404 with
// `hidden` when they have no role there (as if it did not exist), else 403.
void require_role(const call& c, const std::string& project, project_role needed,
                  const std::string& hidden) {
  auto role = c.who->role_in(project);
  if (role == project_role::none) reject_with(404, "not_found", hidden);
  if (role < needed) {
    reject_with(403, "forbidden",
                "this needs the role " + std::string(to_string(needed)) + " in project '" +
                    project + "'; yours is " + std::string(to_string(role)));
  }
}

// The project of agent `name` (live or stored); 404 when unknown.
std::string agent_project(const call& c, const std::string& name) {
  if (auto live = c.orch.agent_info(name)) return live->project;
  auto stored = c.db().get_agent(name);
  if (!stored && stored.error().code() == errc::not_found) {
    reject_with(404, "not_found", "no agent '" + name + "'", {{"agent", name}});
  }
  return take(std::move(stored)).project;
}

// POST /api/v1/agents {"kind", "name"?, "project"?, "concurrency"?}
response spawn_agent(const call& c) {
  json body = body_object(c, false);
  agent_spawn spec;
  auto kind = string_field(body, "kind", c.options.max_id_length);
  if (!kind || kind->empty()) {
    reject_with(400, "invalid_argument", "field 'kind' is required", {{"field", "kind"}});
  }
  spec.kind = std::move(*kind);
  if (auto name = string_field(body, "name", c.options.max_id_length)) {
    check_id(c, *name, "name");
    spec.name = std::move(*name);
  }
  bool named_project = false;
  if (auto project_id = string_field(body, "project", c.options.max_id_length)) {
    check_id(c, *project_id, "project");
    spec.project = std::move(*project_id);
    named_project = true;
  }
  require_role(c, spec.project, project_role::maintainer,
               "project '" + spec.project + "' not found");
  if (named_project) (void)existing_project(c, spec.project);
  if (auto it = body.find("concurrency"); it != body.end() && !it->is_null()) {
    if (!it->is_number_unsigned() || it->get<std::uint64_t>() > 1024) {
      reject_with(400, "invalid_argument", "field 'concurrency' must be an integer from 0 to 1024",
                  {{"field", "concurrency"}});
    }
    spec.concurrency = it->get<std::size_t>();
  }
  auto known = c.orch.kinds();
  if (std::find(known.begin(), known.end(), spec.kind) == known.end()) {
    reject_with(400, "invalid_argument", "no agent kind '" + spec.kind + "'",
                {{"field", "kind"}, {"kinds", known}});
  }
  std::string name = take(c.orch.spawn(std::move(spec)));
  auto res = json_response(201, agent_status_json(take(c.orch.agent_info(name)), std::nullopt));
  res.headers.emplace_back("Location", "/api/v1/agents/" + name);
  return res;
}

// The agent is known (agent_project found it) but the orchestrator has no
// live instance: stopped, or between the two halves of a restart: 409.
void take_live(const result<void>& r, const std::string& name) {
  if (!r && r.error().code() == errc::not_found) {
    reject_with(409, "conflict",
                "agent '" + name + "' is not running here (stopped, restarting or remote)",
                {{"agent", name}});
  }
  take(r);
}

// The agent's live status, or its stored record once it is gone.
response agent_now(const call& c, const std::string& name) {
  if (auto live = c.orch.agent_info(name)) {
    return json_response(200, agent_status_json(*live, std::nullopt));
  }
  auto stored = c.db().get_agent(name);
  if (stored) return json_response(200, agent_record_json(*stored));
  return json_response(200, {{"name", name}, {"status", "stopped"}});
}

response stop_agent(const call& c) {
  require_role(c, agent_project(c, c.params[0]), project_role::maintainer,
               "no agent '" + c.params[0] + "'");
  take_live(c.orch.stop_agent(c.params[0]), c.params[0]);
  return agent_now(c, c.params[0]);
}

response restart_agent(const call& c) {
  require_role(c, agent_project(c, c.params[0]), project_role::maintainer,
               "no agent '" + c.params[0] + "'");
  take_live(c.orch.restart_agent(c.params[0]), c.params[0]);
  return agent_now(c, c.params[0]);
}

// ---- artifacts ----

artifact_store& artifacts_of(const call& c) {
  if (c.artifacts == nullptr) {
    reject_with(503, "unavailable", "this server has no artifact store configured");
  }
  return *c.artifacts;
}

json artifact_json(const artifact_meta& a) {
  return {{"id", a.id},
          {"project", a.project},
          {"task", a.task.empty() ? json(nullptr) : json(a.task)},
          {"name", a.name},
          {"media_type", a.media_type},
          {"size", a.size},
          {"sha256", a.sha256},
          {"version", a.version},
          {"created_at", format_time(a.created_at)}};
}

// A library error of an artifact write: over the size limit is the
// client's 413, the rest as everywhere.
response artifact_write_error(const aise::error& e) {
  if (e.code() == errc::limit_exceeded) {
    return error_response(413, "payload_too_large", e.message());
  }
  return error_response(e);
}

response artifact_created(const artifact_meta& meta) {
  auto res = json_response(201, artifact_json(meta));
  res.headers.emplace_back("Location", "/api/v1/artifacts/" + meta.id);
  return res;
}

// Streams an upload into an artifact writer; committing makes it visible.
class artifact_sink final : public body_sink {
 public:
  explicit artifact_sink(artifact_writer writer) : writer_(std::move(writer)) {}
  result<void> write(std::string_view piece) override { return writer_.write(piece); }
  response finish() override {
    auto meta = writer_.commit();
    if (!meta) return artifact_write_error(meta.error());
    return artifact_created(*meta);
  }

 private:
  artifact_writer writer_;
};

// A media type as given in Content-Type: printable ASCII, bounded.
std::string media_type_of(const call& c) {
  auto given = c.req.header("content-type");
  if (!given || given->empty()) return "application/octet-stream";
  if (given->size() > 255 ||
      !std::all_of(given->begin(), given->end(), [](char ch) { return ch >= 0x20 && ch < 0x7f; })) {
    reject_with(400, "invalid_argument",
                "header 'Content-Type' must be at most 255 printable ASCII characters",
                {{"header", "Content-Type"}});
  }
  return std::string(*given);
}

// PUT /api/v1/projects/{id}/artifacts/{name}[?task=T]: a new version of
// `name`; the body is the content (streamed by the HTTP server).
response upload_artifact(const call& c) {
  artifact_store& store = artifacts_of(c);
  const std::string& name = c.params[1];
  if (name.size() > c.options.max_name_length) {
    reject_with(
        400, "invalid_argument",
        "an artifact name is at most " + std::to_string(c.options.max_name_length) + " bytes",
        {{"field", "name"}});
  }
  project p = existing_project(c, c.params[0]);
  if (p.archived) {
    reject_with(409, "conflict", "project " + p.id + " is archived", {{"project", p.id}});
  }
  artifact_spec spec;
  spec.project = p.id;
  spec.name = name;
  spec.media_type = media_type_of(c);
  if (auto task_id = c.query_value("task")) {
    check_id(c, *task_id, "task");
    task t = take(c.db().get_task(*task_id));
    if (t.project != p.id) {
      reject_with(400, "invalid_argument",
                  "task " + t.id + " belongs to project " + t.project + ", not " + p.id,
                  {{"parameter", "task"}});
    }
    spec.task = std::move(*task_id);
  }
  if (auto length = c.req.header("content-length"); length && store.options().max_size != 0) {
    std::uint64_t n = 0;
    auto [end, ec] = std::from_chars(length->data(), length->data() + length->size(), n);
    if (ec == std::errc{} && end == length->data() + length->size() &&
        n > store.options().max_size) {
      reject_with(
          413, "payload_too_large",
          "the artifact is larger than " + std::to_string(store.options().max_size) + " bytes",
          {{"limit", store.options().max_size}});
    }
  }
  artifact_writer writer = take(store.create(std::move(spec)));
  if (c.upload != nullptr) {
    c.upload->sink = std::make_unique<artifact_sink>(std::move(writer));
    return {};
  }
  if (auto written = writer.write(c.req.body); !written)
    return artifact_write_error(written.error());
  auto meta = writer.commit();
  if (!meta) return artifact_write_error(meta.error());
  return artifact_created(*meta);
}

response list_artifacts(const call& c) {
  artifact_store& store = artifacts_of(c);
  project p = existing_project(c, c.params[0]);
  auto limit = page_limit(c);
  auto cursor = c.query_value("cursor").value_or("");
  auto all = take(store.list(p.id));  // ordered by name
  json items = json::array();
  std::string next;
  for (const auto& a : all) {
    if (!cursor.empty() && a.name <= cursor) continue;
    if (items.size() == limit) {
      next = items.back()["name"].get<std::string>();
      break;
    }
    items.push_back(artifact_json(a));
  }
  return json_response(200, {{"items", std::move(items)}, {"next", next_or_null(next)}});
}

response artifact_versions(const call& c) {
  artifact_store& store = artifacts_of(c);
  project p = existing_project(c, c.params[0]);
  auto versions = take(store.versions(p.id, c.params[1]));
  if (versions.empty()) {
    reject_with(404, "not_found", "no artifact named '" + c.params[1] + "' in project " + p.id,
                {{"project", p.id}, {"name", c.params[1]}});
  }
  json items = json::array();
  for (const auto& a : versions) items.push_back(artifact_json(a));
  return json_response(200, {{"items", std::move(items)}, {"next", nullptr}});
}

// An artifact by id, if the caller may see its project (else 404, as unknown).
artifact_meta visible_artifact(const call& c, const std::string& id) {
  auto meta = take(artifacts_of(c).info(id));
  require_role(c, meta.project, project_role::viewer, "artifact '" + id + "' not found");
  return meta;
}

response get_artifact(const call& c) {
  return json_response(200, artifact_json(visible_artifact(c, c.params[0])));
}

class artifact_source final : public body_source {
 public:
  explicit artifact_source(artifact_reader reader) : reader_(std::move(reader)) {}
  result<std::size_t> read(char* buffer, std::size_t capacity) override {
    return reader_.read(buffer, capacity);
  }

 private:
  artifact_reader reader_;
};

// A Range header's one byte range over `size` bytes, as [first, last].
// nullopt: serve the whole content (no Range, a unit other than bytes, a
// syntax error or several ranges: RFC 9110 lets a server ignore those);
// `unsatisfiable` set: 416.
struct byte_range {
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  bool unsatisfiable = false;
};

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  std::uint64_t n = 0;
  if (s.empty()) return std::nullopt;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
  return n;
}

std::optional<byte_range> parse_range(std::string_view header, std::uint64_t size) {
  constexpr std::string_view unit = "bytes=";
  if (header.substr(0, unit.size()) != unit) return std::nullopt;
  std::string_view spec = header.substr(unit.size());
  while (!spec.empty() && spec.front() == ' ') spec.remove_prefix(1);
  while (!spec.empty() && spec.back() == ' ') spec.remove_suffix(1);
  if (spec.find(',') != std::string_view::npos) return std::nullopt;
  auto dash = spec.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  auto first_text = spec.substr(0, dash);
  auto last_text = spec.substr(dash + 1);
  byte_range r;
  if (first_text.empty()) {  // "-N": the last N bytes
    auto n = parse_u64(last_text);
    if (!n) return std::nullopt;
    if (*n == 0 || size == 0) return byte_range{0, 0, true};
    r.first = *n >= size ? 0 : size - *n;
    r.last = size - 1;
    return r;
  }
  auto first = parse_u64(first_text);
  if (!first) return std::nullopt;
  std::optional<std::uint64_t> last;
  if (!last_text.empty()) {
    last = parse_u64(last_text);
    if (!last || *last < *first) return std::nullopt;
  }
  if (*first >= size) return byte_range{0, 0, true};
  r.first = *first;
  r.last = last ? std::min(*last, size - 1) : size - 1;
  return r;
}

// RFC 5987 form of a file name for Content-Disposition: every byte but
// unreserved ASCII percent-encoded, so no name can break the header.
std::string disposition_for(std::string_view name) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out = "attachment; filename*=UTF-8''";
  for (unsigned char ch : name) {
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
        ch == '-' || ch == '.' || ch == '_' || ch == '~') {
      out.push_back(static_cast<char>(ch));
    } else {
      out.push_back('%');
      out.push_back(hex[ch >> 4]);
      out.push_back(hex[ch & 15]);
    }
  }
  return out;
}

// GET /api/v1/artifacts/{id}/content: the bytes, streamed; one byte range
// with Range (206), If-Range and If-None-Match against the ETag (the digest).
response download_artifact(const call& c) {
  artifact_store& store = artifacts_of(c);
  artifact_meta meta = visible_artifact(c, c.params[0]);
  std::string etag = "\"" + meta.sha256 + "\"";
  if (auto inm = c.req.header("if-none-match");
      inm && (*inm == etag || *inm == "*" || inm->find(etag) != std::string_view::npos)) {
    response res{304, "", {{"ETag", etag}}};
    return res;
  }
  std::optional<byte_range> range;
  if (auto header = c.req.header("range")) {
    auto if_range = c.req.header("if-range");
    if (!if_range || *if_range == etag) range = parse_range(*header, meta.size);
  }
  if (range && range->unsatisfiable) {
    auto res = error_response(
        416, "range_not_satisfiable",
        "the range is outside the artifact's " + std::to_string(meta.size) + " bytes",
        {{"size", meta.size}});
    res.headers.emplace_back("Content-Range", "bytes */" + std::to_string(meta.size));
    return res;
  }
  std::uint64_t offset = range ? range->first : 0;
  std::uint64_t length = range ? range->last - range->first + 1 : meta.size;
  artifact_reader reader = take(store.open(meta.id, offset, length));
  response res;
  res.status = range ? 206 : 200;
  res.content_type = meta.media_type;
  res.stream_size = reader.size();
  res.stream = std::make_shared<artifact_source>(std::move(reader));
  res.headers.emplace_back("Accept-Ranges", "bytes");
  res.headers.emplace_back("ETag", etag);
  res.headers.emplace_back("Content-Disposition", disposition_for(meta.name));
  if (range) {
    res.headers.emplace_back("Content-Range", "bytes " + std::to_string(range->first) + "-" +
                                                  std::to_string(range->last) + "/" +
                                                  std::to_string(meta.size));
  }
  return res;
}

// ---- authentication and users ----

[[noreturn]] void unauthorized(std::string_view message, bool token_given) {
  auto res = error_response(401, "unauthorized", message);
  res.headers.emplace_back("WWW-Authenticate", token_given
                                                   ? R"(Bearer realm="aise", error="invalid_token")"
                                                   : R"(Bearer realm="aise")");
  throw client_error{std::move(res)};
}

[[noreturn]] void forbidden(std::string_view message) {
  reject_with(403, "forbidden", message);
}

std::string required_string(const json& body, const char* name, std::size_t max_length) {
  auto v = string_field(body, name, max_length);
  if (!v || v->empty()) {
    reject_with(400, "invalid_argument",
                std::string("field '") + name + "' is required and must not be empty",
                {{"field", name}});
  }
  return std::move(*v);
}

std::optional<bool> bool_field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) {
    reject_with(400, "invalid_argument", std::string("field '") + name + "' must be a boolean",
                {{"field", name}, {"type", it->type_name()}});
  }
  return it->get<bool>();
}

project_role role_field(const json& body) {
  auto name = required_string(body, "role", 32);
  auto role = parse_project_role(name);
  if (!role) {
    reject_with(400, "invalid_argument",
                "field 'role' must be one of admin, maintainer, viewer, none", {{"field", "role"}});
  }
  return *role;
}

json tokens_json(const token_pair& t) {
  return {{"access_token", t.access_token},
          {"refresh_token", t.refresh_token},
          {"token_type", "Bearer"},
          {"expires_in", t.expires_in.count()}};
}

// A failed login or refresh is a 401 saying nothing about why; the audit
// trail has the reason.
token_pair take_tokens(result<token_pair> r, std::string_view what) {
  if (!r && r.error().code() == errc::rejected) unauthorized(what, false);
  return take(std::move(r));
}

response login(const call& c) {
  json body = body_object(c, false);
  auto username = required_string(body, "username", 256);
  auto password = required_string(body, "password", 1024);
  return json_response(200, tokens_json(take_tokens(c.auth.login(username, password, c.req.remote),
                                                    "wrong user name or password")));
}

response refresh_tokens(const call& c) {
  json body = body_object(c, false);
  auto token = required_string(body, "refresh_token", 1024);
  return json_response(
      200, tokens_json(take_tokens(c.auth.refresh(token, c.req.remote),
                                   "the refresh token is not valid (unknown, used, revoked or "
                                   "expired)")));
}

response logout(const call& c) {
  json body = body_object(c, false);
  auto token = required_string(body, "refresh_token", 1024);
  auto r = c.auth.logout(token, *c.who, c.req.remote);
  if (!r && r.error().code() == errc::rejected) {
    reject_with(400, "invalid_argument", "not a refresh token of yours",
                {{"field", "refresh_token"}});
  }
  take(r);
  return json_response(200, {{"status", "logged_out"}});
}

json roles_json(const std::map<std::string, project_role>& roles) {
  json out = json::object();
  for (const auto& [project, role] : roles) out[project] = std::string(to_string(role));
  return out;
}

response me(const call& c) {
  json j = authenticator::user_json(c.who->user);
  j["roles"] = roles_json(c.who->roles);
  return json_response(200, j);
}

response create_user(const call& c) {
  json body = body_object(c, false);
  new_user u;
  u.username = required_string(body, "username", 64);
  u.password = required_string(body, "password", 1024);
  u.global_admin = bool_field(body, "global_admin").value_or(false);
  return json_response(201, authenticator::user_json(take(c.auth.create_user(u, c.actor()))));
}

response list_users(const call& c) {
  auto limit = page_limit(c);
  auto users = take(c.auth.store().list_users(c.query_value("cursor").value_or(""), limit));
  json items = json::array();
  for (const auto& u : users) items.push_back(authenticator::user_json(u));
  std::string next = users.size() == limit ? users.back().id : std::string();
  return json_response(200, {{"items", std::move(items)}, {"next", next_or_null(next)}});
}

response get_user(const call& c) {
  auto u = take(c.auth.store().get_user(c.params[0]));
  json j = authenticator::user_json(u);
  j["roles"] = roles_json(take(c.auth.store().roles_of(u.id)));
  return json_response(200, j);
}

response update_user(const call& c) {
  json body = body_object(c, false);
  auto disabled = bool_field(body, "disabled");
  auto global_admin = bool_field(body, "global_admin");
  auto password = string_field(body, "password", 1024);
  const auto& id = c.params[0];
  auto u = take(c.auth.store().get_user(id));
  if (id == c.who->user.id && ((disabled && *disabled) || (global_admin && !*global_admin))) {
    reject_with(409, "conflict", "global admins cannot disable or demote themselves");
  }
  if (password) u = take(c.auth.set_password(id, *password, c.actor()));
  if (global_admin && *global_admin != u.global_admin) {
    u = take(c.auth.set_global_admin(id, *global_admin, c.actor()));
  }
  if (disabled && *disabled != u.disabled) u = take(c.auth.set_disabled(id, *disabled, c.actor()));
  return json_response(200, authenticator::user_json(u));
}

response disable_user(const call& c) {
  if (c.params[0] == c.who->user.id) {
    reject_with(409, "conflict", "global admins cannot disable themselves");
  }
  return json_response(
      200, authenticator::user_json(take(c.auth.set_disabled(c.params[0], true, c.actor()))));
}

response set_user_role(const call& c) {
  json body = body_object(c, false);
  auto project = required_string(body, "project", c.options.max_id_length);
  auto role = role_field(body);
  take(c.auth.set_role(c.params[0], project, role, c.actor()));
  return json_response(
      200, {{"user", c.params[0]}, {"project", project}, {"role", std::string(to_string(role))}});
}

response project_members(const call& c) {
  const auto id = existing_project(c, c.params[0]).id;
  json items = json::array();
  for (const auto& [user_id, role] : take(c.auth.store().members_of(id))) {
    auto u = c.auth.store().get_user(user_id);
    if (!u) continue;
    items.push_back({{"user", u->id}, {"username", u->username}, {"role", to_string(role)}});
  }
  return json_response(200, {{"items", std::move(items)}});
}

response set_project_member(const call& c) {
  json body = body_object(c, false);
  const auto id = existing_project(c, c.params[0]).id;
  auto username = required_string(body, "username", 64);
  auto role = role_field(body);
  auto u = c.auth.store().find_user(username);
  if (!u && u.error().code() == errc::not_found) {
    reject_with(404, "not_found", "no user named '" + username + "'", {{"username", username}});
  }
  take(c.auth.set_role(take(std::move(u)).id, id, role, c.actor()));
  return json_response(
      200, {{"username", username}, {"project", id}, {"role", std::string(to_string(role))}});
}

response audit_trail(const call& c) {
  auto after = number_param(c, "after", 0, 0, UINT64_MAX);
  auto limit = page_limit(c);
  auto entries = take(c.auth.store().read_audit(after, limit));
  json items = json::array();
  for (const auto& e : entries) {
    items.push_back({{"id", e.id},
                     {"at", format_time(e.at)},
                     {"actor", e.actor},
                     {"action", e.action},
                     {"subject", e.subject},
                     {"ip", e.ip},
                     {"details", e.details}});
  }
  json next = entries.size() == limit ? json(std::to_string(entries.back().id)) : json(nullptr);
  return json_response(200, {{"items", std::move(items)}, {"next", std::move(next)}});
}

response metrics(const call& c) {
  if (c.options.metrics == nullptr) {
    reject_with(404, "not_found", "metrics are not enabled on this server");
  }
  response res{200, c.options.metrics->expose(), {}};
  res.content_type = "text/plain; version=0.0.4; charset=utf-8";
  return res;
}

response openapi(const call&) {
  return {200, std::string(openapi_document()), {}};
}

response docs(const call&) {
  response res{200, std::string(docs_page()), {}};
  res.content_type = "text/html; charset=utf-8";
  // The page's own script and style are inline; it fetches /openapi.json.
  res.headers.emplace_back("Content-Security-Policy",
                           "default-src 'none'; script-src 'unsafe-inline'; style-src "
                           "'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'");
  return res;
}

// ---- the dashboard (src/web.*): public, no JSON ----

response dashboard_page(const call& c) {
  return serve_web_asset("index.html", c.req.header("if-none-match"));
}

response dashboard_file(const call& c) {
  return serve_web_asset(c.params[0], c.req.header("if-none-match"));
}

// ---- routing ----

using handler = response (*)(const call&);

struct route {
  std::string_view method;
  // "{}" (shown as "{id}") or "{name}" matches one non-empty segment
  std::vector<std::string_view> pattern;
  handler fn;
  route_access access;
  route_scope scope;     // what params[0] names
  bool streams = false;  // the body is streamed (see api::streams_body)
};

// Access levels are documented per route in server/README.md
// ("Authentication and roles"); the role matrix test walks this table.
const std::vector<route>& route_table() {
  using a = route_access;
  using s = route_scope;
  static const std::vector<route> table = {
      {"GET", {"healthz"}, healthz, a::open, s::none},
      {"GET", {"readyz"}, readyz, a::open, s::none},
      {"GET", {"metrics"}, metrics, a::open, s::none},
      {"GET", {"openapi.json"}, openapi, a::open, s::none},
      {"GET", {"docs"}, docs, a::open, s::none},
      {"GET", {""}, dashboard_page, a::open, s::none},  // "/"
      {"GET", {"ui", "{name}"}, dashboard_file, a::open, s::none},
      {"POST", {"api", "v1", "auth", "login"}, login, a::open, s::none},
      {"POST", {"api", "v1", "auth", "refresh"}, refresh_tokens, a::open, s::none},
      {"POST", {"api", "v1", "auth", "logout"}, logout, a::user, s::none},
      {"GET", {"api", "v1", "me"}, me, a::user, s::none},
      {"POST", {"api", "v1", "users"}, create_user, a::global_admin, s::none},
      {"GET", {"api", "v1", "users"}, list_users, a::global_admin, s::none},
      {"GET", {"api", "v1", "users", "{}"}, get_user, a::global_admin, s::user},
      {"PATCH", {"api", "v1", "users", "{}"}, update_user, a::global_admin, s::user},
      {"POST", {"api", "v1", "users", "{}", "disable"}, disable_user, a::global_admin, s::user},
      {"POST", {"api", "v1", "users", "{}", "roles"}, set_user_role, a::global_admin, s::user},
      {"GET", {"api", "v1", "audit"}, audit_trail, a::global_admin, s::none},
      {"POST", {"api", "v1", "projects"}, create_project, a::user, s::none},
      {"GET", {"api", "v1", "projects"}, list_projects, a::user, s::none},
      {"GET", {"api", "v1", "projects", "{}"}, get_project, a::viewer, s::project},
      {"PATCH", {"api", "v1", "projects", "{}"}, update_project, a::project_admin, s::project},
      {"POST",
       {"api", "v1", "projects", "{}", "archive"},
       archive_project,
       a::project_admin,
       s::project},
      {"GET",
       {"api", "v1", "projects", "{}", "members"},
       project_members,
       a::project_admin,
       s::project},
      {"POST",
       {"api", "v1", "projects", "{}", "members"},
       set_project_member,
       a::project_admin,
       s::project},
      {"POST", {"api", "v1", "projects", "{}", "tasks"}, create_task, a::maintainer, s::project},
      {"GET", {"api", "v1", "projects", "{}", "tasks"}, list_tasks, a::viewer, s::project},
      {"GET", {"api", "v1", "projects", "{}", "events"}, project_events, a::viewer, s::project},
      {"GET", {"api", "v1", "tasks", "{}"}, get_task, a::viewer, s::task},
      {"POST", {"api", "v1", "tasks", "{}", "cancel"}, cancel_task, a::maintainer, s::task},
      {"POST", {"api", "v1", "tasks", "{}", "retry"}, retry_task, a::maintainer, s::task},
      {"POST", {"api", "v1", "tasks", "{}", "approve"}, approve_task, a::maintainer, s::task},
      {"POST", {"api", "v1", "tasks", "{}", "reject"}, reject_task, a::maintainer, s::task},
      {"GET", {"api", "v1", "tasks", "{}", "attempts"}, task_attempts, a::viewer, s::task},
      {"GET", {"api", "v1", "agent-kinds"}, agent_kinds, a::user, s::none},
      {"GET", {"api", "v1", "agents"}, list_agents, a::user, s::none},
      {"GET", {"api", "v1", "agents", "{name}"}, get_agent, a::viewer, s::agent},
      // The handlers check the project (from the body or the agent's record).
      {"POST", {"api", "v1", "agents"}, spawn_agent, a::user, s::none},
      {"POST", {"api", "v1", "agents", "{name}", "stop"}, stop_agent, a::maintainer, s::agent},
      {"POST",
       {"api", "v1", "agents", "{name}", "restart"},
       restart_agent,
       a::maintainer,
       s::agent},
      {"PUT",
       {"api", "v1", "projects", "{id}", "artifacts", "{name}"},
       upload_artifact,
       a::maintainer,
       s::project,
       true},
      {"GET", {"api", "v1", "projects", "{}", "artifacts"}, list_artifacts, a::viewer, s::project},
      {"GET",
       {"api", "v1", "projects", "{id}", "artifacts", "{name}", "versions"},
       artifact_versions,
       a::viewer,
       s::project},
      // The handlers check the artifact's project.
      {"GET", {"api", "v1", "artifacts", "{}"}, get_artifact, a::viewer, s::artifact},
      {"GET",
       {"api", "v1", "artifacts", "{}", "content"},
       download_artifact,
       a::viewer,
       s::artifact},
  };
  return table;
}

bool is_param(std::string_view segment) {
  return segment.size() >= 2 && segment.front() == '{' && segment.back() == '}';
}

// "/api/v1/tasks/{id}": the route's template, as metrics, logs and the
// OpenAPI document name it.
std::string template_of(const route& r) {
  std::string out;
  for (auto segment : r.pattern) {
    out += '/';
    out += segment == "{}" ? std::string_view("{id}") : segment;
  }
  return out;
}

bool match(const route& r, const std::vector<std::string>& segments,
           std::vector<std::string>& params) {
  if (r.pattern.size() != segments.size()) return false;
  params.clear();
  for (std::size_t i = 0; i < segments.size(); ++i) {
    if (is_param(r.pattern[i])) {
      if (segments[i].empty()) return false;
      params.push_back(segments[i]);
    } else if (r.pattern[i] != segments[i]) {
      return false;
    }
  }
  return true;
}

// The path's segments, percent-decoded; nullopt on a bad escape.
std::optional<std::vector<std::string>> split_path(std::string_view path) {
  std::vector<std::string> segments;
  for (std::string_view rest = path.substr(1);;) {
    auto slash = rest.find('/');
    auto decoded = percent_decode(rest.substr(0, slash), false);
    if (!decoded) return std::nullopt;
    segments.push_back(std::move(*decoded));
    if (slash == std::string_view::npos) break;
    rest = rest.substr(slash + 1);
  }
  return segments;
}

// The limiters of one api (api::limiters holds them).
struct limiter_set {
  rate_limiter& ip;
  rate_limiter& user;
  rate_limiter& login;
};

[[noreturn]] void too_many(const rate_decision& d, std::string_view per) {
  auto res = error_response(429, "rate_limited",
                            "too many requests from this " + std::string(per) + "; retry in " +
                                std::to_string(d.retry_after.count()) + " s",
                            {{"retry_after", d.retry_after.count()}, {"limit", per}});
  res.headers.emplace_back("Retry-After", std::to_string(d.retry_after.count()));
  throw client_error{std::move(res)};
}

// "Bearer <token>" (the scheme is case-insensitive, RFC 7235).
std::optional<std::string_view> bearer_token(std::string_view header) {
  constexpr std::string_view scheme = "bearer ";
  if (header.size() <= scheme.size()) return std::nullopt;
  for (std::size_t i = 0; i < scheme.size(); ++i) {
    char ch = header[i];
    if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
    if (ch != scheme[i]) return std::nullopt;
  }
  auto token = header.substr(scheme.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  if (token.empty()) return std::nullopt;
  return token;
}

principal authenticate(call& c) {
  auto header = c.req.header("authorization");
  if (!header || header->empty()) unauthorized("this route needs an access token", false);
  auto token = bearer_token(*header);
  if (!token) unauthorized("the Authorization header must be 'Bearer <access token>'", true);
  auto who = c.auth.authenticate(*token);
  if (!who && who.error().code() == errc::rejected) {
    unauthorized("invalid access token (" + who.error().message() + ")", true);
  }
  return take(std::move(who));
}

project_role needed_role(route_access a) {
  switch (a) {
    case route_access::viewer:
      return project_role::viewer;
    case route_access::maintainer:
      return project_role::maintainer;
    case route_access::project_admin:
      return project_role::admin;
    default:
      return project_role::none;
  }
}

// Throws the 403 or 404 of a caller who may not use route `r` here.
void authorize(const route& r, call& c) {
  if (r.access == route_access::open || r.access == route_access::user) return;
  if (r.access == route_access::global_admin) {
    if (!c.who->user.global_admin) forbidden("this route is for global admins");
    return;
  }
  std::string project;
  std::string hidden;  // the 404 message of an object the caller may not see
  switch (r.scope) {
    case route_scope::project:
      project = c.params[0];
      hidden = "project '" + project + "' not found";
      break;
    case route_scope::task: {
      hidden = "task '" + c.params[0] + "' not found";
      auto t = c.orch.get(c.params[0]);
      if (!t && t.error().code() == errc::not_found) reject_with(404, "not_found", hidden);
      c.scoped_task = take(std::move(t));
      project = c.scoped_task->project;
      break;
    }
    default:
      return;  // agents and artifacts: checked by their handlers (the project is in the record)
  }
  auto role = c.who->role_in(project);
  if (role == project_role::none) reject_with(404, "not_found", hidden);
  auto needed = needed_role(r.access);
  if (role < needed) {
    forbidden("this needs the role " + std::string(to_string(needed)) + " in project '" + project +
              "'; yours is " + std::string(to_string(role)));
  }
}

response run_route(const route& r, call& c, const limiter_set& limits,
                   std::chrono::steady_clock::time_point now) {
  std::optional<principal> who;
  if (r.access != route_access::open) {
    who = authenticate(c);
    c.who = &*who;
    if (auto d = limits.user.take(who->user.id, now); !d.allowed) too_many(d, "user");
  }
  if (r.fn == login) {
    if (auto d = limits.login.take(c.req.remote, now); !d.allowed) too_many(d, "address (logins)");
  }
  authorize(r, c);
  return r.fn(c);
}

// Sets `route_template` to the template of the first route matching the
// path (any method) before running its handler, so a handler's error
// carries it too.
response dispatch(const request& req, orchestrator& orch, authenticator& auth,
                  const api_options& options, const limiter_set& limits, artifact_store* artifacts,
                  upload_start* upload, std::string& route_template) {
  const auto now = std::chrono::steady_clock::now();
  if (auto d = limits.ip.take(req.remote, now); !d.allowed) too_many(d, "address");
  std::string_view target = req.target;
  auto qmark = target.find('?');
  std::string_view path = target.substr(0, qmark);
  if (path.empty() || path.front() != '/') {
    return error_response(400, "bad_request", "the request target must be an absolute path");
  }
  auto segments = split_path(path);
  if (!segments) return error_response(400, "bad_request", "bad percent-escape in the path");

  call c{req, orch, auth, options, artifacts, upload, {}, {}};
  if (qmark != std::string_view::npos) {
    std::string_view query = target.substr(qmark + 1);
    while (!query.empty()) {
      auto amp = query.find('&');
      auto pair = query.substr(0, amp);
      if (!pair.empty()) {
        auto eq = pair.find('=');
        auto key = percent_decode(pair.substr(0, eq), true);
        auto value = percent_decode(
            eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1), true);
        if (!key || !value) {
          return error_response(400, "bad_request", "bad percent-escape in the query");
        }
        c.query.emplace(std::move(*key), std::move(*value));
      }
      query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    }
  }

  std::string allowed;
  for (const auto& r : route_table()) {
    if (!match(r, *segments, c.params)) continue;
    if (route_template.empty()) route_template = template_of(r);
    if (r.method == req.method) {
      route_template = template_of(r);
      return run_route(r, c, limits, now);
    }
    if (!allowed.empty()) allowed += ", ";
    allowed += r.method;
  }
  if (!allowed.empty()) {
    auto res = error_response(405, "method_not_allowed",
                              "method " + req.method + " is not allowed on " + std::string(path),
                              {{"allow", allowed}});
    res.headers.emplace_back("Allow", allowed);
    return res;
  }
  return error_response(404, "not_found", "no route " + std::string(path),
                        {{"path", std::string(path)}});
}

// Runs `fn` (which dispatches), turning what it throws into a response.
template <class F>
response guarded(F&& fn) noexcept {
  try {
    try {
      return fn();
    } catch (client_error& e) {
      return std::move(e.res);
    } catch (const std::exception& e) {
      return error_response(500, "internal", std::string("internal error: ") + e.what());
    } catch (...) {
      return error_response(500, "internal", "internal error");
    }
  } catch (...) {
    // Building the error response itself failed (out of memory).
    return response{
        500, R"({"error":{"code":"internal","message":"internal error","details":null}})", {}};
  }
}

}  // namespace

int http_status(errc code) noexcept {
  switch (code) {
    case errc::ok:
      return 200;
    case errc::invalid_argument:
    case errc::cycle:       // a dependency graph the client sent
    case errc::no_handler:  // a kind nobody handles
      return 400;
    case errc::not_found:
      return 404;
    case errc::already_exists:
    case errc::illegal_transition:
    case errc::conflict:
    case errc::cancelled:
    case errc::rejected:
    case errc::limit_exceeded:
      return 409;
    case errc::timeout:
    case errc::mailbox_full:
    case errc::unavailable:
      return 503;
    case errc::handler_failed:
    case errc::internal:
      return 500;
  }
  return 500;
}

response error_response(int status, std::string_view code, std::string_view message,
                        nlohmann::json details) {
  json body = {{"error", {{"code", code}, {"message", message}, {"details", std::move(details)}}}};
  return {status, dump(body), {}};
}

response error_response(const aise::error& e) {
  return error_response(http_status(e.code()), to_string(e.code()), e.message());
}

std::optional<std::string_view> request::header(std::string_view name) const noexcept {
  auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
  for (const auto& [n, v] : headers) {
    if (n.size() == name.size() &&
        std::equal(n.begin(), n.end(), name.begin(),
                   [&](char a, char b) { return lower(a) == lower(b); })) {
      return std::string_view(v);
    }
  }
  return std::nullopt;
}

void add_security_headers(response& res, std::string_view path, bool hsts) {
  // A header the handler set itself (e.g. a page's own Content-Security-
  // Policy) wins: two policies would both be enforced.
  auto add = [&res](const char* name, std::string value) {
    for (const auto& [k, v] : res.headers) {
      if (k.size() == std::strlen(name) && std::equal(k.begin(), k.end(), name, [](char a, char b) {
            return std::tolower(static_cast<unsigned char>(a)) ==
                   std::tolower(static_cast<unsigned char>(b));
          })) {
        return;
      }
    }
    res.headers.emplace_back(name, std::move(value));
  };
  add("X-Content-Type-Options", "nosniff");
  add("X-Frame-Options", "DENY");
  add("Referrer-Policy", "no-referrer");
  add("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'");
  if (path == "/api" || path.rfind("/api/", 0) == 0) add("Cache-Control", "no-store");
  if (hsts) add("Strict-Transport-Security", "max-age=31536000");
}

struct api::limiters {
  explicit limiters(const api_options& o)
      : ip(o.ip_limit), user(o.user_limit), login(o.login_limit) {}
  rate_limiter ip;
  rate_limiter user;
  rate_limiter login;
};

api::api(orchestrator& orch, authenticator& auth, api_options options,
         std::shared_ptr<artifact_store> artifacts)
    : orch_(orch),
      auth_(auth),
      options_(options),
      artifacts_(std::move(artifacts)),
      limiters_(std::make_unique<limiters>(options_)) {}

api::~api() = default;

std::vector<route_info> api::routes() {
  std::vector<route_info> out;
  for (const auto& r : route_table()) {
    out.push_back({std::string(r.method), template_of(r), r.access, r.scope});
  }
  return out;
}

response api::handle(const request& req) const noexcept {
  std::string route_template;
  response res = guarded([&] {
    return dispatch(req, orch_, auth_, options_, {limiters_->ip, limiters_->user, limiters_->login},
                    artifacts_.get(), nullptr, route_template);
  });
  res.route = std::move(route_template);
  try {
    std::string_view target = req.target;
    add_security_headers(res, target.substr(0, target.find('?')), options_.hsts);
  } catch (...) {
    // Out of memory adding headers: the answer goes without them.
  }
  return res;
}

bool api::streams_body(const request& head) const noexcept {
  try {
    std::string_view target = head.target;
    std::string_view path = target.substr(0, target.find('?'));
    if (path.empty() || path.front() != '/') return false;
    auto segments = split_path(path);
    if (!segments) return false;
    std::vector<std::string> params;
    for (const auto& r : route_table()) {
      if (r.streams && r.method == head.method && match(r, *segments, params)) return true;
    }
    return false;
  } catch (...) {
    return false;
  }
}

upload_start api::begin_upload(const request& head) const noexcept {
  upload_start start;
  std::string route_template;
  start.refused = guarded([&] {
    return dispatch(head, orch_, auth_, options_,
                    {limiters_->ip, limiters_->user, limiters_->login}, artifacts_.get(), &start,
                    route_template);
  });
  start.refused.route = std::move(route_template);
  if (start.sink == nullptr && start.refused.status < 400) {
    // Not a streamed route after all (a race with nothing: routes are fixed).
    start.refused = error_response(500, "internal", "the route does not stream its body");
  }
  try {
    std::string_view target = head.target;
    add_security_headers(start.refused, target.substr(0, target.find('?')), options_.hsts);
  } catch (...) {
    // As in handle.
  }
  return start;
}

}  // namespace aise::server
