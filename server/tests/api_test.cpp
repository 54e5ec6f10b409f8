// The REST routes, called as plain functions (no sockets): every route's
// success, its 404, bad JSON, wrong types and illegal transitions (409).
#include "api.hpp"

#include <aise/agent.hpp>
#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>
#include <aise/sql.hpp>
#include <aise/task_context.hpp>

#include <atomic>
#include <chrono>
#include <doctest/doctest.h>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "test_auth.hpp"

namespace {

using json = nlohmann::json;
using aise::server::request;
using aise::server::response;

class echo_agent : public aise::agent {
 public:
  echo_agent() {
    on_task("echo", [](aise::task_context& ctx) -> aise::result<json> { return ctx.payload(); });
  }
};

// A runtime, an orchestrator on a store and the API over them; requests
// carry the token of a global admin (the access checks have their own
// tests in auth_test.cpp).
struct fixture {
  explicit fixture(std::shared_ptr<aise::store> store = aise::make_memory_store())
      : orch(rt, options(std::move(store))),
        api(orch, *users.auth, aise::server::test::unlimited()) {
    REQUIRE(orch.register_kind("echo", [] { return std::make_unique<echo_agent>(); }));
  }

  static aise::orchestrator_options options(std::shared_ptr<aise::store> store) {
    aise::orchestrator_options o;
    o.store = std::move(store);
    return o;
  }

  response call(std::string method, std::string target, std::string body = {}) const {
    return api.handle(request{std::move(method),
                              std::move(target),
                              std::move(body),
                              "127.0.0.1",
                              {{"authorization", users.admin}}});
  }

  // The parsed body of a call that must answer `status`.
  json expect(int status, std::string method, std::string target, std::string body = {}) const {
    auto res = call(std::move(method), std::move(target), std::move(body));
    INFO(res.body);
    CHECK(res.status == status);
    json j = json::parse(res.body, nullptr, false);
    REQUIRE_FALSE(j.is_discarded());
    if (status >= 400) {
      REQUIRE(j.contains("error"));
      CHECK(j["error"].contains("code"));
      CHECK(j["error"].contains("message"));
      CHECK(j["error"].contains("details"));
    }
    return j;
  }

  std::string error_code(int status, std::string method, std::string target,
                         std::string body = {}) const {
    auto j = expect(status, std::move(method), std::move(target), std::move(body));
    return j["error"]["code"].get<std::string>();
  }

  std::string make_project(const std::string& id) const {
    auto j =
        expect(201, "POST", "/api/v1/projects", json{{"id", id}, {"name", "Project " + id}}.dump());
    return j["id"].get<std::string>();
  }

  std::string make_task(const std::string& project, json spec) const {
    auto j = expect(201, "POST", "/api/v1/projects/" + project + "/tasks", spec.dump());
    return j["id"].get<std::string>();
  }

  aise::server::test::test_auth users;
  aise::runtime rt;
  aise::orchestrator orch;
  aise::server::api api;
};

}  // namespace

TEST_CASE("api: error statuses are mapped in one place") {
  using aise::errc;
  using aise::server::http_status;
  CHECK(http_status(errc::invalid_argument) == 400);
  CHECK(http_status(errc::cycle) == 400);
  CHECK(http_status(errc::not_found) == 404);
  CHECK(http_status(errc::already_exists) == 409);
  CHECK(http_status(errc::illegal_transition) == 409);
  CHECK(http_status(errc::conflict) == 409);
  CHECK(http_status(errc::unavailable) == 503);
  CHECK(http_status(errc::internal) == 500);
  auto res = aise::server::error_response(aise::error(errc::not_found, "no task x"));
  CHECK(res.status == 404);
  auto j = json::parse(res.body);
  CHECK(j["error"]["code"] == "not_found");
  CHECK(j["error"]["message"] == "no task x");
  CHECK(j["error"]["details"].is_null());
}

TEST_CASE("api: health, readiness, unknown routes and methods") {
  fixture f;
  CHECK(f.expect(200, "GET", "/healthz")["status"] == "ok");
  auto ready = f.expect(200, "GET", "/readyz");
  CHECK(ready["status"] == "ready");
  CHECK(ready["store"] == "memory");

  CHECK(f.error_code(404, "GET", "/api/v1/nothing") == "not_found");
  CHECK(f.error_code(404, "GET", "/api/v1/projects/") == "not_found");
  CHECK(f.error_code(400, "GET", "no-slash") == "bad_request");
  CHECK(f.error_code(400, "GET", "/api/v1/projects/%zz") == "bad_request");
  // An id that is not UTF-8 is echoed (replaced), never a 500.
  CHECK(f.error_code(404, "GET", "/api/v1/projects/%FF%FE") == "not_found");
  CHECK(f.error_code(400, "POST", "/api/v1/projects", "{\"name\": \"\xff\"}") == "bad_json");

  auto res = f.call("DELETE", "/api/v1/projects");
  CHECK(res.status == 405);
  REQUIRE_FALSE(res.headers.empty());
  CHECK(res.headers[0].first == "Allow");
  CHECK(res.headers[0].second == "POST, GET");
  CHECK(f.error_code(405, "PUT", "/api/v1/tasks/t-1/cancel") == "method_not_allowed");
}

