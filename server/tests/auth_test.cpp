// aise-server's authentication and access control, through api::handle:
// the role matrix over the whole route table, login / refresh / logout,
// disabled users, user administration, rate limits (429 + Retry-After),
// security headers and the audit trail.
#include <aise/agent.hpp>
#include <aise/artifacts.hpp>
#include <aise/auth.hpp>
#include <aise/metrics.hpp>
#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>
#include <aise/task_context.hpp>

#include <chrono>
#include <doctest/doctest.h>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "../../tests/unit/artifact_test_util.hpp"
#include "api.hpp"
#include "rate_limit.hpp"
#include "test_auth.hpp"

namespace {

using json = nlohmann::json;
using aise::server::request;
using aise::server::response;
using aise::server::route_access;
using aise::server::route_scope;

class idle_agent : public aise::agent {
 public:
  idle_agent() {
    on_task("idle", [](aise::task_context& ctx) -> aise::result<json> { return ctx.payload(); });
  }
};

std::string header(const response& res, std::string_view name) {
  for (const auto& [k, v] : res.headers) {
    if (k == name) return v;
  }
  return {};
}

struct fixture {
  explicit fixture(aise::server::api_options options = aise::server::test::unlimited())
      : orch(rt, orch_options(store)),
        artifacts(open_artifacts()),
        api(orch, *users.auth, with_metrics(options), artifacts) {
    REQUIRE(orch.register_kind("idle", [] { return std::make_unique<idle_agent>(); }));
  }

  aise::server::api_options with_metrics(aise::server::api_options o) {
    o.metrics = &metrics;
    return o;
  }

  static aise::orchestrator_options orch_options(std::shared_ptr<aise::store> s) {
    aise::orchestrator_options o;
    o.store = std::move(s);
    return o;
  }

  std::shared_ptr<aise::artifact_store> open_artifacts() {
    aise::artifact_store_options o;
    o.root = dir.path();
    o.metadata = store;
    o.sync = false;
    auto a = aise::open_artifact_store(o);
    REQUIRE(a);
    return *a;
  }

  response call(const std::string& method, const std::string& target,
                const std::string& authorization, std::string body = {},
                std::string remote = "10.0.0.1") const {
    std::vector<std::pair<std::string, std::string>> headers;
    if (!authorization.empty()) headers.emplace_back("authorization", authorization);
    return api.handle(
        request{method, target, std::move(body), std::move(remote), std::move(headers)});
  }

  json expect(int status, const std::string& method, const std::string& target,
              const std::string& authorization, std::string body = {}) const {
    auto res = call(method, target, authorization, std::move(body));
    INFO(method << " " << target << " -> " << res.body);
    CHECK(res.status == status);
    json j = json::parse(res.body, nullptr, false);
    REQUIRE_FALSE(j.is_discarded());
    return j;
  }

  aise::server::test::test_auth users;
  aise::test::scratch_dir dir;
  std::shared_ptr<aise::store> store = aise::make_memory_store();
  aise::metrics::registry metrics;
  aise::runtime rt;
  aise::orchestrator orch;
  std::shared_ptr<aise::artifact_store> artifacts;
  aise::server::api api;
};

// What a caller of the matrix is.
enum class who { nobody, viewer, maintainer, admin, other_admin, global_admin, disabled };

const char* name_of(who w) {
  switch (w) {
    case who::nobody:
      return "no token";
    case who::viewer:
      return "viewer";
    case who::maintainer:
      return "maintainer";
    case who::admin:
      return "admin of the project";
    case who::other_admin:
      return "admin of another project only";
    case who::global_admin:
      return "global admin";
    case who::disabled:
      return "disabled user";
  }
  return "?";
}

aise::project_role role_of(who w) {
  switch (w) {
    case who::viewer:
      return aise::project_role::viewer;
    case who::maintainer:
      return aise::project_role::maintainer;
    case who::admin:
      return aise::project_role::admin;
    default:
      return aise::project_role::none;
  }
}

// What the route asks of a caller in its project.
aise::project_role needed(route_access a) {
  switch (a) {
    case route_access::viewer:
      return aise::project_role::viewer;
    case route_access::maintainer:
      return aise::project_role::maintainer;
    case route_access::project_admin:
      return aise::project_role::admin;
    default:
      return aise::project_role::none;
  }
}

enum class outcome { allowed, unauthenticated, forbidden, hidden };

const char* name_of(outcome o) {
  switch (o) {
    case outcome::allowed:
      return "allowed";
    case outcome::unauthenticated:
      return "401";
    case outcome::forbidden:
      return "403";
    case outcome::hidden:
      return "404";
  }
  return "?";
}

// The rules of server/README.md, "Authentication and roles", written out
// independently of the server's own code.
outcome expected(const aise::server::route_info& r, who w, bool own_project) {
  if (r.access == route_access::open) return outcome::allowed;
  if (w == who::nobody || w == who::disabled) return outcome::unauthenticated;
  if (r.access == route_access::user) return outcome::allowed;
  if (w == who::global_admin) return outcome::allowed;
  if (r.access == route_access::global_admin) return outcome::forbidden;
  auto role = own_project ? role_of(w) : aise::project_role::none;
  if (role == aise::project_role::none) return outcome::hidden;
  return role >= needed(r.access) ? outcome::allowed : outcome::forbidden;
}

}  // namespace

