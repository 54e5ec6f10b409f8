#pragma once
/// @file
/// The REST API of aise-server as a plain function from request to
/// response: no sockets, no Beast, so every route is testable by calling
/// `api::handle` directly (server/tests/api_test.cpp).
///
/// Contract:
/// - `handle` never throws; a client's mistake is a 4xx with the error body
///   `{"error": {"code", "message", "details"}}`, a store that is down is a
///   503, and only a bug in the server or the library gives a 500.
/// - Thread safety: `handle` may be called from any number of threads at
///   once (the orchestrator and the store are thread-safe).
/// - Blocking: handlers call the store synchronously (a SQL store waits for
///   its database); run `handle` off latency-sensitive executor threads.
/// - Unknown JSON fields in request bodies are ignored (like the library's
///   `task_spec_from_json`); known fields with a wrong type are a 400.
/// - Access (server/README.md, "Authentication and roles"): every route
///   has an `access` level in the route table; a route that is not public
///   needs `Authorization: Bearer <access token>` (else 401 with
///   `WWW-Authenticate: Bearer`), and the caller's role in the route's
///   project (for task routes: the task's project) must be high enough
///   (else 403). A project or task in a project where the caller has no
///   role at all is answered 404, exactly as one that does not exist.
/// - Rate limits: per client address before anything else, per user after
///   authentication, and a stricter one per address on login; over the
///   limit: 429 `rate_limited` with `Retry-After`.
/// - Every response carries the security headers (`add_security_headers`).
#include <aise/artifacts.hpp>
#include <aise/auth.hpp>
#include <aise/error.hpp>
#include <aise/orchestrator.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "rate_limit.hpp"

namespace aise::metrics {
class registry;
}

namespace aise::server {

/// An HTTP request as the API sees it.
struct request {
  std::string method;  ///< Upper case: "GET", "POST", "PATCH", ...
  std::string target;  ///< Path plus optional query, e.g. "/api/v1/projects?limit=10".
  std::string body;    ///< The raw body (JSON for the routes that take one).
  std::string remote;  ///< The client's address ("" when not over the network).
  /// Request headers in arrival order (the HTTP server gives the names in
  /// lower case); looked up case-insensitively by `header`.
  std::vector<std::pair<std::string, std::string>> headers;

