#include "observe.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <ctime>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <random>
#include <spdlog/formatter.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace aise::server {

namespace {

// Ordered: ts, level and logger lead each line, the fields follow as written.
using json = nlohmann::ordered_json;

// {"ts", "level", "logger", "msg"}; a message that is itself a JSON object
// (the access log's) gives its fields instead of "msg".
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
    std::string ts = fmt::format("{}.{:03}Z", std::string_view(stamp.data(), n), ms.count());
    const auto level = spdlog::level::to_string_view(msg.level);
    std::string_view payload(msg.payload.data(), msg.payload.size());

    json line = json::object();
    line["ts"] = ts;
    line["level"] = std::string_view(level.data(), level.size());
    line["logger"] = std::string_view(msg.logger_name.data(), msg.logger_name.size());
    json fields;
    if (!payload.empty() && payload.front() == '{' && payload.back() == '}') {
      fields = json::parse(payload, nullptr, false);
    }
    if (fields.is_object()) {
      for (auto& [k, v] : fields.items()) line[k] = std::move(v);
    } else {
      line["msg"] = payload;
    }
    auto text = line.dump(-1, ' ', false, json::error_handler_t::replace);
    dest.append(text.data(), text.data() + text.size());
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
    json line = {{"msg", "request"},
                 {"request_id", id},
                 {"method", method},
                 {"route", route},
                 {"path", path},
                 {"status", res.status},
                 {"duration_ms", std::round(ms * 1000.0) / 1000.0},
                 {"bytes", res.body.size()}};
    log_->info("{}", line.dump(-1, ' ', false, json::error_handler_t::replace));
  } else {
    log_->info("{} {} {} {:.3f} ms {} B path={} request_id={}", method, route, res.status, ms,
               res.body.size(), path, id);
  }
}

observer::handler observer::wrap(handler inner) {
  return [this, inner = std::move(inner)](const request& req) { return handle(req, inner); };
}

}  // namespace aise::server