TEST_CASE("api: projects") {
  fixture f;
  SUBCASE("create, get, update, archive") {
    auto created = f.expect(201, "POST", "/api/v1/projects",
                            R"({"name": "Site", "description": "the web site",
                                "metadata": {"team": "a"}, "unknown_field": 1})");
    auto id = created["id"].get<std::string>();
    CHECK_FALSE(id.empty());
    CHECK(created["name"] == "Site");
    CHECK(created["description"] == "the web site");
    CHECK(created["metadata"]["team"] == "a");
    CHECK(created["archived"] == false);
    CHECK(created["created_at"].is_string());

    auto got = f.expect(200, "GET", "/api/v1/projects/" + id);
    CHECK(got == created);

    auto updated = f.expect(200, "PATCH", "/api/v1/projects/" + id, R"({"name": "Site 2"})");
    CHECK(updated["name"] == "Site 2");
    CHECK(updated["description"] == "the web site");

    auto archived = f.expect(200, "POST", "/api/v1/projects/" + id + "/archive");
    CHECK(archived["archived"] == true);
    CHECK(f.expect(200, "POST", "/api/v1/projects/" + id + "/archive")["archived"] == true);
    CHECK(f.error_code(409, "PATCH", "/api/v1/projects/" + id, R"({"name": "x"})") == "conflict");
    CHECK(f.error_code(409, "POST", "/api/v1/projects/" + id + "/tasks", R"({"kind": "echo"})") ==
          "conflict");
  }
  SUBCASE("client-chosen ids") {
    f.make_project("alpha");
    CHECK(f.error_code(409, "POST", "/api/v1/projects", R"({"id": "alpha", "name": "again"})") ==
          "already_exists");
    CHECK(f.error_code(400, "POST", "/api/v1/projects", R"({"id": "has space", "name": "n"})") ==
          "invalid_argument");
  }
  SUBCASE("bad input") {
    CHECK(f.error_code(400, "POST", "/api/v1/projects", R"({"name": )") == "bad_json");
    CHECK(f.error_code(400, "POST", "/api/v1/projects", "") == "bad_json");
    CHECK(f.error_code(400, "POST", "/api/v1/projects", "[1, 2]") == "invalid_argument");
    auto wrong = f.expect(400, "POST", "/api/v1/projects", R"({"name": 5})");
    CHECK(wrong["error"]["code"] == "invalid_argument");
    CHECK(wrong["error"]["details"]["field"] == "name");
    CHECK(f.error_code(400, "POST", "/api/v1/projects", R"({"description": "no name"})") ==
          "invalid_argument");
    CHECK(f.error_code(400, "POST", "/api/v1/projects", R"({"name": "n", "metadata": [1]})") ==
          "invalid_argument");
    f.make_project("p1");
    CHECK(f.error_code(400, "PATCH", "/api/v1/projects/p1", R"({"name": true})") ==
          "invalid_argument");
    CHECK(f.error_code(400, "PATCH", "/api/v1/projects/p1", R"({"name": ""})") ==
          "invalid_argument");
    CHECK(f.error_code(400, "PATCH", "/api/v1/projects/p1", "{") == "bad_json");
  }
  SUBCASE("unknown ids") {
    CHECK(f.error_code(404, "GET", "/api/v1/projects/nope") == "not_found");
    CHECK(f.error_code(404, "PATCH", "/api/v1/projects/nope", R"({"name": "x"})") == "not_found");
    CHECK(f.error_code(404, "POST", "/api/v1/projects/nope/archive") == "not_found");
  }
  SUBCASE("list with cursor pagination") {
    for (const char* id : {"a", "b", "c"}) f.make_project(id);
    auto first = f.expect(200, "GET", "/api/v1/projects?limit=2");
    REQUIRE(first["items"].size() == 2);
    CHECK(first["items"][0]["id"] == "a");
    REQUIRE(first["next"].is_string());
    auto second =
        f.expect(200, "GET", "/api/v1/projects?limit=2&cursor=" + first["next"].get<std::string>());
    REQUIRE(second["items"].size() == 1);
    CHECK(second["items"][0]["id"] == "c");
    CHECK(second["next"].is_null());
    CHECK(f.error_code(400, "GET", "/api/v1/projects?limit=0") == "invalid_argument");
    CHECK(f.error_code(400, "GET", "/api/v1/projects?limit=ten") == "invalid_argument");
    CHECK(f.error_code(400, "GET", "/api/v1/projects?limit=100000") == "invalid_argument");
  }
}

