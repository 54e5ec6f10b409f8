// The local causal-LM provider (include/aise/llm.hpp, make_local_provider).
#include <aise/llm.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fmt/format.h>
#include <numeric>
#include <random>
#include <set>

namespace aise::llm {
namespace {

class local_provider final : public provider {
 public:
  local_provider(std::shared_ptr<ml::model> lm, std::shared_ptr<const ml::wordpiece_tokenizer> tok,
                 local_options o, std::set<std::int64_t> stops)
      : lm_(std::move(lm)),
        tok_(std::move(tok)),
        options_(std::move(o)),
        stops_(std::move(stops)) {}

  [[nodiscard]] std::string_view name() const noexcept override { return options_.name; }

  result<chat_response> chat(const chat_request& request, const token_sink& on_token) override {
    if (request.messages.empty()) return error(errc::invalid_argument, "local llm: no messages");
    if (!request.tools.empty())
      return error(errc::invalid_argument, "local llm: tool calls are not supported");
    std::string prompt;
    for (const auto& m : request.messages) prompt += m.role + ": " + m.content + "\n";
    prompt += "assistant:";
    auto pieces = tok_->tokenize(prompt);
    if (!pieces) return pieces.error();
    std::vector<std::int64_t> ids;
    for (const auto& p : *pieces) ids.push_back(*tok_->id_of(p));  // tokenize gives known tokens
    const auto prompt_tokens = static_cast<std::int64_t>(ids.size());
    if (ids.size() > options_.max_context) {
      return error(errc::invalid_argument,
                   fmt::format("local llm: the prompt has {} tokens, more than the model's "
                               "max_context of {}: shorten the conversation",
                               ids.size(), options_.max_context));
    }
    const std::int64_t limit = request.max_tokens.value_or(options_.max_tokens);
    const double temperature = request.temperature.value_or(0.0);
    std::mt19937_64 rng(options_.seed != 0 ? options_.seed : std::random_device{}());
    chat_response out;
    out.reply.role = "assistant";
    out.model = lm_->info().name;
    out.finish_reason = "length";
    std::int64_t generated = 0;
    while (generated < limit) {
      // The model sees at most max_context tokens (the newest, once the
      // reply grows past it).
      const std::size_t start =
          ids.size() > options_.max_context ? ids.size() - options_.max_context : 0;
      if (ids.empty()) return error(errc::invalid_argument, "local llm: the prompt is empty");
      const auto n = static_cast<std::int64_t>(ids.size() - start);
      auto input = ml::tensor::of(
          {1, n}, std::vector<std::int64_t>(
                      std::next(ids.begin(), static_cast<std::ptrdiff_t>(start)), ids.end()));
      if (!input) return input.error();
      ml::tensors args;
      args.push_back(std::move(*input));
      auto logits = lm_->run(args);
      if (!logits) {
        // A full batching queue is back-pressure, not a limit a human must lift.
        if (logits.error().code() == errc::limit_exceeded)
          return error(errc::unavailable, logits.error().message());
        return logits.error();
      }
      if (logits->empty() || (*logits)[0].type() != ml::dtype::float32 ||
          (*logits)[0].shape().size() != 3 || (*logits)[0].shape()[1] != n ||
          (*logits)[0].shape()[2] != static_cast<std::int64_t>(tok_->vocab_size())) {
        return error(
            errc::invalid_argument,
            fmt::format("local llm: model '{}' returned {}, expected float32 [1, {}, {}]",
                        lm_->info().name, logits->empty() ? "nothing" : (*logits)[0].describe(), n,
                        tok_->vocab_size()));
      }
      const auto v = tok_->vocab_size();
      auto last = (*logits)[0].floats().subspan(static_cast<std::size_t>(n - 1) * v, v);
      const std::int64_t next = temperature <= 0 ? greedy(last) : sample(last, temperature, rng);
      if (stops_.count(next) != 0) {
        out.finish_reason = "stop";
        break;
      }
      ids.push_back(next);
      ++generated;
      const std::string piece = append_piece(out.reply.content, tok_->token_of(next));
      if (on_token && !piece.empty()) {
        try {
          on_token(piece);
        } catch (const std::exception& e) {
          return error(errc::internal, std::string("local llm: on_token threw: ") + e.what());
        } catch (...) {
          return error(errc::internal, "local llm: on_token threw");
        }
      }
      if (ends_with_stop(out.reply.content, request.stop)) {
        out.finish_reason = "stop";
        break;
      }
    }
    out.used = {.prompt_tokens = prompt_tokens, .completion_tokens = generated};
    return out;
  }

