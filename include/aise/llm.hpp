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
///   retries exhausted (429, 5xx, dropped connections) `unavailable`; a
///   reply larger than `max_response_bytes` `limit_exceeded`; a budget
///   reached (budgeted provider) `limit_exceeded`. The API key is never
///   logged or put in an error message.

#include <aise/error.hpp>
#include <aise/llm_export.hpp>
#include <aise/ml.hpp>
#include <aise/store.hpp>
#include <aise/wordpiece.hpp>

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
  /// The project the call is for: its token and cost budgets are charged
  /// (required by a budgeted provider; `chat_in_task` fills it in).
  std::string project;
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

// ------------------------------------------------------------ local model --

/// How a local causal language model generates.
struct AISE_LLM_EXPORT local_options {
  std::string name = "local";  ///< the provider's name (budget keys, logs)
  /// Completion tokens when the request sets no max_tokens.
  std::int64_t max_tokens = 64;
  /// Tokens the model sees at most: a longer prompt is `invalid_argument`;
  /// a reply that grows past it slides the window (the oldest tokens go).
  std::size_t max_context = 512;
  /// Sampling when the request's temperature is > 0: only the `top_k` most
  /// probable tokens (0: all), then the smallest set whose probability
  /// reaches `top_p` (1: all). Temperature 0 or unset: greedy.
  std::size_t top_k = 0;
  double top_p = 1.0;
  std::uint64_t seed = 0;  ///< 0: random
  /// Tokens that end the reply (besides the request's stop strings);
  /// default: the tokenizer's [SEP].
  std::vector<std::string> stop_tokens;
};

/// A provider that runs a causal language model locally through aise::ml:
/// `lm` takes input ids int64 [1, tokens] and returns logits float32 [1,
/// tokens, vocabulary] (a TorchScript model through aise::torch, say);
/// `tokenizer` maps text to ids and back (pieces joined, "##" merged). The
/// messages become the prompt "role: content" per line, then "assistant:".
/// Tool calls are not supported (`invalid_argument` when tools are given).
/// Thread-safe (calls run the model concurrently; sampling state is per
/// call). `invalid_argument` for a model whose output is not [1, tokens,
/// vocabulary size] or a prompt that is not UTF-8.
AISE_LLM_EXPORT result<std::shared_ptr<provider>> make_local_provider(
    std::shared_ptr<ml::model> lm, std::shared_ptr<const ml::wordpiece_tokenizer> tokenizer,
    local_options options = {});

// ----------------------------------------------------------------- budgets --
//
// Token and cost budgets per project and per provider, kept as counters in
// the store (store::charge_budget), so every process and machine using the
// same store enforces the same limits. Keys:
//   llm.tokens.project.<project>    llm.tokens.provider.<provider name>
//   llm.cost.project.<project>      llm.cost.provider.<provider name>
// A limit of 0 (or no counter) means no limit.

AISE_LLM_EXPORT std::string project_tokens_key(std::string_view project);
AISE_LLM_EXPORT std::string provider_tokens_key(std::string_view provider);
AISE_LLM_EXPORT std::string project_cost_key(std::string_view project);
AISE_LLM_EXPORT std::string provider_cost_key(std::string_view provider);

struct AISE_LLM_EXPORT budget_options {
  std::shared_ptr<aise::store> store;  ///< required
  /// Completion tokens reserved for a request without max_tokens.
  std::int64_t default_completion_reservation = 1024;
  /// Cost per 1,000 tokens in the unit of your cost budgets (e.g.
  /// micro-dollars); 0 and 0: no cost accounting.
  std::int64_t prompt_price_per_1k = 0;
  std::int64_t completion_price_per_1k = 0;
};

/// Wraps `inner` with budgets. Before each call it reserves an estimate of
/// the call's tokens (prompt characters / 4, rounded up, plus max_tokens or
/// `default_completion_reservation`) on the project's and the provider's
/// token counters, each within its limit: when either refuses, nothing is
/// sent and the call fails with `limit_exceeded` naming the budget. A cost
/// budget already spent refuses the same way. After the call the
/// reservation is replaced by the usage the server reported (or given back
/// when the call failed), and the cost is charged. Concurrent calls of any
/// number of processes stay within a token limit as long as their
/// estimates are not below their real usage. A server that reports no
/// usage is charged the estimate. `invalid_argument` for a request without
/// `project` or with a negative max_tokens. The name is the inner
/// provider's. A provider that throws is caught (`internal`) and its
/// reservation given back.
AISE_LLM_EXPORT result<std::shared_ptr<provider>> make_budgeted_provider(
    std::shared_ptr<provider> inner, budget_options options);

// ------------------------------------------------------------- loop guards --

struct AISE_LLM_EXPORT loop_guard_options {
  int max_turns = 25;   ///< model calls in one task at most
  int max_repeats = 3;  ///< the same output this often within 2 × max_repeats turns: a loop
};

/// Watches one agent's turns on one task: too many turns, or the model
/// repeating itself (the same text and tool calls, whitespace ignored, even
/// alternating with others), is a loop. Not thread-safe (one task's
/// handler uses it).
class AISE_LLM_EXPORT loop_guard {
 public:
  explicit loop_guard(loop_guard_options options = {}) : options_(options) {}
  /// Records one model reply; `limit_exceeded` (saying which rule) once it
  /// makes a loop.
  result<void> observe(const chat_message& reply);
  [[nodiscard]] int turns() const noexcept { return turns_; }
  [[nodiscard]] int max_turns() const noexcept { return options_.max_turns; }

 private:
  loop_guard_options options_;
  int turns_ = 0;
  std::vector<std::string> recent_;
};

}  // namespace aise::llm

namespace aise {
class task_context;
}

namespace aise::llm {

/// For task handlers: `p.chat` for the task's project (filled in when the
/// request names none), observed by `guard` when given (a task that used
/// its `max_turns` is escalated before another call is made). When the call ends
/// in `limit_exceeded` (a budget reached, an oversized answer) or the guard
/// sees a loop, the task is escalated to a human
/// (`task_context::escalate`: awaiting_approval, the reason kept) instead
/// of failing or spending more, and that error is returned: the handler
/// just returns. Blocks like `chat`.
AISE_LLM_EXPORT result<chat_response> chat_in_task(task_context& ctx, provider& p,
                                                   chat_request request,
                                                   loop_guard* guard = nullptr,
                                                   const token_sink& on_token = {});

}  // namespace aise::llm