TEST_CASE("api: tasks") {
  fixture f;
  f.make_project("p");
  SUBCASE("create and get, with the peer's field names") {
    auto created = f.expect(201, "POST", "/api/v1/projects/p/tasks",
                            R"({"kind": "build", "capability": "cpp", "priority": 3,
                                "payload": {"file": "a.cpp"}, "max_attempts": 2,
                                "timeout_ms": 5000, "extra": "ignored"})");
    auto id = created["id"].get<std::string>();
    CHECK(created["project_id"] == "p");
    CHECK(created["project"] == "p");
    CHECK(created["kind"] == "build");
    CHECK(created["capability"] == "cpp");
    CHECK(created["priority"] == 3);
    CHECK(created["payload"]["file"] == "a.cpp");
    CHECK(created["max_attempts"] == 2);
    CHECK(created["timeout_ms"] == 5000);
    CHECK(created["status"] == "queued");  // no dependencies, nobody serves "cpp" yet
    CHECK(created["state"] == created["status"]);
    auto got = f.expect(200, "GET", "/api/v1/tasks/" + id);
    CHECK(got["id"] == id);
    CHECK(got["status"] == "queued");
  }
  SUBCASE("dependencies") {
    auto a = f.make_task("p", {{"kind", "build"}});
    auto b = f.expect(201, "POST", "/api/v1/projects/p/tasks",
                      json{{"kind", "test"}, {"depends_on", {a}}}.dump());
    CHECK(b["status"] == "pending");
    CHECK(b["depends_on"] == json{a});
    CHECK(f.error_code(404, "POST", "/api/v1/projects/p/tasks",
                       R"({"kind": "test", "depends_on": ["t-missing"]})") == "not_found");
  }
  SUBCASE("bad input") {
    CHECK(f.error_code(400, "POST", "/api/v1/projects/p/tasks", "{\"kind\"") == "bad_json");
    CHECK(f.error_code(400, "POST", "/api/v1/projects/p/tasks", R"({"priority": 1})") ==
          "invalid_argument");
    CHECK(f.error_code(400, "POST", "/api/v1/projects/p/tasks",
                       R"({"kind": "k", "priority": "high"})") == "invalid_argument");
    CHECK(f.error_code(400, "POST", "/api/v1/projects/p/tasks",
                       R"({"kind": "k", "depends_on": "t-1"})") == "invalid_argument");
    CHECK(f.error_code(400, "POST", "/api/v1/projects/p/tasks",
                       R"({"kind": "k", "project": "other"})") == "invalid_argument");
    CHECK(f.error_code(400, "POST", "/api/v1/projects/p/tasks", R"({"kind": "k", "id": "a b"})") ==
          "invalid_argument");
    CHECK(f.error_code(400, "POST", "/api/v1/projects/p/tasks", "42") == "invalid_argument");
  }
  SUBCASE("unknown ids") {
    CHECK(f.error_code(404, "POST", "/api/v1/projects/nope/tasks", R"({"kind": "k"})") ==
          "not_found");
    CHECK(f.error_code(404, "GET", "/api/v1/projects/nope/tasks") == "not_found");
    CHECK(f.error_code(404, "GET", "/api/v1/tasks/t-nope") == "not_found");
    CHECK(f.error_code(404, "POST", "/api/v1/tasks/t-nope/cancel") == "not_found");
    CHECK(f.error_code(404, "POST", "/api/v1/tasks/t-nope/approve") == "not_found");
    CHECK(f.error_code(404, "POST", "/api/v1/tasks/t-nope/reject") == "not_found");
    CHECK(f.error_code(404, "GET", "/api/v1/tasks/t-nope/attempts") == "not_found");
  }
  SUBCASE("cancel") {
    auto id = f.make_task("p", {{"kind", "build"}});
    auto cancelled =
        f.expect(200, "POST", "/api/v1/tasks/" + id + "/cancel", R"({"reason": "not needed"})");
    CHECK(cancelled["status"] == "cancelled");
    CHECK(cancelled["error"]["message"] == "not needed");
    CHECK(f.error_code(409, "POST", "/api/v1/tasks/" + id + "/cancel") == "illegal_transition");
    auto other = f.make_task("p", {{"kind", "build"}});
    CHECK(f.error_code(400, "POST", "/api/v1/tasks/" + other + "/cancel", "{") == "bad_json");
    CHECK(f.error_code(400, "POST", "/api/v1/tasks/" + other + "/cancel", R"({"reason": 1})") ==
          "invalid_argument");

    // retry: the cancelled task runs again as a new task; the original stays.
    auto retried = f.expect(201, "POST", "/api/v1/tasks/" + id + "/retry");
    CHECK(retried["retry_of"] == id);
    CHECK(retried["id"] != id);
    CHECK(retried["kind"] == "build");
    CHECK(f.expect(200, "GET", "/api/v1/tasks/" + id)["status"] == "cancelled");
    CHECK(f.error_code(409, "POST", "/api/v1/tasks/" + other + "/retry") == "illegal_transition");
    CHECK(f.error_code(404, "POST", "/api/v1/tasks/t-nope/retry") == "not_found");
  }
  SUBCASE("approve and reject") {
    auto a = f.make_task("p", {{"kind", "deploy"}, {"requires_approval", true}});
    CHECK(f.expect(200, "GET", "/api/v1/tasks/" + a)["status"] == "awaiting_approval");
    CHECK(f.error_code(400, "POST", "/api/v1/tasks/" + a + "/approve", R"({"by": 7})") ==
          "invalid_argument");
    auto approved = f.expect(200, "POST", "/api/v1/tasks/" + a + "/approve", R"({"by": "ann"})");
    CHECK(approved["status"] == "queued");
    CHECK(f.error_code(409, "POST", "/api/v1/tasks/" + a + "/approve") == "illegal_transition");
    CHECK(f.error_code(409, "POST", "/api/v1/tasks/" + a + "/reject") == "illegal_transition");

    auto b = f.make_task("p", {{"kind", "deploy"}, {"requires_approval", true}});
    auto rejected = f.expect(200, "POST", "/api/v1/tasks/" + b + "/reject",
                             R"({"by": "bob", "reason": "too risky"})");
    CHECK(rejected["status"] == "cancelled");
    CHECK(rejected["error"]["code"] == "rejected");
    CHECK(f.error_code(409, "POST", "/api/v1/tasks/" + b + "/reject") == "illegal_transition");
    CHECK(f.error_code(400, "POST", "/api/v1/tasks/" + b + "/reject", "[") == "bad_json");
  }
  SUBCASE("list with filters and cursor pagination") {
    auto q1 = f.make_task("p", {{"kind", "build"}, {"capability", "cpp"}});
    auto q2 = f.make_task("p", {{"kind", "build"}, {"capability", "py"}});
    auto w = f.make_task("p", {{"kind", "deploy"}, {"requires_approval", true}});
    auto q3 = f.make_task("p", {{"kind", "build"}, {"capability", "cpp"}});

    auto all = f.expect(200, "GET", "/api/v1/projects/p/tasks");
    CHECK(all["items"].size() == 4);
    CHECK(all["next"].is_null());

    auto queued = f.expect(200, "GET", "/api/v1/projects/p/tasks?status=queued");
    CHECK(queued["items"].size() == 3);
    auto waiting = f.expect(200, "GET", "/api/v1/projects/p/tasks?state=awaiting_approval");
    REQUIRE(waiting["items"].size() == 1);
    CHECK(waiting["items"][0]["id"] == w);
    auto both = f.expect(200, "GET", "/api/v1/projects/p/tasks?status=queued,awaiting_approval");
    CHECK(both["items"].size() == 4);
    auto cpp = f.expect(200, "GET", "/api/v1/projects/p/tasks?capability=cpp");
    REQUIRE(cpp["items"].size() == 2);
    CHECK(cpp["items"][0]["id"] == q1);
    CHECK(cpp["items"][1]["id"] == q3);

    auto page1 = f.expect(200, "GET", "/api/v1/projects/p/tasks?limit=3");
    REQUIRE(page1["items"].size() == 3);
    REQUIRE(page1["next"].is_string());
    auto page2 = f.expect(
        200, "GET", "/api/v1/projects/p/tasks?limit=3&cursor=" + page1["next"].get<std::string>());
    REQUIRE(page2["items"].size() == 1);
    CHECK(page2["items"][0]["id"] == q3);
    CHECK(page2["next"].is_null());
    (void)q2;

    CHECK(f.error_code(400, "GET", "/api/v1/projects/p/tasks?status=sleeping") ==
          "invalid_argument");
    CHECK(f.error_code(400, "GET", "/api/v1/projects/p/tasks?limit=-1") == "invalid_argument");
  }
}

