#include "observe.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <ctime>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <random>
#include <spdlog/formatter.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace aise::server {

namespace {

using json = nlohmann::json;

// Strings of a log line: invalid UTF-8 is replaced, never thrown on.
std::string json_string(std::string_view text) {
  return json(text).dump(-1, ' ', false, json::error_handler_t::replace);
}

// Marks a message that already is the rest of a JSON line: `,"k":v,…}`
// (the access log's fields), written after ts, level and logger as it is,
// with no parse and no copy into a JSON tree. Only this file writes it.
constexpr char prebuilt_fields = '\x1e';

// {"ts", "level", "logger", "msg"} (or the prebuilt fields instead of msg).
class json_formatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const auto since_epoch = msg.time.time_since_epoch();
    const auto secs = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch - secs);
    std::time_t t = secs.count();
    std::tm tm{};
    gmtime_r(&t, &tm);
    std::array<char, 32> stamp{};
    auto n = std::strftime(stamp.data(), stamp.size(), "%Y-%m-%dT%H:%M:%S", &tm);
    const auto level = spdlog::level::to_string_view(msg.level);
    std::string_view payload(msg.payload.data(), msg.payload.size());
    fmt::format_to(std::back_inserter(dest), R"({{"ts":"{}.{:03}Z","level":"{}","logger":{})",
                   std::string_view(stamp.data(), n), ms.count(),
                   std::string_view(level.data(), level.size()),
                   json_string(std::string_view(msg.logger_name.data(), msg.logger_name.size())));
    if (!payload.empty() && payload.front() == prebuilt_fields) {
      payload.remove_prefix(1);
      dest.append(payload.data(), payload.data() + payload.size());
    } else {
      auto text = json_string(payload);
      dest.append(std::string_view(R"(,"msg":)"));
      dest.append(text.data(), text.data() + text.size());
      dest.push_back('}');
    }
    dest.push_back('\n');
  }

  [[nodiscard]] std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<json_formatter>();
  }
};

bool id_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == ':';
}

// Bounded label values: the methods HTTP defines, else "other".
std::string method_label(const std::string& m) {
  static constexpr std::array<std::string_view, 9> known = {
      "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"};
  return std::find(known.begin(), known.end(), m) != known.end() ? m : std::string("other");
}

}  // namespace

void set_log_format(spdlog::logger& logger, log_format format) {
  if (format == log_format::json) {
    logger.set_formatter(std::make_unique<json_formatter>());
  } else {
    logger.set_formatter(std::make_unique<spdlog::pattern_formatter>());
  }
}

std::shared_ptr<spdlog::logger> make_logger(std::string name, log_format format) {
  auto logger = std::make_shared<spdlog::logger>(std::move(name),
                                                 std::make_shared<spdlog::sinks::stderr_sink_mt>());
  set_log_format(*logger, format);
  return logger;
}

bool sane_request_id(std::string_view id) noexcept {
  return !id.empty() && id.size() <= 128 && std::all_of(id.begin(), id.end(), id_char);
}

observer::observer(aise::metrics::registry& reg, std::shared_ptr<spdlog::logger> access_log,
                   log_format format)
    : requests_(reg.counter_family("aise_http_requests_total",
                                   "HTTP requests answered, by method, route template and status.",
                                   {"method", "route", "status"})),
      durations_(reg.histogram_family(
          "aise_http_request_duration_seconds",
          "Time to answer an HTTP request (handler included, socket I/O excluded).",
          {"method", "route"})),
      in_flight_(
          reg.gauge_family("aise_http_requests_in_flight", "HTTP requests being handled now.")
              .get()),
      log_(std::move(access_log)),
      format_(format) {
  std::random_device rd;
  id_prefix_ = fmt::format("{:08x}{:08x}", rd(), rd());
}

std::string observer::make_id() {
  return id_prefix_ + fmt::format("{:016x}", next_.fetch_add(1, std::memory_order_relaxed));
}

response observer::handle(const request& req, const handler& inner) noexcept {
  in_flight_.add(1);
  const auto start = std::chrono::steady_clock::now();
  response res;
  try {
    res = inner(req);
  } catch (...) {  // handlers must not throw; if one does, it is a 500, observed
    res = error_response(500, "internal", "internal error");
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  in_flight_.add(-1);
  try {
    observe(req, res, seconds);
  } catch (...) {
    // Out of memory while observing: the answer goes out unobserved.
  }
  return res;
}

void observer::observe(const request& req, response& res, double seconds) {
  std::string id;
  if (auto given = req.header("X-Request-Id"); given && sane_request_id(*given)) {
    id = std::string(*given);
  } else {
    id = make_id();
  }
  res.headers.emplace_back("X-Request-Id", id);

  const std::string route = res.route.empty() ? std::string("unmatched") : res.route;
  const std::string method = method_label(req.method);
  requests_.with({method, route, std::to_string(res.status)}).inc();
  durations_.with({method, route}).observe(seconds);

  if (!log_) return;
  std::string_view path = req.target;
  path = path.substr(0, path.find('?'));
  const double ms = seconds * 1000.0;
  if (format_ == log_format::json) {
    // id, method and route are plain tokens (checked, or ours); the path
    // is the client's: quoted.
    log_->info(
        "{}"
        R"(,"msg":"request","request_id":"{}","method":"{}","route":{},"path":{},"status":{},)"
        R"("duration_ms":{:.3f},"bytes":{}}})",
        prebuilt_fields, id, method, json_string(route), json_string(path), res.status, ms,
        res.body.size());
  } else {
    log_->info("{} {} {} {:.3f} ms {} B path={} request_id={}", method, route, res.status, ms,
               res.body.size(), path, id);
  }
}

observer::handler observer::wrap(handler inner) {
  return [this, inner = std::move(inner)](const request& req) { return handle(req, inner); };
}

}  // namespace aise::server