  /// The first header named `name` (case-insensitive), or nullopt.
  [[nodiscard]] std::optional<std::string_view> header(std::string_view name) const noexcept;
};

/// A response body produced piece by piece (artifact downloads), so that
/// nothing holds a whole artifact in memory. Called from one handler thread
/// at a time; destroyed when the response is done or the connection drops.
class body_source {
 public:
  virtual ~body_source() = default;
  /// Fills up to `capacity` bytes; returns how many, 0 only at the end.
  /// An error ends the response early (the connection is closed, so the
  /// client sees a body shorter than its Content-Length).
  virtual result<std::size_t> read(char* buffer, std::size_t capacity) = 0;
};

/// A request body consumed piece by piece (artifact uploads). Called from
/// one handler thread at a time. Destroying it before `finish` discards
/// what was written (the upload was cut off or refused).
class body_sink {
 public:
  virtual ~body_sink() = default;
  /// Takes the next piece. An error ends the upload: its response is sent
  /// and the connection closed.
  virtual result<void> write(std::string_view piece) = 0;
  /// After the last piece: commits and returns the response.
  virtual struct response finish() = 0;
};

/// An HTTP response. The body is `body` (JSON unless `content_type` says
/// otherwise) or, when `stream` is set, `stream_size` bytes read from it.
struct response {
  int status = 200;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  ///< Extra headers (e.g. Allow).
  std::string content_type = "application/json";
  std::shared_ptr<body_source> stream;  ///< Replaces `body` when set.
  std::uint64_t stream_size = 0;        ///< Exact number of bytes `stream` gives.
  /// The route template that matched, e.g. "/api/v1/tasks/{id}" (also for
  /// a 405 on an existing path); empty when no route matched. For metrics
  /// and logs: bounded, unlike the raw path.
  std::string route;
};

/// What `api::begin_upload` decided: stream the body into `sink`, or (no
/// sink) answer `refused` at once without reading the body.
struct upload_start {
  std::unique_ptr<body_sink> sink;
  response refused;
};

/// Limits and defaults of the API.
struct api_options {
  std::size_t default_page_size = 50;  ///< `limit` when a listing does not say.
  std::size_t max_page_size = 1000;    ///< Larger `limit` values are a 400.
  std::size_t max_id_length = 128;     ///< Longer ids in bodies are a 400.
  std::size_t max_name_length = 1024;  ///< Longer artifact names are a 400.
  /// Requests per second (and burst) per client address, checked before
  /// authentication; rate 0: off.
  rate_limit_options ip_limit{1000, 2000};
  /// Requests per second (and burst) per authenticated user; rate 0: off.
  rate_limit_options user_limit{1000, 2000};
  /// Login attempts per second (and burst) per client address; rate 0: off.
  rate_limit_options login_limit{1, 10};
  /// Send Strict-Transport-Security from the API. The HTTP server sends it
  /// on every TLS connection itself (server/README.md, "TLS"), so this is
  /// for a deployment where a proxy in front terminates TLS.
  bool hsts = false;
  /// Served at GET /metrics (Prometheus text); null: /metrics is a 404.
  /// Not owned; must outlive the api.
  const aise::metrics::registry* metrics = nullptr;
};

/// Who may call a route.
enum class route_access {
  open,           ///< Anyone, without a token.
  user,           ///< Any authenticated (and not disabled) user.
  viewer,         ///< At least viewer of the route's project.
  maintainer,     ///< At least maintainer of the route's project.
  project_admin,  ///< Admin of the route's project.
  global_admin,   ///< Global admins only.
};

/// What the `{}` segment of a route names (where its project comes from).
enum class route_scope {
  none,      ///< No parameter (or one that names no project).
  project,   ///< A project id.
  task,      ///< A task id: the project is the task's.
  agent,     ///< An agent name: the project is the agent's (checked by the handler).
  artifact,  ///< An artifact id: the project is the artifact's (checked by the handler).
  user,      ///< A user id (global admin routes).
};

/// One row of the route table, as tests and documentation see it.
struct route_info {
  std::string method;
  std::string path;  ///< The template, e.g. "/api/v1/projects/{id}/tasks".
  route_access access = route_access::user;
  route_scope scope = route_scope::none;
};

/// The HTTP status for a library error code. The one place where `errc`
/// values become statuses (see server/README.md, "Errors").
int http_status(errc code) noexcept;

/// `{"error": {"code", "message", "details"}}` with `status`.
response error_response(int status, std::string_view code, std::string_view message,
                        nlohmann::json details = nullptr);

/// An error response for a library error: status from `http_status`, code
/// from `to_string(errc)`.
response error_response(const aise::error& e);

/// Adds X-Content-Type-Options, X-Frame-Options, Referrer-Policy,
/// Content-Security-Policy, Cache-Control: no-store (for paths under /api)
/// and, when `hsts`, Strict-Transport-Security.
void add_security_headers(response& res, std::string_view path, bool hsts);

/// The routes under /api/v1 plus /healthz and /readyz.
class api {
 public:
  /// Serves `orch` and its store, with users, tokens and roles of `auth`,
  /// and `artifacts` (without one the artifact routes answer 503); all must
  /// outlive the api.
  api(orchestrator& orch, authenticator& auth, api_options options = {},
      std::shared_ptr<artifact_store> artifacts = nullptr);
  ~api();
  api(const api&) = delete;
  api& operator=(const api&) = delete;

  /// Answers one request. Never throws. An upload given whole in
  /// `req.body` is stored like a streamed one.
  [[nodiscard]] response handle(const request& req) const noexcept;

  /// True when `head` (method and target; headers and body not needed)
  /// names a route whose body is streamed (artifact uploads). Cheap: no
  /// store call; safe on socket threads.
  [[nodiscard]] bool streams_body(const request& head) const noexcept;

  /// Starts a streamed upload from the request line and headers: checks
  /// everything that can be checked before the body (route, ids, the
  /// project, Content-Length against the artifact size limit) and returns
  /// a sink for the body, or the refusal. Never throws; blocks on the store.
  [[nodiscard]] upload_start begin_upload(const request& head) const noexcept;

  /// The route table: every route with its access level and scope.
  static std::vector<route_info> routes();

 private:
  struct limiters;
  orchestrator& orch_;
  authenticator& auth_;
  api_options options_;
  std::shared_ptr<artifact_store> artifacts_;
  std::unique_ptr<limiters> limiters_;
};

}  // namespace aise::server
