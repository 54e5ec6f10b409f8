#include "api.hpp"

#include <aise/clock.hpp>
#include <aise/event.hpp>
#include <aise/runtime.hpp>
#include <aise/store.hpp>
#include <aise/task.hpp>

#include <algorithm>
#include <charconv>
#include <exception>
#include <map>
#include <optional>

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
  const api_options& options;
  artifact_store* artifacts;        // null: none configured
  upload_start* upload;             // set by begin_upload: the body is streamed into a sink
  std::vector<std::string> params;  // the {…} segments of the route, in order
  std::multimap<std::string, std::string, std::less<>> query;

  [[nodiscard]] store& db() const { return orch.store(); }

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
  return json_response(201, project_json(take(c.db().create_project(std::move(p)))));
}

response list_projects(const call& c) {
  auto limit = page_limit(c);
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

response list_agents(const call& c) {
  auto project = c.query_value("project").value_or("");
  // The store knows agents of earlier runs and of worker processes; the
  // orchestrator knows the live state of the ones it supervises.
  std::map<std::string, json> by_name;
  std::map<std::string, agent_record> stored;
  for (auto& a : take(c.db().list_agents(project))) {
    by_name[a.id] = agent_record_json(a);
    stored.emplace(a.id, std::move(a));
  }
  for (const auto& a : c.orch.agents()) {
    if (!project.empty() && a.project != project) continue;
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
  json snapshot = snapshot_json(c, name);
  if (auto live = c.orch.agent_info(name)) {
    json j = agent_status_json(*live, record);
    j["snapshot"] = std::move(snapshot);
    return json_response(200, j);
  }
  if (record) {
    json j = agent_record_json(*record);
    j["snapshot"] = std::move(snapshot);
    return json_response(200, j);
  }
  reject_with(404, "not_found", "no agent '" + name + "'", {{"agent", name}});
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
  if (auto project_id = string_field(body, "project", c.options.max_id_length)) {
    check_id(c, *project_id, "project");
    (void)existing_project(c, *project_id);
    spec.project = std::move(*project_id);
  }
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

response stop_agent(const call& c) {
  take(c.orch.stop_agent(c.params[0]));
  return json_response(200, agent_status_json(take(c.orch.agent_info(c.params[0])), std::nullopt));
}

response restart_agent(const call& c) {
  take(c.orch.restart_agent(c.params[0]));
  return json_response(200, agent_status_json(take(c.orch.agent_info(c.params[0])), std::nullopt));
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

response get_artifact(const call& c) {
  return json_response(200, artifact_json(take(artifacts_of(c).info(c.params[0]))));
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
  artifact_meta meta = take(store.info(c.params[0]));
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
  res.headers.emplace_back("X-Content-Type-Options", "nosniff");
  if (range) {
    res.headers.emplace_back("Content-Range", "bytes " + std::to_string(range->first) + "-" +
                                                  std::to_string(range->last) + "/" +
                                                  std::to_string(meta.size));
  }
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
  std::vector<std::string_view> pattern;  // "{}" matches one non-empty segment
  handler fn;
  bool streams = false;  // the body is streamed (see api::streams_body)
};

const std::vector<route>& routes() {
  static const std::vector<route> table = {
      {"GET", {"healthz"}, healthz},
      {"GET", {"readyz"}, readyz},
      {"GET", {""}, dashboard_page},  // "/"
      {"GET", {"ui", "{}"}, dashboard_file},
      {"POST", {"api", "v1", "projects"}, create_project},
      {"GET", {"api", "v1", "projects"}, list_projects},
      {"GET", {"api", "v1", "projects", "{}"}, get_project},
      {"PATCH", {"api", "v1", "projects", "{}"}, update_project},
      {"POST", {"api", "v1", "projects", "{}", "archive"}, archive_project},
      {"POST", {"api", "v1", "projects", "{}", "tasks"}, create_task},
      {"GET", {"api", "v1", "projects", "{}", "tasks"}, list_tasks},
      {"GET", {"api", "v1", "projects", "{}", "events"}, project_events},
      {"GET", {"api", "v1", "tasks", "{}"}, get_task},
      {"POST", {"api", "v1", "tasks", "{}", "cancel"}, cancel_task},
      {"POST", {"api", "v1", "tasks", "{}", "retry"}, retry_task},
      {"POST", {"api", "v1", "tasks", "{}", "approve"}, approve_task},
      {"POST", {"api", "v1", "tasks", "{}", "reject"}, reject_task},
      {"GET", {"api", "v1", "tasks", "{}", "attempts"}, task_attempts},
      {"GET", {"api", "v1", "agent-kinds"}, agent_kinds},
      {"GET", {"api", "v1", "agents"}, list_agents},
      {"GET", {"api", "v1", "agents", "{}"}, get_agent},
      {"POST", {"api", "v1", "agents"}, spawn_agent},
      {"POST", {"api", "v1", "agents", "{}", "stop"}, stop_agent},
      {"POST", {"api", "v1", "agents", "{}", "restart"}, restart_agent},
      {"PUT", {"api", "v1", "projects", "{}", "artifacts", "{}"}, upload_artifact, true},
      {"GET", {"api", "v1", "projects", "{}", "artifacts"}, list_artifacts},
      {"GET", {"api", "v1", "projects", "{}", "artifacts", "{}", "versions"}, artifact_versions},
      {"GET", {"api", "v1", "artifacts", "{}"}, get_artifact},
      {"GET", {"api", "v1", "artifacts", "{}", "content"}, download_artifact},
  };
  return table;
}

bool match(const route& r, const std::vector<std::string>& segments,
           std::vector<std::string>& params) {
  if (r.pattern.size() != segments.size()) return false;
  params.clear();
  for (std::size_t i = 0; i < segments.size(); ++i) {
    if (r.pattern[i] == "{}") {
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

response dispatch(const request& req, orchestrator& orch, const api_options& options,
                  artifact_store* artifacts, upload_start* upload) {
  std::string_view target = req.target;
  auto qmark = target.find('?');
  std::string_view path = target.substr(0, qmark);
  if (path.empty() || path.front() != '/') {
    return error_response(400, "bad_request", "the request target must be an absolute path");
  }
  auto segments = split_path(path);
  if (!segments) return error_response(400, "bad_request", "bad percent-escape in the path");

  call c{req, orch, options, artifacts, upload, {}, {}};
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
  for (const auto& r : routes()) {
    if (!match(r, *segments, c.params)) continue;
    if (r.method == req.method) return r.fn(c);
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
  for (const auto& [key, value] : headers) {
    if (key == name) return std::string_view(value);
  }
  return std::nullopt;
}

api::api(orchestrator& orch, api_options options, std::shared_ptr<artifact_store> artifacts)
    : orch_(orch), options_(options), artifacts_(std::move(artifacts)) {}

response api::handle(const request& req) const noexcept {
  return guarded([&] { return dispatch(req, orch_, options_, artifacts_.get(), nullptr); });
}

bool api::streams_body(const request& head) const noexcept {
  try {
    std::string_view target = head.target;
    std::string_view path = target.substr(0, target.find('?'));
    if (path.empty() || path.front() != '/') return false;
    auto segments = split_path(path);
    if (!segments) return false;
    std::vector<std::string> params;
    for (const auto& r : routes()) {
      if (r.streams && r.method == head.method && match(r, *segments, params)) return true;
    }
    return false;
  } catch (...) {
    return false;
  }
}

upload_start api::begin_upload(const request& head) const noexcept {
  upload_start start;
  start.refused =
      guarded([&] { return dispatch(head, orch_, options_, artifacts_.get(), &start); });
  if (start.sink == nullptr && start.refused.status < 400) {
    // Not a streamed route after all (a race with nothing: routes are fixed).
    start.refused = error_response(500, "internal", "the route does not stream its body");
  }
  return start;
}

}  // namespace aise::server
