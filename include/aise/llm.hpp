#pragma once
/// @file
/// aise::llm: large language models for agents. `provider` is what agents
/// call (chat messages, tool/function calling, streamed tokens, usage
/// accounting); `make_openai_provider` is a client of any OpenAI-compatible
/// chat-completions endpoint (OpenAI, vLLM, llama.cpp's server, Ollama,
/// LiteLLM, ...) over HTTP or HTTPS (Boost.Beast and OpenSSL, linked
/// privately).
///
/// Contract:
/// - Blocking: `chat` runs on the calling thread until the reply is
///   complete (tokens go to `on_token` as they arrive). From a task handler,
///   call it through `agent::run_blocking`.
/// - Thread safety: a provider may be called from many threads at once;
///   each call uses its own connection.
/// - Retries: 429 and 5xx answers and failed connections are retried with
///   exponential backoff, honouring Retry-After (seconds) up to
///   `max_retry_after`; a call that already streamed tokens to `on_token`
///   is not retried (it would repeat them) and fails with `unavailable`.
/// - Errors are values, the process keeps running: unreachable or dropping
///   server `unavailable`; timeouts `timeout`; 400/404/422 and a reply that
///   is not the protocol's JSON `invalid_argument`; 401/403 `rejected`;
///   retries exhausted on 429 `limit_exceeded`; a reply larger than
///   `max_response_bytes` `limit_exceeded`. The API key is never logged or
///   put in an error message.

#include <aise/error.hpp>
#include <aise/llm_export.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aise::llm {

/// A call of a tool the model asks for.
struct AISE_LLM_EXPORT tool_call {
  std::string id;
  std::string name;
  std::string arguments;  ///< JSON text, as the model wrote it (may be invalid JSON)
};

/// One chat message. `role`: "system", "user", "assistant" or "tool".
struct AISE_LLM_EXPORT chat_message {
  std::string role;
  std::string content;
  std::vector<tool_call> tool_calls;  ///< assistant messages that call tools
  std::string tool_call_id;           ///< tool messages: the call answered
};

/// A function the model may call: name, description, JSON schema.
struct AISE_LLM_EXPORT tool_spec {
  std::string name;
  std::string description;
  nlohmann::json parameters = nlohmann::json::object();
};

struct AISE_LLM_EXPORT chat_request {
  std::vector<chat_message> messages;
  std::vector<tool_spec> tools;
  std::string model;  ///< empty: the provider's default
  std::optional<double> temperature;
  std::optional<std::int64_t> max_tokens;
  std::vector<std::string> stop;
};

struct AISE_LLM_EXPORT usage {
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  [[nodiscard]] std::int64_t total() const noexcept { return prompt_tokens + completion_tokens; }
};

struct AISE_LLM_EXPORT chat_response {
  chat_message reply;         ///< role "assistant"
  std::string finish_reason;  ///< "stop", "length", "tool_calls", ...
  usage used;                 ///< as reported by the server (0 when it reports none)
  std::string model;          ///< the model that answered
  int attempts = 1;           ///< HTTP requests made (retries included)
};

/// Receives streamed text as it arrives.
using token_sink = std::function<void(std::string_view delta)>;

/// What agents call. Implementations: the OpenAI-compatible client; a local
/// model backend (planned); test doubles.
class AISE_LLM_EXPORT provider {
 public:
  virtual ~provider() = default;
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;
  /// Sends `request`; with `on_token`, streams the reply's text into it.
  virtual result<chat_response> chat(const chat_request& request, const token_sink& on_token) = 0;
  result<chat_response> chat(const chat_request& request) { return chat(request, {}); }
};

struct AISE_LLM_EXPORT openai_options {
  /// E.g. "https://api.openai.com/v1" or "http://127.0.0.1:8080/v1"; the
  /// client posts to <base_url>/chat/completions.
  std::string base_url;
  std::string api_key;  ///< sent as "Authorization: Bearer"; may be empty
  std::string model;    ///< default model of requests that name none
  std::chrono::milliseconds connect_timeout{10'000};
  /// The whole request, streaming included.
  std::chrono::milliseconds request_timeout{300'000};
  int max_retries = 4;                                ///< retries after the first attempt
  std::chrono::milliseconds backoff{500};             ///< first wait; doubles
  std::chrono::milliseconds max_retry_after{60'000};  ///< longer Retry-After: give up
  std::size_t max_response_bytes = 16u << 20;         ///< body bytes read at most
  bool verify_tls = true;                             ///< check the server certificate
  std::string ca_file;  ///< extra CA (PEM) to trust, e.g. a private one
};

/// An OpenAI-compatible chat-completions client. `invalid_argument` for a
/// base URL that is not http(s)://host[:port][/path].
AISE_LLM_EXPORT result<std::shared_ptr<provider>> make_openai_provider(openai_options options);

}  // namespace aise::llm