TEST_CASE("auth matrix: every route x every kind of caller x own and foreign project") {
  fixture f;
  std::map<std::string, std::string> artifact_of;
  // Projects: "own" (where viewer, maintainer and admin have their roles),
  // "foreign" (nobody's), "other" (the other admin's). Each has a task and
  // an agent; "target" is the user the user-administration routes act on.
  for (const char* p : {"own", "foreign", "other"}) {
    f.expect(201, "POST", "/api/v1/projects", f.users.admin, json{{"id", p}, {"name", p}}.dump());
    f.expect(201, "POST", std::string("/api/v1/projects/") + p + "/tasks", f.users.admin,
             json{{"id", std::string("t-") + p}, {"kind", "later"}}.dump());
    REQUIRE(f.orch.spawn({.kind = "idle", .name = std::string("agent-") + p, .project = p}));
    auto a = f.artifacts->put({p, "", "notes.txt", "text/plain"}, "hello");
    REQUIRE(a);
    artifact_of[p] = a->id;
  }
  auto target = f.users.add_user("target");
  std::map<who, std::string> bearer;
  bearer[who::nobody] = "";
  bearer[who::global_admin] = f.users.admin;
  for (who w : {who::viewer, who::maintainer, who::admin, who::other_admin, who::disabled}) {
    std::string name = "u" + std::to_string(static_cast<int>(w));
    auto id = f.users.add_user(name);
    if (w == who::other_admin) {
      REQUIRE(f.users.auth->set_role(id, "other", aise::project_role::admin, {}));
    } else if (w == who::disabled) {
      REQUIRE(f.users.auth->set_role(id, "own", aise::project_role::admin, {}));
    } else {
      REQUIRE(f.users.auth->set_role(id, "own", role_of(w), {}));
    }
    bearer[w] = f.users.bearer(name);
    if (w == who::disabled) REQUIRE(f.users.auth->set_disabled(id, true, {}));
  }

  auto routes = aise::server::api::routes();
  REQUIRE(routes.size() >= 20);
  int cells = 0;
  for (const auto& r : routes) {
    for (bool own : {true, false}) {
      std::string project = own ? "own" : "foreign";
      std::string param;
      switch (r.scope) {
        case route_scope::project:
          param = project;
          break;
        case route_scope::task:
          param = "t-" + project;
          break;
        case route_scope::agent:
          param = "agent-" + project;
          break;
        case route_scope::artifact:
          param = artifact_of[project];
          break;
        case route_scope::user:
          param = target;
          break;
        case route_scope::none:
          break;
      }
      std::string target_path = r.path;
      // Path templates name their parameters ("{id}", "{name}").
      auto fill = [&target_path](const std::string& value) {
        auto open = target_path.find('{');
        if (open == std::string::npos) return;
        target_path.replace(open, target_path.find('}', open) - open + 1, value);
      };
      fill(param.empty() ? std::string("app.js") : param);  // /ui/{name}: a dashboard file
      fill("notes.txt");  // a second parameter is an artifact name (each project has one)
      for (who w : {who::nobody, who::viewer, who::maintainer, who::admin, who::other_admin,
                    who::global_admin, who::disabled}) {
        auto want = expected(r, w, own);
        auto res = f.call(r.method, target_path, bearer[w]);
        INFO(r.method << " " << target_path << " as " << name_of(w) << ": expected "
                      << name_of(want) << ", got " << res.status << " " << res.body);
        ++cells;
        switch (want) {
          case outcome::allowed:
            // The handler ran: whatever it answered (400 for the empty
            // body most routes take, 409 for a repeated change), it was
            // not an access decision.
            CHECK(res.status != 401);
            CHECK(res.status != 403);
            CHECK(res.status != 404);
            CHECK(res.status < 500);
            break;
          case outcome::unauthenticated:
            CHECK(res.status == 401);
            CHECK(header(res, "WWW-Authenticate").rfind("Bearer", 0) == 0);
            break;
          case outcome::forbidden:
            CHECK(res.status == 403);
            CHECK(json::parse(res.body)["error"]["code"] == "forbidden");
            break;
          case outcome::hidden:
            CHECK(res.status == 404);
            CHECK(json::parse(res.body)["error"]["code"] == "not_found");
            break;
        }
      }
    }
  }
  CHECK(cells == static_cast<int>(routes.size()) * 14);
}

