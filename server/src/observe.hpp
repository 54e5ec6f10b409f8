#pragma once
/// @file
/// What aise-server tells about itself: HTTP metrics, request ids and one
/// access-log line per request, added around the request handler (no
/// socket code involved; server/README.md, "Metrics" and "Logs").
///
/// `observer::handle` runs the inner handler and then:
/// - takes the request id from `X-Request-Id` when it is sane (1 … 128
///   characters of [A-Za-z0-9._:-]; anything else is replaced), else
///   generates one (32 hex digits), and returns it in `X-Request-Id`;
/// - counts the request in `aise_http_requests_total{method,route,status}`
///   and its duration in `aise_http_request_duration_seconds{method,route}`
///   (route: the matched template, "unmatched" when none; method: the known
///   HTTP methods, else "other": label values stay bounded);
/// - writes one access-log line (JSON in the json format): method, route,
///   path, status, duration_ms, bytes, request_id. Never headers (so never
///   Authorization), never bodies, never the query string.
///
/// Thread safety: `handle` may be called from any number of threads at
/// once. Errors: nothing throws out of `handle` (a failing log sink is
/// spdlog's business: it never throws into the caller).
#include <aise/metrics.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <spdlog/logger.h>
#include <string>
#include <string_view>

#include "api.hpp"
#include "config.hpp"

namespace aise::server {

/// A logger writing to stderr in `format`, named `name`.
std::shared_ptr<spdlog::logger> make_logger(std::string name, log_format format);

/// Makes `logger` write in `format` (replaces its formatter). In json,
/// each line is {"ts", "level", "logger", "msg"}; the access lines of an
/// `observer` in the json format carry their fields instead of a text "msg"
/// (give the observer and its logger the same format).
void set_log_format(spdlog::logger& logger, log_format format);

/// Whether `id` may be taken as a request id as it is.
bool sane_request_id(std::string_view id) noexcept;

/// The HTTP metrics, request ids and access log.
class observer {
 public:
  using handler = std::function<response(const request&)>;

  /// Registers the HTTP metrics on `reg` (which must outlive the observer)
  /// and logs through `access_log` (null: no access log) in `format`.
  observer(aise::metrics::registry& reg, std::shared_ptr<spdlog::logger> access_log,
           log_format format);

  /// Runs `inner` for `req` and observes it (see the file comment).
  [[nodiscard]] response handle(const request& req, const handler& inner) noexcept;

  /// A handler running `inner` through `handle`; `this` must outlive it.
  [[nodiscard]] handler wrap(handler inner);

 private:
  std::string make_id();
  void observe(const request& req, response& res, double seconds);

  aise::metrics::family<aise::metrics::counter>& requests_;
  aise::metrics::family<aise::metrics::histogram>& durations_;
  aise::metrics::gauge& in_flight_;
  std::shared_ptr<spdlog::logger> log_;
  log_format format_;
  std::string id_prefix_;  // random per observer
  std::atomic<std::uint64_t> next_{0};
};

}  // namespace aise::server
