#include "web.hpp"

#include <string>

namespace aise::server {

namespace {

// True when an If-None-Match value lists `etag` (or is "*"); weak
// comparison, as RFC 9110 asks for If-None-Match.
bool matches(std::string_view header, std::string_view etag) {
  while (!header.empty()) {
    auto comma = header.find(',');
    auto item = header.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item.substr(0, 2) == "W/") item.remove_prefix(2);
    if (item == "*" || item == etag) return true;
    header = comma == std::string_view::npos ? std::string_view{} : header.substr(comma + 1);
  }
  return false;
}

}  // namespace

response serve_web_asset(std::string_view name, std::optional<std::string_view> if_none_match) {
  for (const auto& asset : web_assets()) {
    if (asset.name != name) continue;
    response res;
    res.headers = {{"ETag", std::string(asset.etag)},
                   {"Cache-Control", "no-cache"},
                   {"Content-Security-Policy", std::string(dashboard_csp)},
                   {"X-Content-Type-Options", "nosniff"},
                   {"X-Frame-Options", "DENY"},
                   {"Referrer-Policy", "no-referrer"}};
    if (if_none_match && matches(*if_none_match, asset.etag)) {
      res.status = 304;
      return res;
    }
    res.content_type = std::string(asset.content_type);
    res.body = std::string(asset.body);
    return res;
  }
  return error_response(404, "not_found", "no dashboard file '" + std::string(name) + "'",
                        {{"name", std::string(name)}});
}

}  // namespace aise::server