TEST_CASE("auth: a hidden project or task looks exactly like a missing one") {
  fixture f;
  f.expect(201, "POST", "/api/v1/projects", f.users.admin, R"({"id": "secret", "name": "s"})");
  f.expect(201, "POST", "/api/v1/projects/secret/tasks", f.users.admin,
           R"({"id": "t-secret", "kind": "k"})");
  f.users.add_user("eve");
  auto eve = f.users.bearer("eve");
  auto hidden = f.call("GET", "/api/v1/projects/secret", eve);
  auto missing = f.call("GET", "/api/v1/projects/nothing", f.users.admin);
  CHECK(hidden.status == 404);
  auto hj = json::parse(hidden.body);
  auto mj = json::parse(missing.body);
  CHECK(hj["error"]["message"] == "project 'secret' not found");
  CHECK(mj["error"]["message"] == "project 'nothing' not found");
  CHECK(hj["error"]["details"] == mj["error"]["details"]);
  auto hidden_task = json::parse(f.call("GET", "/api/v1/tasks/t-secret", eve).body);
  auto missing_task = json::parse(f.call("GET", "/api/v1/tasks/t-none", eve).body);
  CHECK(hidden_task["error"]["message"] == "task 't-secret' not found");
  CHECK(missing_task["error"]["message"] == "task 't-none' not found");
}

TEST_CASE("auth: a creator administers its project; listings show only the caller's projects") {
  fixture f;
  auto ann_id = f.users.add_user("ann");
  f.users.add_user("bob");
  auto ann = f.users.bearer("ann");
  auto bob = f.users.bearer("bob");
  f.expect(201, "POST", "/api/v1/projects", ann, R"({"id": "a1", "name": "A1"})");
  f.expect(201, "POST", "/api/v1/projects", ann, R"({"id": "a2", "name": "A2"})");
  f.expect(201, "POST", "/api/v1/projects", bob, R"({"id": "b1", "name": "B1"})");
  f.expect(201, "POST", "/api/v1/projects", f.users.admin, R"({"id": "r1", "name": "R1"})");

  auto mine = f.expect(200, "GET", "/api/v1/projects", ann);
  REQUIRE(mine["items"].size() == 2);
  CHECK(mine["items"][0]["id"] == "a1");
  CHECK(mine["items"][1]["id"] == "a2");
  auto page = f.expect(200, "GET", "/api/v1/projects?limit=1", ann);
  REQUIRE(page["items"].size() == 1);
  CHECK(page["next"] == "a1");
  auto rest = f.expect(200, "GET", "/api/v1/projects?limit=1&cursor=a1", ann);
  REQUIRE(rest["items"].size() == 1);
  CHECK(rest["items"][0]["id"] == "a2");
  CHECK(rest["next"].is_null());
  CHECK(f.expect(200, "GET", "/api/v1/projects", f.users.admin)["items"].size() == 4);

  // ann, admin of a1, makes bob a viewer there.
  f.expect(200, "POST", "/api/v1/projects/a1/members", ann,
           R"({"username": "bob", "role": "viewer"})");
  CHECK(f.expect(200, "GET", "/api/v1/projects", bob)["items"].size() == 2);
  CHECK(f.expect(403, "POST", "/api/v1/projects/a1/tasks", bob,
                 R"({"kind": "k"})")["error"]["code"] == "forbidden");
  auto members = f.expect(200, "GET", "/api/v1/projects/a1/members", ann);
  CHECK(members["items"].size() == 2);
  f.expect(404, "POST", "/api/v1/projects/a1/members", ann,
           R"({"username": "nobody", "role": "viewer"})");
  f.expect(400, "POST", "/api/v1/projects/a1/members", ann,
           R"({"username": "bob", "role": "owner"})");

  auto me = f.expect(200, "GET", "/api/v1/me", ann);
  CHECK(me["id"] == ann_id);
  CHECK(me["roles"]["a1"] == "admin");
  CHECK_FALSE(me.contains("password_hash"));

  // Agents of other projects are neither listed nor found.
  REQUIRE(f.orch.spawn({.kind = "idle", .name = "agent-b1", .project = "b1"}));
  CHECK(f.expect(200, "GET", "/api/v1/agents", ann)["items"].empty());
  CHECK(f.expect(200, "GET", "/api/v1/agents", bob)["items"].size() == 1);
  f.expect(404, "GET", "/api/v1/agents/agent-b1", ann);
  f.expect(200, "GET", "/api/v1/agents/agent-b1", bob);
}

