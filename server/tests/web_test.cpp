// The dashboard's embedded files served by the API (GET / and /ui/{name}):
// content types, the Content-Security-Policy and the other security
// headers, ETag revalidation, unknown names, and that the page itself
// needs nothing the policy forbids (no inline script, style or handler).
// dashboard_test.py drives the page itself in headless Chromium.
#include "web.hpp"

#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>
#include <aise/store.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "api.hpp"
#include "test_auth.hpp"

namespace {

using aise::server::request;
using aise::server::response;

struct fixture {
  fixture() : orch(rt, options()), api(orch, *auth.auth, aise::server::test::unlimited()) {}

  static aise::orchestrator_options options() {
    aise::orchestrator_options o;
    o.store = aise::make_memory_store();
    return o;
  }

  response get(std::string target, std::optional<std::string> if_none_match = {}) const {
    request req{"GET", std::move(target), {}, "", {}};
    if (if_none_match) req.headers.emplace_back("if-none-match", *if_none_match);
    return api.handle(req);
  }

  aise::server::test::test_auth auth;
  aise::runtime rt;
  aise::orchestrator orch;
  aise::server::api api;
};

std::optional<std::string> header(const response& res, std::string_view name) {
  for (const auto& [key, value] : res.headers) {
    if (key == name) return value;
  }
  return std::nullopt;
}

std::string_view asset_body(std::string_view name) {
  for (const auto& a : aise::server::web_assets()) {
    if (a.name == name) return a.body;
  }
  return {};
}

}  // namespace

TEST_CASE("dashboard: GET / is the page with a strict CSP") {
  fixture f;
  auto res = f.get("/");
  CHECK(res.status == 200);
  CHECK(res.content_type == "text/html; charset=utf-8");
  CHECK(res.body.find("<title>aise dashboard</title>") != std::string::npos);
  CHECK(header(res, "Content-Security-Policy") == std::string(aise::server::dashboard_csp));
  CHECK(header(res, "X-Content-Type-Options") == "nosniff");
  CHECK(header(res, "X-Frame-Options") == "DENY");
  CHECK(header(res, "Cache-Control") == "no-cache");
  auto etag = header(res, "ETag");
  REQUIRE(etag);
  CHECK(etag->size() == 34);  // 32 hex digits in quotes
  CHECK(etag->front() == '"');
  // The query does not matter, as for every route.
  CHECK(f.get("/?project=demo").body == res.body);
}

TEST_CASE("dashboard: the script, style and icon have their content types") {
  fixture f;
  auto js = f.get("/ui/app.js");
  CHECK(js.status == 200);
  CHECK(js.content_type == "text/javascript; charset=utf-8");
  CHECK(js.body == asset_body("app.js"));
  CHECK(header(js, "Content-Security-Policy"));
  auto css = f.get("/ui/style.css");
  CHECK(css.status == 200);
  CHECK(css.content_type == "text/css; charset=utf-8");
  CHECK(header(css, "X-Content-Type-Options") == "nosniff");
  CHECK(header(js, "ETag") != header(css, "ETag"));
  auto icon = f.get("/ui/favicon.svg");
  CHECK(icon.status == 200);
  CHECK(icon.content_type == "image/svg+xml");
}

TEST_CASE("dashboard: If-None-Match with the ETag gets a 304 without a body") {
  fixture f;
  auto etag = header(f.get("/ui/app.js"), "ETag");
  REQUIRE(etag);
  auto same = f.get("/ui/app.js", *etag);
  CHECK(same.status == 304);
  CHECK(same.body.empty());
  CHECK(header(same, "ETag") == etag);
  CHECK(f.get("/ui/app.js", "W/" + *etag).status == 304);  // weak comparison
  CHECK(f.get("/ui/app.js", "\"other\", " + *etag).status == 304);
  CHECK(f.get("/ui/app.js", "*").status == 304);
  CHECK(f.get("/ui/app.js", "\"other\"").status == 200);
}

TEST_CASE("dashboard: unknown files and other methods are JSON errors") {
  fixture f;
  auto missing = f.get("/ui/nope.js");
  CHECK(missing.status == 404);
  CHECK(nlohmann::json::parse(missing.body)["error"]["code"] == "not_found");
  CHECK(f.get("/ui/embed.cmake").status == 404);   // the build script is not served
  CHECK(f.get("/ui/..%2Fapi.cpp").status == 404);  // names only, never paths
  CHECK(f.get("/ui/").status == 404);
  CHECK(f.get("/ui/app.js/x").status == 404);
  auto post = f.api.handle(request{"POST", "/", {}, "", {}});
  CHECK(post.status == 405);
  CHECK(header(post, "Allow") == "GET");
}

TEST_CASE("dashboard: the page needs nothing the CSP forbids") {
  auto html = asset_body("index.html");
  REQUIRE_FALSE(html.empty());
  // Every script has a src; no inline style or event handler attributes;
  // nothing from another host.
  std::size_t scripts = 0;
  for (auto at = html.find("<script"); at != std::string_view::npos;
       at = html.find("<script", at + 1)) {
    ++scripts;
    auto end = html.find('>', at);
    CHECK(html.substr(at, end - at).find(" src=\"/ui/") != std::string_view::npos);
  }
  CHECK(scripts == 1);
  CHECK(html.find("<style") == std::string_view::npos);
  CHECK(html.find(" style=") == std::string_view::npos);
  CHECK(html.find(" onclick=") == std::string_view::npos);
  CHECK(html.find(" onload=") == std::string_view::npos);
  CHECK(html.find(" onsubmit=") == std::string_view::npos);
  CHECK(html.find("http://") == std::string_view::npos);
  CHECK(html.find("https://") == std::string_view::npos);
  // The script puts server data on the page as text only.
  auto js = asset_body("app.js");
  REQUIRE_FALSE(js.empty());
  CHECK(js.find(".innerHTML") == std::string_view::npos);
  CHECK(js.find("eval(") == std::string_view::npos);
}