 private:
  static std::int64_t greedy(std::span<const float> logits) {
    return std::max_element(logits.begin(), logits.end()) - logits.begin();
  }

  std::int64_t sample(std::span<const float> logits, double temperature,
                      std::mt19937_64& rng) const {
    std::vector<std::int64_t> order(logits.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](auto a, auto b) {
      return logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)];
    });
    if (options_.top_k > 0 && order.size() > options_.top_k) order.resize(options_.top_k);
    const double top = logits[static_cast<std::size_t>(order.front())];
    std::vector<double> p;
    double sum = 0;
    for (auto i : order) {
      p.push_back(std::exp((logits[static_cast<std::size_t>(i)] - top) / temperature));
      sum += p.back();
    }
    // Nucleus: the smallest prefix reaching top_p.
    double acc = 0;
    std::size_t keep = 0;
    while (keep < p.size()) {
      acc += p[keep] / sum;
      ++keep;
      if (acc >= options_.top_p) break;
    }
    p.resize(keep);
    std::discrete_distribution<std::size_t> d(p.begin(), p.end());
    return order[d(rng)];
  }

  // BERT-style detokenisation: "##" pieces join the previous word, and so
  // does punctuation (one ASCII punctuation character).
  static std::string append_piece(std::string& text, std::string_view token) {
    std::string piece;
    const bool punctuation =
        token.size() == 1 && std::ispunct(static_cast<unsigned char>(token[0])) != 0;
    if (token.rfind("##", 0) == 0) {
      piece = std::string(token.substr(2));
    } else if (punctuation) {
      piece = std::string(token);
    } else {
      piece = (text.empty() ? "" : " ") + std::string(token);
    }
    text += piece;
    return piece;
  }

  static bool ends_with_stop(const std::string& text, const std::vector<std::string>& stops) {
    return std::any_of(stops.begin(), stops.end(), [&](const std::string& s) {
      return !s.empty() && text.size() >= s.size() &&
             text.compare(text.size() - s.size(), s.size(), s) == 0;
    });
  }

  std::shared_ptr<ml::model> lm_;
  std::shared_ptr<const ml::wordpiece_tokenizer> tok_;
  local_options options_;
  std::set<std::int64_t> stops_;
};

}  // namespace

result<std::shared_ptr<provider>> make_local_provider(
    std::shared_ptr<ml::model> lm, std::shared_ptr<const ml::wordpiece_tokenizer> tokenizer,
    local_options options) {
  if (!lm || !tokenizer)
    return error(errc::invalid_argument, "local llm: a model and a tokenizer are required");
  if (options.max_context == 0 || options.top_p <= 0 || options.top_p > 1)
    return error(errc::invalid_argument,
                 "local llm: max_context >= 1 and 0 < top_p <= 1 are required");
  if (options.stop_tokens.empty()) options.stop_tokens.push_back(tokenizer->options().sep);
  std::set<std::int64_t> stops;
  for (const auto& t : options.stop_tokens) {
    auto id = tokenizer->id_of(t);
    if (!id)
      return error(errc::invalid_argument,
                   fmt::format("local llm: stop token '{}' is not in the vocabulary", t));
    stops.insert(*id);
  }
  return std::shared_ptr<provider>(std::make_shared<local_provider>(
      std::move(lm), std::move(tokenizer), std::move(options), std::move(stops)));
}

}  // namespace aise::llm