TEST_CASE("auth: login, refresh rotation, logout and bad tokens over the api") {
  fixture f;
  auto bad = f.expect(401, "POST", "/api/v1/auth/login", "",
                      R"({"username": "root", "password": "nope"})");
  CHECK(bad["error"]["code"] == "unauthorized");
  f.expect(400, "POST", "/api/v1/auth/login", "", R"({"username": "root"})");
  f.expect(400, "POST", "/api/v1/auth/login", "", "not json");

  auto tokens = f.expect(200, "POST", "/api/v1/auth/login", "",
                         R"({"username": "root", "password": "root-password"})");
  CHECK(tokens["token_type"] == "Bearer");
  CHECK(tokens["expires_in"] == 900);
  auto bearer = "Bearer " + tokens["access_token"].get<std::string>();
  f.expect(200, "GET", "/api/v1/me", bearer);
  f.expect(200, "GET", "/api/v1/me", "bearer " + tokens["access_token"].get<std::string>());

  auto refreshed = f.expect(200, "POST", "/api/v1/auth/refresh", "",
                            json{{"refresh_token", tokens["refresh_token"]}}.dump());
  CHECK(refreshed["refresh_token"] != tokens["refresh_token"]);
  // The old refresh token is spent.
  f.expect(401, "POST", "/api/v1/auth/refresh", "",
           json{{"refresh_token", tokens["refresh_token"]}}.dump());

  auto again = f.expect(200, "POST", "/api/v1/auth/login", "",
                        R"({"username": "root", "password": "root-password"})");
  f.expect(200, "POST", "/api/v1/auth/logout", bearer,
           json{{"refresh_token", again["refresh_token"]}}.dump());
  f.expect(401, "POST", "/api/v1/auth/refresh", "",
           json{{"refresh_token", again["refresh_token"]}}.dump());
  f.expect(400, "POST", "/api/v1/auth/logout", bearer, R"({"refresh_token": "unknown"})");

  // Malformed or forged tokens.
  for (std::string h : {std::string("Bearer"), std::string("Bearer  "), std::string("Basic abc"),
                        std::string("Bearer abc.def.ghi"), bearer + "x",
                        std::string("Token ") + tokens["access_token"].get<std::string>()}) {
    auto res = f.call("GET", "/api/v1/me", h);
    INFO(h);
    CHECK(res.status == 401);
    CHECK(header(res, "WWW-Authenticate") == R"(Bearer realm="aise", error="invalid_token")");
  }
  // A token of another issuer's key.
  aise::jwt_claims c{"root", "aise", "aise-api", std::chrono::system_clock::now(),
                     std::chrono::system_clock::now() + std::chrono::minutes(5)};
  auto foreign = aise::sign_jwt(c, "another-secret-another-secret-another-secret");
  CHECK(f.call("GET", "/api/v1/me", "Bearer " + foreign).status == 401);
  // A token like the FastAPI peer's: same secret, sub = the user name.
  auto peer = aise::sign_jwt(c, aise::server::test::jwt_secret);
  CHECK(f.call("GET", "/api/v1/me", "Bearer " + peer).status == 200);
}

