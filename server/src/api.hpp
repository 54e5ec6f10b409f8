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
#include <aise/error.hpp>
#include <aise/orchestrator.hpp>

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace aise::metrics {
class registry;
}

namespace aise::server {

/// An HTTP request as the API sees it.
struct request {
  std::string method;  ///< Upper case: "GET", "POST", "PATCH", ...
  std::string target;  ///< Path plus optional query, e.g. "/api/v1/projects?limit=10".
  std::string body;    ///< The raw body (JSON for the routes that take one).
  /// Request headers (name, value) as received; looked up by `header`.
  std::vector<std::pair<std::string, std::string>> headers;

  /// The first header named `name` (case-insensitive), or nullopt.
  [[nodiscard]] std::optional<std::string_view> header(std::string_view name) const noexcept;
};

/// An HTTP response; the body is JSON unless `content_type` says otherwise.
struct response {
  int status = 200;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  ///< Extra headers (e.g. Allow).
  std::string content_type = "application/json";
  /// The route template that matched, e.g. "/api/v1/tasks/{id}" (also for
  /// a 405 on an existing path); empty when no route matched. For metrics
  /// and logs: bounded, unlike the raw path.
  std::string route;
};

/// Limits and defaults of the API.
struct api_options {
  std::size_t default_page_size = 50;  ///< `limit` when a listing does not say.
  std::size_t max_page_size = 1000;    ///< Larger `limit` values are a 400.
  std::size_t max_id_length = 128;     ///< Longer ids in bodies are a 400.
  /// Served at GET /metrics (Prometheus text); null: /metrics is a 404.
  /// Not owned; must outlive the api.
  const aise::metrics::registry* metrics = nullptr;
};

/// One route of the table: method and path template ("/api/v1/tasks/{id}").
struct route_info {
  std::string method;
  std::string path;
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

/// The routes under /api/v1 plus /healthz, /readyz, /metrics,
/// /openapi.json and /docs.
class api {
 public:
  /// Every route of the table, in table order (the OpenAPI test compares
  /// them with server/openapi.json).
  [[nodiscard]] static std::vector<route_info> routes();

  /// Serves `orch` and its store; `orch` must outlive the api.
  explicit api(orchestrator& orch, api_options options = {});

  /// Answers one request. Never throws.
  [[nodiscard]] response handle(const request& req) const noexcept;

 private:
  orchestrator& orch_;
  api_options options_;
};

}  // namespace aise::server
