// libFuzzer target over aise-server's request handling: the bytes become an
// HTTP-like request (request line, headers, body), which goes through
// target parsing, percent-decoding, routing, JSON parsing and validation in
// `api::handle` on a live orchestrator with an in-memory store. A client's
// input must never crash, hang or get a 500, and every JSON answer must be
// valid JSON with the error shape on errors.
//
// Build: configure with clang and -DAISE_FUZZ=ON (scripts/test.sh, phase
// fuzz); run: build/fuzz/server/fuzz/aise_api_fuzz -max_total_time=60 CORPUS
#include <aise/artifacts.hpp>
#include <aise/auth.hpp>
#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>
#include <aise/store.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unistd.h>

#include "api.hpp"

namespace {

struct world {
  world() : store(aise::make_memory_store()), orch(rt, options(store)) {
    auto dir =
        std::filesystem::temp_directory_path() / ("aise-api-fuzz-" + std::to_string(::getpid()));
    aise::artifact_store_options a;
    a.root = dir;
    a.metadata = store;
    a.max_size = 1 << 20;
    a.sync = false;
    auto opened = aise::open_artifact_store(a);
    if (!opened) std::abort();
    artifacts = *opened;
    aise::auth_options ao;
    ao.jwt_secret = "fuzz-secret-fuzz-secret-fuzz-secret!";
    ao.password = aise::password_options::cheapest();
    auto made = aise::authenticator::make(aise::make_memory_auth_store(), ao);
    if (!made) std::abort();
    auth = std::move(*made);
    if (!auth->create_first_admin("root", "root-password", {})) std::abort();
    auto token = auth->issue_access_token("root");
    if (!token) std::abort();
    admin = "Bearer " + *token;
    aise::server::api_options o;
    o.ip_limit.rate = 0;  // the fuzzer is one client sending as fast as it can
    o.user_limit.rate = 0;
    o.login_limit.rate = 0;
    api = std::make_unique<aise::server::api>(orch, *auth, o, artifacts);
    // Something to find: a project, a task and an artifact with known ids.
    auto as_admin = [&](std::string m, std::string t, std::string b) {
      (void)api->handle({std::move(m), std::move(t), std::move(b), "", {{"authorization", admin}}});
    };
    as_admin("POST", "/api/v1/projects", R"({"id":"p1","name":"one"})");
    as_admin("POST", "/api/v1/projects/p1/tasks", R"({"id":"t1","kind":"k"})");
    as_admin("PUT", "/api/v1/projects/p1/artifacts/a", "hello");
  }

  static aise::orchestrator_options options(std::shared_ptr<aise::store> s) {
    aise::orchestrator_options o;
    o.store = std::move(s);
    return o;
  }

  std::shared_ptr<aise::store> store;
  aise::runtime rt;
  aise::orchestrator orch;
  std::shared_ptr<aise::artifact_store> artifacts;
  std::unique_ptr<aise::authenticator> auth;
  std::string admin;
  std::unique_ptr<aise::server::api> api;
};

std::string_view next_line(std::string_view& in) {
  auto eol = in.find('\n');
  auto line = in.substr(0, eol);
  in = eol == std::string_view::npos ? std::string_view{} : in.substr(eol + 1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

// "METHOD TARGET\nname: value\n...\n\nbody"
aise::server::request to_request(std::string_view in) {
  aise::server::request r;
  auto first = next_line(in);
  auto space = first.find(' ');
  r.method = std::string(first.substr(0, space));
  r.target = space == std::string_view::npos ? "/" : std::string(first.substr(space + 1));
  for (int n = 0; n < 32 && !in.empty(); ++n) {
    auto line = next_line(in);
    if (line.empty()) break;
    auto colon = line.find(':');
    std::string name(line.substr(0, colon));
    for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    r.headers.emplace_back(std::move(name), std::string(value));
  }
  r.body = std::string(in);
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static world w;
  auto req = to_request(std::string_view(reinterpret_cast<const char*>(data), size));
  // As the admin unless the input brings its own Authorization header (so
  // the fuzzer reaches the handlers, and still tries tokens of its own).
  if (!req.header("authorization")) req.headers.emplace_back("authorization", w.admin);
  auto res = w.api->handle(req);
  if (res.status < 200 || res.status > 599 || res.status == 500) std::abort();
  if (res.stream) {
    char buf[4096];
    std::uint64_t total = 0;
    for (;;) {
      auto n = res.stream->read(buf, sizeof buf);
      if (!n) std::abort();
      if (*n == 0) break;
      total += *n;
    }
    if (total != res.stream_size) std::abort();
  } else if (res.content_type == "application/json" && !res.body.empty()) {
    auto j = nlohmann::json::parse(res.body, nullptr, false);
    if (j.is_discarded()) std::abort();
    if (res.status >= 400 && (!j.contains("error") || !j["error"].contains("code"))) std::abort();
  }
  return 0;
}