TEST_CASE("auth: user administration and disabled users") {
  fixture f;
  auto created = f.expect(201, "POST", "/api/v1/users", f.users.admin,
                          R"({"username": "carl", "password": "carl-password"})");
  auto id = created["id"].get<std::string>();
  CHECK(created["global_admin"] == false);
  CHECK_FALSE(created.contains("password_hash"));
  f.expect(409, "POST", "/api/v1/users", f.users.admin,
           R"({"username": "carl", "password": "carl-password"})");
  f.expect(400, "POST", "/api/v1/users", f.users.admin,
           R"({"username": "c d", "password": "carl-password"})");
  f.expect(400, "POST", "/api/v1/users", f.users.admin, R"({"username": "dan", "password": "x"})");
  f.expect(400, "POST", "/api/v1/users", f.users.admin,
           R"({"username": "dan", "password": "dan-password", "global_admin": "yes"})");
  CHECK(f.expect(200, "GET", "/api/v1/users", f.users.admin)["items"].size() == 2);
  f.expect(404, "GET", "/api/v1/users/u-none", f.users.admin);

  f.expect(201, "POST", "/api/v1/projects", f.users.admin, R"({"id": "p", "name": "P"})");
  f.expect(200, "POST", "/api/v1/users/" + id + "/roles", f.users.admin,
           R"({"project": "p", "role": "maintainer"})");
  CHECK(f.expect(200, "GET", "/api/v1/users/" + id, f.users.admin)["roles"]["p"] == "maintainer");

  auto carl =
      "Bearer " + f.expect(200, "POST", "/api/v1/auth/login", "",
                           R"({"username": "carl", "password": "carl-password"})")["access_token"]
                      .get<std::string>();
  f.expect(201, "POST", "/api/v1/projects/p/tasks", carl, R"({"kind": "k"})");
  f.expect(403, "POST", "/api/v1/users", carl, R"({"username": "x", "password": "xxxxxxxxxx"})");

  // Disabled: its still-valid access token is refused at once, and so is a login.
  CHECK(f.expect(200, "POST", "/api/v1/users/" + id + "/disable", f.users.admin)["disabled"] ==
        true);
  f.expect(401, "GET", "/api/v1/projects/p/tasks", carl);
  f.expect(401, "POST", "/api/v1/auth/login", "",
           R"({"username": "carl", "password": "carl-password"})");
  f.expect(200, "PATCH", "/api/v1/users/" + id, f.users.admin, R"({"disabled": false})");
  f.expect(200, "GET", "/api/v1/projects/p/tasks", carl);
  f.expect(200, "PATCH", "/api/v1/users/" + id, f.users.admin, R"({"global_admin": true})");
  f.expect(200, "GET", "/api/v1/users", carl);

  // A global admin cannot lock itself out.
  auto root_id = f.expect(200, "GET", "/api/v1/me", f.users.admin)["id"].get<std::string>();
  f.expect(409, "POST", "/api/v1/users/" + root_id + "/disable", f.users.admin);
  f.expect(409, "PATCH", "/api/v1/users/" + root_id, f.users.admin, R"({"global_admin": false})");
}

TEST_CASE("auth: the audit trail records logins and administrative changes") {
  fixture f;
  f.expect(401, "POST", "/api/v1/auth/login", "", R"({"username": "root", "password": "bad"})");
  f.expect(200, "POST", "/api/v1/auth/login", "",
           R"({"username": "root", "password": "root-password"})");
  auto created = f.expect(201, "POST", "/api/v1/users", f.users.admin,
                          R"({"username": "dora", "password": "dora-password"})");
  auto id = created["id"].get<std::string>();
  f.expect(200, "POST", "/api/v1/users/" + id + "/roles", f.users.admin,
           R"({"project": "p", "role": "viewer"})");
  f.expect(200, "POST", "/api/v1/users/" + id + "/disable", f.users.admin);

  auto audit = f.expect(200, "GET", "/api/v1/audit", f.users.admin);
  std::vector<std::string> actions;
  for (const auto& e : audit["items"]) actions.push_back(e["action"].get<std::string>());
  // The first entry is the fixture's own admin.
  std::vector<std::string> want = {"user_created", "login_failed", "login",
                                   "user_created", "role_set",     "user_disabled"};
  CHECK(actions == want);
  const auto& failed = audit["items"][1];
  CHECK(failed["subject"] == "root");
  CHECK(failed["ip"] == "10.0.0.1");
  CHECK(failed["actor"] == "");
  const auto& role = audit["items"][4];
  CHECK(role["actor"] == "root");
  CHECK(role["subject"] == "dora:p");
  CHECK(role["details"]["role"] == "viewer");
  auto after = f.expect(200, "GET", "/api/v1/audit?after=5", f.users.admin);
  REQUIRE(after["items"].size() == 1);
  CHECK(after["items"][0]["action"] == "user_disabled");
  f.users.add_user("erin");
  f.expect(403, "GET", "/api/v1/audit", f.users.bearer("erin"));
}