TEST_CASE("api: attempts, events and agents of a task that ran") {
  fixture f;
  f.make_project("p");
  CHECK(f.expect(200, "GET", "/api/v1/agent-kinds")["items"] == json{"echo"});
  CHECK(f.expect(200, "GET", "/api/v1/agents")["items"].empty());

  auto name = f.orch.spawn({.kind = "echo", .name = "echo-1", .project = "p"});
  REQUIRE(name);
  auto id = f.make_task("p", {{"kind", "echo"}, {"payload", {{"x", 1}}}});
  auto done = f.orch.wait(id, std::chrono::seconds(30));
  REQUIRE(done);
  REQUIRE(done->state == aise::task_state::succeeded);

  auto task = f.expect(200, "GET", "/api/v1/tasks/" + id);
  CHECK(task["status"] == "succeeded");
  CHECK(task["result"]["x"] == 1);

  auto attempts = f.expect(200, "GET", "/api/v1/tasks/" + id + "/attempts");
  REQUIRE(attempts["items"].size() == 1);
  CHECK(attempts["items"][0]["number"] == 1);
  CHECK(attempts["items"][0]["agent"] == "echo-1");
  CHECK(attempts["items"][0]["outcome"] == "succeeded");
  CHECK(f.error_code(409, "POST", "/api/v1/tasks/" + id + "/cancel") == "illegal_transition");

  auto events = f.expect(200, "GET", "/api/v1/projects/p/events");
  REQUIRE(events["items"].size() >= 3);
  std::uint64_t last = 0;
  bool saw_succeeded = false;
  for (const auto& e : events["items"]) {
    CHECK(e["sequence"].get<std::uint64_t>() > last);
    last = e["sequence"].get<std::uint64_t>();
    if (e["type"] == "task.succeeded" && e["subject"] == id) saw_succeeded = true;
  }
  CHECK(saw_succeeded);
  auto after = f.expect(200, "GET", "/api/v1/projects/p/events?after=" + std::to_string(last - 1));
  REQUIRE(after["items"].size() == 1);
  CHECK(after["items"][0]["sequence"] == last);
  auto paged = f.expect(200, "GET", "/api/v1/projects/p/events?limit=1");
  CHECK(paged["items"].size() == 1);
  CHECK(paged["next"] == "1");
  CHECK(f.error_code(404, "GET", "/api/v1/projects/nope/events") == "not_found");
  CHECK(f.error_code(400, "GET", "/api/v1/projects/p/events?after=x") == "invalid_argument");

  auto agents = f.expect(200, "GET", "/api/v1/agents");
  REQUIRE(agents["items"].size() == 1);
  CHECK(agents["items"][0]["name"] == "echo-1");
  CHECK(agents["items"][0]["kind"] == "echo");
  CHECK(agents["items"][0]["status"] == "running");
  CHECK(f.expect(200, "GET", "/api/v1/agents?project=p")["items"].size() == 1);
  CHECK(f.expect(200, "GET", "/api/v1/agents?project=other")["items"].empty());
  auto agent = f.expect(200, "GET", "/api/v1/agents/echo-1");
  CHECK(agent["name"] == "echo-1");
  CHECK(agent["capabilities"] == json{"echo"});
  CHECK(f.error_code(404, "GET", "/api/v1/agents/nobody") == "not_found");
}

