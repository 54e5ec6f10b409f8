// The OpenAI-compatible chat-completions client (include/aise/llm.hpp):
// Boost.Beast over TCP or TLS (OpenSSL), one connection per call, run on a
// private io_context so that every step has a deadline.
#include <aise/llm.hpp>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/version.hpp>
#include <fmt/format.h>
#include <map>
#include <thread>

namespace aise::llm {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using steady = std::chrono::steady_clock;

struct endpoint {
  bool tls = false;
  std::string host;
  std::string port;
  std::string path;  // prefix, no trailing '/'
};

result<endpoint> parse_url(const std::string& url) {
  endpoint e;
  std::string rest;
  if (url.rfind("https://", 0) == 0) {
    e.tls = true;
    rest = url.substr(8);
  } else if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else {
    return error(errc::invalid_argument,
                 fmt::format("llm: base URL '{}' must start with http:// or https://", url));
  }
  const auto slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  e.path = slash == std::string::npos ? "" : rest.substr(slash);
  while (!e.path.empty() && e.path.back() == '/') e.path.pop_back();
  if (authority.find('@') != std::string::npos)
    return error(errc::invalid_argument, "llm: put the API key in api_key, not in the URL");
  if (!authority.empty() && authority.front() == '[') {  // [v6]:port
    const auto close = authority.find(']');
    if (close == std::string::npos) return error(errc::invalid_argument, "llm: bad IPv6 host");
    e.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size() && authority[close + 1] == ':')
      e.port = authority.substr(close + 2);
  } else if (const auto colon = authority.rfind(':'); colon != std::string::npos) {
    e.host = authority.substr(0, colon);
    e.port = authority.substr(colon + 1);
  } else {
    e.host = authority;
  }
  if (e.host.empty()) return error(errc::invalid_argument, "llm: the base URL has no host");
  if (e.port.empty()) e.port = e.tls ? "443" : "80";
  if (!std::all_of(e.port.begin(), e.port.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return error(errc::invalid_argument, fmt::format("llm: bad port '{}'", e.port));
  return e;
}

json request_body(const chat_request& r, const std::string& default_model, bool stream) {
  json body;
  body["model"] = r.model.empty() ? default_model : r.model;
  json messages = json::array();
  for (const auto& m : r.messages) {
    json j{{"role", m.role}, {"content", m.content}};
    if (!m.tool_calls.empty()) {
      json calls = json::array();
      for (const auto& c : m.tool_calls) {
        calls.push_back({{"id", c.id},
                         {"type", "function"},
                         {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
      }
      j["tool_calls"] = std::move(calls);
    }
    if (!m.tool_call_id.empty()) j["tool_call_id"] = m.tool_call_id;
    messages.push_back(std::move(j));
  }
  body["messages"] = std::move(messages);
  if (!r.tools.empty()) {
    json tools = json::array();
    for (const auto& t : r.tools) {
      tools.push_back(
          {{"type", "function"},
           {"function",
            {{"name", t.name}, {"description", t.description}, {"parameters", t.parameters}}}});
    }
    body["tools"] = std::move(tools);
  }
  if (r.temperature) body["temperature"] = *r.temperature;
  if (r.max_tokens) body["max_tokens"] = *r.max_tokens;
  if (!r.stop.empty()) body["stop"] = r.stop;
  if (stream) {
    body["stream"] = true;
    body["stream_options"] = {{"include_usage", true}};
  }
  return body;
}

/// The reply being assembled (from one JSON answer or from stream chunks).
struct assembly {
  chat_response out;
  std::map<std::int64_t, tool_call> calls;  // by index
  std::size_t tokens_emitted = 0;
  bool done = false;

  void read_usage(const json& j) {
    if (j.contains("usage") && j["usage"].is_object()) {
      out.used.prompt_tokens = j["usage"].value("prompt_tokens", std::int64_t{0});
      out.used.completion_tokens = j["usage"].value("completion_tokens", std::int64_t{0});
    }
    if (j.contains("model") && j["model"].is_string()) out.model = j["model"];
  }

  // A non-streamed answer.
  result<void> whole(const json& j) {
    if (!j.is_object() || !j.contains("choices") || !j["choices"].is_array() ||
        j["choices"].empty() || !j["choices"][0].contains("message"))
      return error(errc::invalid_argument, "llm: the reply has no choices[0].message");
    const json& m = j["choices"][0]["message"];
    if (m.contains("content") && m["content"].is_string()) out.reply.content = m["content"];
    if (m.contains("tool_calls") && m["tool_calls"].is_array()) {
      for (const auto& c : m["tool_calls"]) {
        tool_call t;
        t.id = c.value("id", "");
        if (c.contains("function") && c["function"].is_object()) {
          t.name = c["function"].value("name", "");
          t.arguments = c["function"].value("arguments", "");
        }
        out.reply.tool_calls.push_back(std::move(t));
      }
    }
    if (j["choices"][0].contains("finish_reason") && j["choices"][0]["finish_reason"].is_string())
      out.finish_reason = j["choices"][0]["finish_reason"];
    read_usage(j);
    done = true;
    return {};
  }

  // One streamed chunk.
  result<void> chunk(const json& j, const token_sink& sink) {
    if (!j.is_object())
      return error(errc::invalid_argument, "llm: a stream chunk is not an object");
    read_usage(j);
    if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty()) return {};
    const json& c = j["choices"][0];
    if (c.contains("delta") && c["delta"].is_object()) {
      const json& d = c["delta"];
      if (d.contains("content") && d["content"].is_string()) {
        const std::string text = d["content"];
        out.reply.content += text;
        if (sink && !text.empty()) {
          ++tokens_emitted;
          sink(text);
        }
      }
      if (d.contains("tool_calls") && d["tool_calls"].is_array()) {
        for (const auto& t : d["tool_calls"]) {
          tool_call& call = calls[t.value("index", std::int64_t{0})];
          if (t.contains("id") && t["id"].is_string()) call.id = t["id"];
          if (t.contains("function") && t["function"].is_object()) {
            const json& f = t["function"];
            if (f.contains("name") && f["name"].is_string())
              call.name += f["name"].get<std::string>();
            if (f.contains("arguments") && f["arguments"].is_string())
              call.arguments += f["arguments"].get<std::string>();
          }
        }
      }
    }
    if (c.contains("finish_reason") && c["finish_reason"].is_string())
      out.finish_reason = c["finish_reason"];
    return {};
  }

  void finish_stream() {
    for (auto& [i, c] : calls) out.reply.tool_calls.push_back(std::move(c));
    calls.clear();
  }
};

/// What one HTTP attempt ended with.
struct attempt {
  enum class kind { ok, retry, fail } k = kind::fail;
  aise::error why{errc::internal, ""};
  std::optional<std::chrono::milliseconds> retry_after;
};

std::string server_message(const std::string& body) {
  auto j = json::parse(body, nullptr, false);
  if (!j.is_discarded() && j.is_object() && j.contains("error")) {
    const json& e = j["error"];
    if (e.is_object() && e.contains("message") && e["message"].is_string()) return e["message"];
    if (e.is_string()) return e;
  }
  std::string s = body.substr(0, 200);
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

class openai_provider final : public provider {
 public:
  openai_provider(openai_options o, endpoint e) : options_(std::move(o)), where_(std::move(e)) {}

  [[nodiscard]] std::string_view name() const noexcept override { return "openai"; }

  result<chat_response> chat(const chat_request& request, const token_sink& on_token) override {
    if (request.messages.empty()) return error(errc::invalid_argument, "llm: no messages");
    const bool stream = static_cast<bool>(on_token);
    std::string body;
    try {
      body = request_body(request, options_.model, stream).dump();
    } catch (const std::exception& e) {  // invalid UTF-8 in a message, say
      return error(errc::invalid_argument,
                   fmt::format("llm: cannot encode the request: {}", e.what()));
    }
    auto wait = options_.backoff;
    for (int n = 0;; ++n) {
      assembly a;
      attempt r = once(body, stream, on_token, a);
      if (r.k == attempt::kind::ok) {
        a.out.reply.role = "assistant";
        a.out.attempts = n + 1;
        return std::move(a.out);
      }
      if (r.k == attempt::kind::fail) return r.why;
      if (a.tokens_emitted > 0) {
        return error(errc::unavailable,
                     fmt::format("llm: the stream broke after {} pieces of text were delivered "
                                 "(not retried, they would repeat): {}",
                                 a.tokens_emitted, r.why.message()));
      }
      if (n >= options_.max_retries) {
        return error(r.why.code() == errc::timeout ? errc::timeout : errc::unavailable,
                     fmt::format("llm: giving up after {} attempts: {}", n + 1, r.why.message()));
      }
      auto pause = wait;
      if (r.retry_after) {
        if (*r.retry_after > options_.max_retry_after) {
          return error(errc::unavailable,
                       fmt::format("llm: the server asks to wait {} ms (Retry-After), more than "
                                   "max_retry_after: {}",
                                   r.retry_after->count(), r.why.message()));
        }
        pause = std::max(pause, *r.retry_after);
      }
      std::this_thread::sleep_for(pause);
      wait = std::min<std::chrono::milliseconds>(wait * 2, std::chrono::milliseconds(30'000));
    }
  }

 private:
  template <class Stream>
  attempt exchange(Stream& s, net::io_context& ioc, beast::tcp_stream& lowest,
                   const std::string& body, bool stream, const token_sink& sink, assembly& a,
                   steady::time_point deadline) {
    beast::error_code ec;
    auto run = [&](auto&& start) {
      ec = {};
      bool finished = false;
      lowest.expires_at(deadline);
      start([&](beast::error_code e, std::size_t = 0) {
        ec = e;
        finished = true;
      });
      ioc.restart();
      ioc.run();
      if (!finished) ec = net::error::operation_aborted;
    };
    http::request<http::string_body> req{http::verb::post, where_.path + "/chat/completions", 11};
    req.set(http::field::host, where_.host);
    req.set(http::field::user_agent, "libaise");
    req.set(http::field::content_type, "application/json");
    req.set(http::field::accept, stream ? "text/event-stream" : "application/json");
    if (!options_.api_key.empty())
      req.set(http::field::authorization, "Bearer " + options_.api_key);
    req.body() = body;
    req.prepare_payload();
    run([&](auto h) { http::async_write(s, req, h); });
    if (ec) return broken("sending the request", ec, deadline);

    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(options_.max_response_bytes);
    run([&](auto h) { http::async_read_header(s, buffer, parser, h); });
    if (ec) return broken("reading the answer", ec, deadline);
    const unsigned status = parser.get().result_int();
    const bool event_stream =
        stream && status == 200 &&
        std::string(parser.get()[http::field::content_type]).find("text/event-stream") !=
            std::string::npos;
    std::size_t parsed = 0;  // body bytes already split into lines
    std::string line_buffer;
    std::optional<aise::error> stream_error;
    auto feed = [&] {
      const std::string& b = parser.get().body();
      line_buffer.append(b, parsed, std::string::npos);
      parsed = b.size();
      std::size_t nl = 0;
      while (!stream_error && !a.done && (nl = line_buffer.find('\n')) != std::string::npos) {
        std::string line = line_buffer.substr(0, nl);
        line_buffer.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.rfind("data:", 0) != 0) continue;  // comments, event names, blank lines
        std::string data = line.substr(5);
        if (!data.empty() && data.front() == ' ') data.erase(0, 1);
        if (data == "[DONE]") {
          a.done = true;
          break;
        }
        auto j = json::parse(data, nullptr, false);
        if (j.is_discarded()) {
          stream_error = aise::error(errc::invalid_argument,
                                     "llm: a stream chunk is not JSON: " + data.substr(0, 120));
          break;
        }
        if (auto r = a.chunk(j, sink); !r) stream_error = r.error();
      }
    };
    while (!parser.is_done()) {
      run([&](auto h) { http::async_read_some(s, buffer, parser, h); });
      if (ec) return broken("reading the answer", ec, deadline);
      if (event_stream) {
        feed();
        if (stream_error) return {attempt::kind::fail, *stream_error, {}};
        if (a.done) break;
      }
    }
    if (status == 200) {
      if (event_stream) {
        feed();
        if (stream_error) return {attempt::kind::fail, *stream_error, {}};
        if (!a.done)
          return {attempt::kind::retry,
                  aise::error(errc::unavailable, "llm: the stream ended without [DONE]"),
                  {}};
        a.finish_stream();
        return {attempt::kind::ok, {}, {}};
      }
      auto j = json::parse(parser.get().body(), nullptr, false);
      if (j.is_discarded())
        return {attempt::kind::fail,
                aise::error(errc::invalid_argument,
                            "llm: the answer is not JSON: " + parser.get().body().substr(0, 120)),
                {}};
      if (auto r = a.whole(j); !r) return {attempt::kind::fail, r.error(), {}};
      if (sink && !a.out.reply.content.empty()) {  // the server ignored "stream"
        ++a.tokens_emitted;
        sink(a.out.reply.content);
      }
      return {attempt::kind::ok, {}, {}};
    }
    const std::string message = fmt::format("llm: HTTP {} from {}: {}", status, where_.host,
                                            server_message(parser.get().body()));
    if (status == 429 || status >= 500) {
      attempt r{attempt::kind::retry,
                aise::error(status == 429 ? errc::limit_exceeded : errc::unavailable, message),
                {}};
      const std::string after(parser.get()[http::field::retry_after]);
      if (!after.empty() &&
          std::all_of(after.begin(), after.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
          after.size() < 9) {
        r.retry_after = std::chrono::seconds(std::stol(after));
      }
      return r;
    }
    if (status == 401 || status == 403)
      return {attempt::kind::fail, aise::error(errc::rejected, message), {}};
    return {attempt::kind::fail, aise::error(errc::invalid_argument, message), {}};
  }

  attempt broken(const char* what, const beast::error_code& ec, steady::time_point deadline) {
    if (ec == http::error::body_limit) {  // a Content-Length beyond the limit: at the header
      return {attempt::kind::fail,
              aise::error(errc::limit_exceeded,
                          fmt::format("llm: the answer is larger than max_response_bytes ({})",
                                      options_.max_response_bytes)),
              {}};
    }
    if (ec == beast::error::timeout || ec == net::error::operation_aborted ||
        steady::now() >= deadline) {
      return {attempt::kind::fail,
              aise::error(errc::timeout, fmt::format("llm: timed out {} ({} ms request_timeout)",
                                                     what, options_.request_timeout.count())),
              {}};
    }
    return {attempt::kind::retry,
            aise::error(errc::unavailable, fmt::format("llm: {} from {}:{} failed: {}", what,
                                                       where_.host, where_.port, ec.message())),
            {}};
  }

  attempt once(const std::string& body, bool stream, const token_sink& sink, assembly& a) {
    try {
      net::io_context ioc;
      const auto deadline = steady::now() + options_.request_timeout;
      tcp::resolver resolver(ioc);
      beast::error_code ec;
      tcp::resolver::results_type endpoints;
      bool resolved = false;
      resolver.async_resolve(where_.host, where_.port,
                             [&](beast::error_code e, tcp::resolver::results_type r) {
                               ec = e;
                               endpoints = std::move(r);
                               resolved = true;
                             });
      ioc.run();
      if (!resolved || ec) {
        return {attempt::kind::retry,
                aise::error(errc::unavailable,
                            fmt::format("llm: cannot resolve {}: {}", where_.host, ec.message())),
                {}};
      }
      auto connect = [&](beast::tcp_stream& t) -> attempt {
        bool finished = false;
        t.expires_after(options_.connect_timeout);
        t.async_connect(endpoints, [&](beast::error_code e, const tcp::endpoint&) {
          ec = e;
          finished = true;
        });
        ioc.restart();
        ioc.run();
        if (!finished || ec) {
          if (ec == beast::error::timeout)
            return {attempt::kind::retry,
                    aise::error(errc::timeout, fmt::format("llm: connecting to {}:{} timed out",
                                                           where_.host, where_.port)),
                    {}};
          return {
              attempt::kind::retry,
              aise::error(errc::unavailable, fmt::format("llm: cannot connect to {}:{}: {}",
                                                         where_.host, where_.port, ec.message())),
              {}};
        }
        return {attempt::kind::ok, {}, {}};
      };
      if (!where_.tls) {
        beast::tcp_stream t(ioc);
        if (auto c = connect(t); c.k != attempt::kind::ok) return c;
        auto r = exchange(t, ioc, t, body, stream, sink, a, deadline);
        t.socket().shutdown(tcp::socket::shutdown_both, ec);
        return r;
      }
      ssl::context ctx(ssl::context::tls_client);
      if (options_.verify_tls) {
        ctx.set_default_verify_paths();
        if (!options_.ca_file.empty()) {
          beast::error_code ca_ec;
          ctx.load_verify_file(options_.ca_file, ca_ec);
          if (ca_ec) {
            return {
                attempt::kind::fail,
                aise::error(errc::invalid_argument,
                            fmt::format("llm: ca_file {}: {}", options_.ca_file, ca_ec.message())),
                {}};
          }
        }
        ctx.set_verify_mode(ssl::verify_peer);
      } else {
        ctx.set_verify_mode(ssl::verify_none);
      }
      beast::ssl_stream<beast::tcp_stream> t(ioc, ctx);
      if (!SSL_set_tlsext_host_name(t.native_handle(), where_.host.c_str())) {
        return {
            attempt::kind::fail, aise::error(errc::invalid_argument, "llm: bad TLS host name"), {}};
      }
      if (options_.verify_tls) t.set_verify_callback(ssl::host_name_verification(where_.host));
      if (auto c = connect(beast::get_lowest_layer(t)); c.k != attempt::kind::ok) return c;
      bool finished = false;
      beast::get_lowest_layer(t).expires_at(deadline);
      t.async_handshake(ssl::stream_base::client, [&](beast::error_code e) {
        ec = e;
        finished = true;
      });
      ioc.restart();
      ioc.run();
      if (!finished || ec) {
        if (!finished || ec == beast::error::timeout) {
          return {attempt::kind::fail,
                  aise::error(errc::timeout,
                              fmt::format("llm: the TLS handshake with {} timed out", where_.host)),
                  {}};
        }
        // A certificate or protocol failure repeats itself: not retried. A
        // connection reset or closed during the handshake is retried.
        const bool tls_error = ec.category() == net::error::get_ssl_category() ||
                               ec.category() == net::ssl::error::get_stream_category();
        return {tls_error ? attempt::kind::fail : attempt::kind::retry,
                aise::error(errc::unavailable, fmt::format("llm: TLS handshake with {} failed: {}",
                                                           where_.host, ec.message())),
                {}};
      }
      return exchange(t, ioc, beast::get_lowest_layer(t), body, stream, sink, a, deadline);
    } catch (const std::exception& e) {
      return {attempt::kind::fail,
              aise::error(errc::unavailable, fmt::format("llm: {}", e.what())),
              {}};
    }
  }

  openai_options options_;
  endpoint where_;
};

}  // namespace

result<std::shared_ptr<provider>> make_openai_provider(openai_options options) {
  auto e = parse_url(options.base_url);
  if (!e) return e.error();
  if (options.max_retries < 0)
    return error(errc::invalid_argument, "llm: max_retries must be >= 0");
  return std::shared_ptr<provider>(
      std::make_shared<openai_provider>(std::move(options), std::move(*e)));
}

}  // namespace aise::llm