TEST_CASE("auth: rate limits per address, per user and on login answer 429 with Retry-After") {
  SUBCASE("per address, before authentication") {
    auto o = aise::server::test::unlimited();
    o.ip_limit = {0.01, 3};
    fixture f(o);
    for (int i = 0; i < 3; ++i) CHECK(f.call("GET", "/healthz", "").status == 200);
    auto res = f.call("GET", "/api/v1/me", "");
    CHECK(res.status == 429);
    CHECK(json::parse(res.body)["error"]["code"] == "rate_limited");
    CHECK(header(res, "Retry-After") == "100");
    CHECK(header(res, "X-Content-Type-Options") == "nosniff");
    // Another address has its own bucket.
    CHECK(f.call("GET", "/healthz", "", {}, "10.0.0.2").status == 200);
  }
  SUBCASE("per user, after authentication") {
    auto o = aise::server::test::unlimited();
    o.user_limit = {0.5, 2};
    fixture f(o);
    f.users.add_user("eve");
    auto eve = f.users.bearer("eve");
    CHECK(f.call("GET", "/api/v1/me", eve).status == 200);
    CHECK(f.call("GET", "/api/v1/me", eve, {}, "10.0.0.7").status == 200);
    auto res = f.call("GET", "/api/v1/me", eve, {}, "10.0.0.8");  // a new address does not help
    CHECK(res.status == 429);
    CHECK(header(res, "Retry-After") == "2");
    CHECK(f.call("GET", "/api/v1/me", f.users.admin).status == 200);  // others are not affected
  }
  SUBCASE("logins per address") {
    auto o = aise::server::test::unlimited();
    o.login_limit = {0.1, 2};
    fixture f(o);
    const std::string wrong = R"({"username": "root", "password": "guess"})";
    CHECK(f.call("POST", "/api/v1/auth/login", "", wrong).status == 401);
    CHECK(f.call("POST", "/api/v1/auth/login", "", wrong).status == 401);
    auto res = f.call("POST", "/api/v1/auth/login", "", wrong);
    CHECK(res.status == 429);
    CHECK(header(res, "Retry-After") == "10");
    // The right password does not get through either until the bucket refills.
    CHECK(f.call("POST", "/api/v1/auth/login", "",
                 R"({"username": "root", "password": "root-password"})")
              .status == 429);
  }
}

TEST_CASE("auth: every response carries the security headers") {
  fixture f;
  for (const auto& [method, target, auth] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"GET", "/healthz", ""},
           {"GET", "/api/v1/me", f.users.admin},
           {"GET", "/api/v1/me", ""},
           {"GET", "/api/v1/nothing", ""},
           {"DELETE", "/api/v1/projects", f.users.admin}}) {
    auto res = f.call(method, target, auth);
    INFO(method << " " << target << " " << res.status);
    CHECK(header(res, "X-Content-Type-Options") == "nosniff");
    CHECK(header(res, "X-Frame-Options") == "DENY");
    CHECK(header(res, "Referrer-Policy") == "no-referrer");
    CHECK(header(res, "Content-Security-Policy") == "default-src 'none'; frame-ancestors 'none'");
    CHECK(header(res, "Cache-Control") == (target.rfind("/api/", 0) == 0 ? "no-store" : ""));
    CHECK(header(res, "Strict-Transport-Security").empty());
  }
}