TEST_CASE("api: on a SQLite store") {
  auto dir = std::filesystem::temp_directory_path() /
             ("aise_server_api_" +
              std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::filesystem::create_directories(dir);
  {
    aise::sql::store_options o;
    o.url = "sqlite:" + (dir / "api.db").string();
    o.sqlite_synchronous = "NORMAL";
    auto store = aise::sql::open_store(o);
    REQUIRE(store);
    fixture f(*store);
    CHECK(f.expect(200, "GET", "/readyz")["store"] == "sqlite");
    f.make_project("p");
    auto id = f.make_task("p", {{"kind", "build"}});
    CHECK(f.expect(200, "GET", "/api/v1/tasks/" + id)["status"] == "queued");
    CHECK(f.expect(200, "GET", "/api/v1/projects/p/tasks?status=queued")["items"].size() == 1);
    CHECK(f.expect(200, "POST", "/api/v1/tasks/" + id + "/cancel")["status"] == "cancelled");
    CHECK(f.error_code(409, "POST", "/api/v1/tasks/" + id + "/cancel") == "illegal_transition");
    CHECK(f.error_code(404, "GET", "/api/v1/tasks/t-nope") == "not_found");
    CHECK(f.expect(200, "GET", "/api/v1/projects/p/events")["items"].size() >= 2);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}
