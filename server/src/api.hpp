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
#include <aise/auth.hpp>
#include <aise/error.hpp>
#include <aise/orchestrator.hpp>

#include <cstddef>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "rate_limit.hpp"

namespace aise::server {

/// An HTTP request as the API sees it.
struct request {
  std::string method;         ///< Upper case: "GET", "POST", "PATCH", ...
  std::string target;         ///< Path plus optional query, e.g. "/api/v1/projects?limit=10".
  std::string body;           ///< The raw body (JSON for the routes that take one).
  std::string remote;         ///< The client's address ("" when not over the network).
  std::string authorization;  ///< The Authorization header ("" when absent).
};

/// An HTTP response; the body is JSON (Content-Type application/json).
struct response {
  int status = 200;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  ///< Extra headers (e.g. Allow).
};

/// Limits and defaults of the API.
struct api_options {
  std::size_t default_page_size = 50;  ///< `limit` when a listing does not say.
  std::size_t max_page_size = 1000;    ///< Larger `limit` values are a 400.
  std::size_t max_id_length = 128;     ///< Longer ids in bodies are a 400.
  /// Requests per second (and burst) per client address, checked before
  /// authentication; rate 0: off.
  rate_limit_options ip_limit{1000, 2000};
  /// Requests per second (and burst) per authenticated user; rate 0: off.
  rate_limit_options user_limit{1000, 2000};
  /// Login attempts per second (and burst) per client address; rate 0: off.
  rate_limit_options login_limit{1, 10};
  /// Send Strict-Transport-Security. Only meaningful behind TLS, which
  /// aise-server does not terminate yet: off, and no flag sets it.
  bool hsts = false;
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
  none,     ///< No parameter (or one that names no project).
  project,  ///< A project id.
  task,     ///< A task id: the project is the task's.
  agent,    ///< An agent name: the project is the agent's.
  user,     ///< A user id (global admin routes).
};

/// One row of the route table, as tests and documentation see it.
struct route_info {
  std::string method;
  std::string path;  ///< e.g. "/api/v1/projects/{}/tasks".
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
  /// Serves `orch` and its store, with users, tokens and roles of `auth`;
  /// both must outlive the api.
  api(orchestrator& orch, authenticator& auth, api_options options = {});
  ~api();
  api(const api&) = delete;
  api& operator=(const api&) = delete;

  /// Answers one request. Never throws.
  [[nodiscard]] response handle(const request& req) const noexcept;

  /// The route table: every route with its access level and scope.
  static std::vector<route_info> routes();

 private:
  struct limiters;
  orchestrator& orch_;
  authenticator& auth_;
  api_options options_;
  std::unique_ptr<limiters> limiters_;
};

}  // namespace aise::server