TEST_CASE("rate limiter: token buckets refill at the rate, up to the burst") {
  aise::server::rate_limiter off({0, 1});
  CHECK_FALSE(off.enabled());
  auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  CHECK(off.take("k", t0).allowed);

  aise::server::rate_limiter l({2, 3, 2});
  CHECK(l.enabled());
  for (int i = 0; i < 3; ++i) CHECK(l.take("a", t0).allowed);
  auto refused = l.take("a", t0);
  CHECK_FALSE(refused.allowed);
  CHECK(refused.retry_after == std::chrono::seconds(1));
  CHECK(l.take("a", t0 + std::chrono::milliseconds(500)).allowed);  // one token back
  CHECK_FALSE(l.take("a", t0 + std::chrono::milliseconds(500)).allowed);
  CHECK(l.take("a", t0 + std::chrono::seconds(100)).allowed);  // full again, not more
  CHECK(l.take("a", t0 + std::chrono::seconds(100)).allowed);
  CHECK(l.take("a", t0 + std::chrono::seconds(100)).allowed);
  CHECK_FALSE(l.take("a", t0 + std::chrono::seconds(100)).allowed);
  // A clock that goes backwards does not mint tokens.
  CHECK_FALSE(l.take("a", t0).allowed);
  // max_keys 2: a third key makes room by dropping full buckets.
  CHECK(l.take("b", t0 + std::chrono::seconds(100)).allowed);
  CHECK(l.take("c", t0 + std::chrono::seconds(200)).allowed);
  CHECK(l.take("d", t0 + std::chrono::seconds(200)).allowed);
}

TEST_CASE("auth: each route of this slice has the access level server/README.md documents") {
  using a = route_access;
  const std::map<std::string, route_access> documented = {
      {"GET /healthz", a::open},
      {"GET /readyz", a::open},
      {"GET /metrics", a::open},
      {"GET /openapi.json", a::open},
      {"GET /docs", a::open},
      {"GET /", a::open},
      {"GET /ui/{name}", a::open},
      {"POST /api/v1/auth/login", a::open},
      {"POST /api/v1/auth/refresh", a::open},
      {"POST /api/v1/auth/logout", a::user},
      {"GET /api/v1/me", a::user},
      {"POST /api/v1/projects", a::user},
      {"GET /api/v1/projects", a::user},
      {"GET /api/v1/agent-kinds", a::user},
      {"GET /api/v1/agents", a::user},
      {"GET /api/v1/projects/{id}", a::viewer},
      {"GET /api/v1/projects/{id}/tasks", a::viewer},
      {"GET /api/v1/projects/{id}/events", a::viewer},
      {"GET /api/v1/tasks/{id}", a::viewer},
      {"GET /api/v1/tasks/{id}/attempts", a::viewer},
      {"GET /api/v1/agents/{name}", a::viewer},
      {"POST /api/v1/projects/{id}/tasks", a::maintainer},
      {"POST /api/v1/tasks/{id}/cancel", a::maintainer},
      {"POST /api/v1/tasks/{id}/retry", a::maintainer},
      {"POST /api/v1/agents", a::user},
      {"POST /api/v1/agents/{name}/stop", a::maintainer},
      {"POST /api/v1/agents/{name}/restart", a::maintainer},
      {"PUT /api/v1/projects/{id}/artifacts/{name}", a::maintainer},
      {"GET /api/v1/projects/{id}/artifacts", a::viewer},
      {"GET /api/v1/projects/{id}/artifacts/{name}/versions", a::viewer},
      {"GET /api/v1/artifacts/{id}", a::viewer},
      {"GET /api/v1/artifacts/{id}/content", a::viewer},
      {"POST /api/v1/tasks/{id}/approve", a::maintainer},
      {"POST /api/v1/tasks/{id}/reject", a::maintainer},
      {"PATCH /api/v1/projects/{id}", a::project_admin},
      {"POST /api/v1/projects/{id}/archive", a::project_admin},
      {"GET /api/v1/projects/{id}/members", a::project_admin},
      {"POST /api/v1/projects/{id}/members", a::project_admin},
      {"POST /api/v1/users", a::global_admin},
      {"GET /api/v1/users", a::global_admin},
      {"GET /api/v1/users/{id}", a::global_admin},
      {"PATCH /api/v1/users/{id}", a::global_admin},
      {"POST /api/v1/users/{id}/disable", a::global_admin},
      {"POST /api/v1/users/{id}/roles", a::global_admin},
      {"GET /api/v1/audit", a::global_admin},
  };
  std::map<std::string, route_access> actual;
  for (const auto& r : aise::server::api::routes()) actual[r.method + " " + r.path] = r.access;
  for (const auto& [route, access] : documented) {
    INFO(route);
    REQUIRE(actual.count(route) == 1);
    CHECK(actual[route] == access);
  }
}
