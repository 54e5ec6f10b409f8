#include "event_line.hpp"

#include <chrono>
#include <fmt/format.h>
#include <string_view>

namespace team {

namespace {

using nlohmann::json;

// Longest detail shown; whole errors go to the summary.
constexpr std::size_t max_detail = 64;

std::string shorten(std::string text) {
  if (const auto eol = text.find('\n'); eol != std::string::npos)
    text = text.substr(0, eol) + " ...";
  if (text.size() > max_detail) text = text.substr(0, max_detail - 3) + "...";
  return text;
}

// The message of an `{"code", "message"}` error in the event data.
std::string error_of(const json& data) {
  const auto e = data.find("error");
  if (e == data.end() || !e->is_object()) return {};
  return shorten(e->value("message", e->value("code", "")));
}

std::string details(const aise::event& e) {
  const json& d = e.data;
  if (!d.is_object()) return {};
  const std::string_view type = e.type;
  const int attempt = d.value("attempt", 0);
  const std::string agent = d.value("agent", "");

  if (type == "task.running") return fmt::format("attempt {} on {}", attempt, agent);
  if (type == "task.succeeded") return fmt::format("attempt {} on {} done", attempt, agent);
  if (type == "task.retrying") {
    return fmt::format("attempt {} failed: {}; retry in {} ms", attempt, error_of(d),
                       d.value("retry_in_ms", 0));
  }
  if (type == "task.awaiting_approval") return "waiting for approve() or reject()";
  if (type == "task.queued" && d.contains("approved_by")) {
    const std::string by = d.value("approved_by", "");
    return by.empty() ? "approved" : fmt::format("approved by {}", by);
  }
  if (type == "task.failed" || type == "task.cancelled") {
    // From a running attempt the data names it; otherwise where the task was.
    const std::string where = attempt != 0 ? fmt::format("attempt {} on {}", attempt, agent)
                                           : fmt::format("was {}", d.value("from", "?"));
    return fmt::format("{}: {}", where, error_of(d));
  }
  if (type == "agent.started") {
    return fmt::format("kind {}{}", d.value("kind", "?"),
                       d.value("restored", false) ? ", restored" : "");
  }
  if (type == "agent.failed") return error_of(d);
  if (type == "agent.restarting") return fmt::format("in {} ms", d.value("backoff_ms", 0));
  return shorten(d.dump());
}

}  // namespace

std::string event_line(const aise::event& e, aise::time_point start) {
  const double seconds = std::chrono::duration<double>(e.at - start).count();
  std::string line = fmt::format("  +{:.3f}s  #{:<3} {:<23} {:<11} {}", seconds, e.sequence, e.type,
                                 e.subject, details(e));
  while (!line.empty() && line.back() == ' ') line.pop_back();
  return line;
}

}  // namespace team
