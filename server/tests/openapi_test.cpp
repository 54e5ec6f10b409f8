// The OpenAPI document (server/openapi.json, served at /openapi.json) and
// the docs page: every route of the table is documented and nothing else
// is; the document is well-formed OpenAPI 3.x.
#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>

#include <algorithm>
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "api.hpp"
#include "embedded.hpp"
#include "test_auth.hpp"

namespace {

using json = nlohmann::json;

json document() {
  auto doc = json::parse(aise::server::openapi_document(), nullptr, false);
  REQUIRE_MESSAGE(!doc.is_discarded(), "server/openapi.json is not valid JSON");
  return doc;
}

const std::set<std::string> http_methods = {"get",     "put",  "post",  "delete",
                                            "options", "head", "patch", "trace"};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// Follows a local reference "#/a/b"; null when it does not resolve.
const json* resolve(const json& doc, const std::string& ref) {
  if (ref.rfind("#/", 0) != 0) return nullptr;
  try {
    const json& target = doc.at(json::json_pointer(ref.substr(1)));
    return &target;
  } catch (const json::exception&) {
    return nullptr;
  }
}

void collect_refs(const json& j, std::vector<std::string>& out) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() == "$ref" && it->is_string()) out.push_back(it->get<std::string>());
      collect_refs(*it, out);
    }
  } else if (j.is_array()) {
    for (const auto& e : j) collect_refs(e, out);
  }
}

// The path parameters an operation declares (its own and its path item's).
std::set<std::string> declared_path_params(const json& doc, const json& item, const json& op) {
  std::set<std::string> names;
  for (const json* list : {&item, &op}) {
    if (!list->contains("parameters")) continue;
    for (const auto& p0 : (*list)["parameters"]) {
      const json* p = &p0;
      if (p->contains("$ref")) p = resolve(doc, (*p)["$ref"].get<std::string>());
      REQUIRE(p != nullptr);
      if (p->value("in", "") == "path") {
        CHECK_MESSAGE(p->value("required", false), "path parameter not required");
        names.insert(p->value("name", ""));
      }
    }
  }
  return names;
}

}  // namespace

TEST_CASE("openapi: every route is documented and every documented route exists") {
  auto doc = document();
  std::set<std::string> in_table;
  for (const auto& r : aise::server::api::routes()) in_table.insert(lower(r.method) + " " + r.path);
  std::set<std::string> in_doc;
  for (const auto& [path, item] : doc["paths"].items()) {
    for (const auto& [method, op] : item.items()) {
      if (http_methods.count(method) != 0) in_doc.insert(method + " " + path);
    }
  }
  for (const auto& r : in_table) CHECK_MESSAGE(in_doc.count(r) == 1, "not in openapi.json: " << r);
  for (const auto& r : in_doc) CHECK_MESSAGE(in_table.count(r) == 1, "not a route: " << r);
  CHECK(in_table.size() >= 21);
}

TEST_CASE("openapi: the document is well-formed") {
  auto doc = document();
  REQUIRE(doc.is_object());
  REQUIRE(doc["openapi"].is_string());
  CHECK(doc["openapi"].get<std::string>().rfind("3.", 0) == 0);
  CHECK(doc["info"]["title"].is_string());
  CHECK(doc["info"]["version"].is_string());
  REQUIRE(doc["paths"].is_object());

  std::vector<std::string> refs;
  collect_refs(doc, refs);
  CHECK(refs.size() > 20);
  for (const auto& ref : refs) CHECK_MESSAGE(resolve(doc, ref) != nullptr, "unresolved: " << ref);

  std::set<std::string> operation_ids;
  const std::regex param(R"(\{([^}/]+)\})");
  for (const auto& [path, item] : doc["paths"].items()) {
    CHECK_MESSAGE(path.rfind('/', 0) == 0, path);
    std::set<std::string> in_template;
    for (std::sregex_iterator it(path.begin(), path.end(), param), end; it != end; ++it) {
      in_template.insert((*it)[1].str());
    }
    for (const auto& [method, op] : item.items()) {
      if (http_methods.count(method) == 0) continue;
      INFO(method << " " << path);
      CHECK(declared_path_params(doc, item, op) == in_template);
      REQUIRE(op.contains("operationId"));
      CHECK(operation_ids.insert(op["operationId"].get<std::string>()).second);
      REQUIRE(op["responses"].is_object());
      CHECK_FALSE(op["responses"].empty());
      for (const auto& [status, r] : op["responses"].items()) {
        CHECK((status == "default" || std::regex_match(status, std::regex("[1-5][0-9X]{2}"))));
        const json* resolved = r.contains("$ref") ? resolve(doc, r["$ref"]) : &r;
        REQUIRE(resolved != nullptr);
        CHECK(resolved->contains("description"));
      }
    }
  }
  for (const auto& name : {"Project", "Task", "Attempt", "Event", "Agent", "Error", "ProjectPage",
                           "TaskPage", "EventPage"}) {
    CHECK_MESSAGE(doc["components"]["schemas"].contains(name), name);
  }
}

TEST_CASE("openapi: served at /openapi.json and rendered by /docs") {
  aise::runtime rt;
  {
    aise::orchestrator orch(rt);
    aise::server::test::test_auth auth;
    aise::server::api api(orch, *auth.auth);
    auto res = api.handle({"GET", "/openapi.json", ""});
    CHECK(res.status == 200);
    CHECK(res.content_type == "application/json");
    CHECK(json::parse(res.body) == document());

    auto docs = api.handle({"GET", "/docs", ""});
    CHECK(docs.status == 200);
    CHECK(docs.content_type == "text/html; charset=utf-8");
    CHECK(docs.body.rfind("<!DOCTYPE html>", 0) == 0);
    CHECK(docs.body.find("fetch(\"/openapi.json\")") != std::string::npos);
    // Self-contained: nothing is loaded from another host.
    CHECK(docs.body.find("http://") == std::string::npos);
    CHECK(docs.body.find("https://") == std::string::npos);
    CHECK(docs.body.find("src=") == std::string::npos);
  }
  (void)rt.shutdown();
}
