// Budgets, loop guards and the task helper of aise::llm (include/aise/llm.hpp).
#include <aise/llm.hpp>
#include <aise/task_context.hpp>

#include <algorithm>
#include <cctype>
#include <fmt/format.h>

namespace aise::llm {

std::string project_tokens_key(std::string_view project) {
  return fmt::format("llm.tokens.project.{}", project);
}
std::string provider_tokens_key(std::string_view provider) {
  return fmt::format("llm.tokens.provider.{}", provider);
}
std::string project_cost_key(std::string_view project) {
  return fmt::format("llm.cost.project.{}", project);
}
std::string provider_cost_key(std::string_view provider) {
  return fmt::format("llm.cost.provider.{}", provider);
}

namespace {

result<std::int64_t> estimate(const chat_request& r, std::int64_t default_completion) {
  const std::int64_t completion = r.max_tokens.value_or(default_completion);
  if (completion < 0 || completion > (std::int64_t{1} << 40))
    return error(errc::invalid_argument, "llm budget: max_tokens must be within 0 … 2^40");
  std::size_t chars = 0;
  for (const auto& m : r.messages) {
    chars += m.content.size();
    for (const auto& c : m.tool_calls) chars += c.name.size() + c.arguments.size();
  }
  for (const auto& t : r.tools) {
    chars += t.name.size() + t.description.size() +
             t.parameters.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).size();
  }
  return static_cast<std::int64_t>((chars + 3) / 4) + completion;
}

class budgeted_provider final : public provider {
 public:
  budgeted_provider(std::shared_ptr<provider> inner, budget_options o)
      : inner_(std::move(inner)), options_(std::move(o)) {}

  [[nodiscard]] std::string_view name() const noexcept override { return inner_->name(); }

  result<chat_response> chat(const chat_request& request, const token_sink& on_token) override {
    if (request.project.empty())
      return error(errc::invalid_argument, "llm budget: the request names no project");
    store& s = *options_.store;
    const std::string provider_name(inner_->name());
    // A cost budget already used up refuses before anything is reserved.
    for (const auto& key : {project_cost_key(request.project), provider_cost_key(provider_name)}) {
      auto b = s.get_budget(key);
      if (b && b->limit > 0 && b->spent >= b->limit) {
        return error(errc::limit_exceeded, fmt::format("llm budget '{}' reached: {} of {} spent",
                                                       key, b->spent, b->limit));
      }
      if (!b && b.error().code() != errc::not_found) return b.error();
    }
    // Reserve the estimate on both token counters, each within its limit.
    auto estimated = estimate(request, options_.default_completion_reservation);
    if (!estimated) return estimated.error();
    const std::int64_t reserved = *estimated;
    const std::string keys[2] = {project_tokens_key(request.project),
                                 provider_tokens_key(provider_name)};
    int held = 0;
    for (; held < 2; ++held) {
      auto r = s.charge_budget(keys[held], reserved, true);
      if (!r) {
        for (int k = 0; k < held; ++k) (void)s.charge_budget(keys[k], -reserved, false);
        if (r.error().code() == errc::limit_exceeded) {
          return error(errc::limit_exceeded,
                       fmt::format("llm budget '{}' reached: this call needs about {} tokens; {}",
                                   keys[held], reserved, r.error().message()));
        }
        return r.error();
      }
    }
    result<chat_response> out = error(errc::internal, "llm: the provider threw");
    try {
      out = inner_->chat(request, on_token);
    } catch (const std::exception& e) {
      out = error(errc::internal, std::string("llm: the provider threw: ") + e.what());
    } catch (...) {  // NOLINT(bugprone-empty-catch): reported through `out`
    }
    // The reservation becomes the reported usage; a server that reports
    // none is charged the estimate; a failed call gives it back. (A store
    // refusing this correction leaves the counter off by the difference.)
    std::int64_t used = 0;
    if (out) used = out->used.total() > 0 ? out->used.total() : reserved;
    for (const auto& key : keys) (void)s.charge_budget(key, used - reserved, false);
    if (out && (options_.prompt_price_per_1k != 0 || options_.completion_price_per_1k != 0)) {
      const std::int64_t cost =
          (out->used.prompt_tokens * options_.prompt_price_per_1k +
           out->used.completion_tokens * options_.completion_price_per_1k + 999) /
          1000;
      for (const auto& key : {project_cost_key(request.project), provider_cost_key(provider_name)})
        (void)s.charge_budget(key, cost, false);
    }
    return out;
  }

 private:
  std::shared_ptr<provider> inner_;
  budget_options options_;
};

/// A reply's text and tool calls, whitespace collapsed: what "the same
/// output" means for the loop guard.
std::string fingerprint(const chat_message& m) {
  std::string raw = m.content;
  for (const auto& c : m.tool_calls) raw += "\x1f" + c.name + "\x1f" + c.arguments;
  std::string out;
  bool space = false;
  for (char ch : raw) {
    if (std::isspace(static_cast<unsigned char>(ch)) != 0) {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(ch);
  }
  return out;
}

}  // namespace

result<std::shared_ptr<provider>> make_budgeted_provider(std::shared_ptr<provider> inner,
                                                         budget_options options) {
  if (!inner) return error(errc::invalid_argument, "llm budget: no provider");
  if (!options.store) return error(errc::invalid_argument, "llm budget: no store");
  if (options.default_completion_reservation < 0 || options.prompt_price_per_1k < 0 ||
      options.completion_price_per_1k < 0)
    return error(errc::invalid_argument, "llm budget: negative reservation or price");
  return std::shared_ptr<provider>(
      std::make_shared<budgeted_provider>(std::move(inner), std::move(options)));
}

result<void> loop_guard::observe(const chat_message& reply) {
  ++turns_;
  if (turns_ > options_.max_turns) {
    return error(errc::limit_exceeded,
                 fmt::format("loop guard: {} model turns on this task (max_turns {})", turns_,
                             options_.max_turns));
  }
  recent_.push_back(fingerprint(reply));
  const auto window = static_cast<std::size_t>(std::max(1, options_.max_repeats) * 2);
  if (recent_.size() > window) recent_.erase(recent_.begin());
  const auto same = std::count(recent_.begin(), recent_.end(), recent_.back());
  if (options_.max_repeats > 0 && same >= options_.max_repeats) {
    return error(errc::limit_exceeded,
                 fmt::format("loop guard: the model gave the same output {} times in its last {} "
                             "turns: \"{}\"",
                             same, recent_.size(), recent_.back().substr(0, 80)));
  }
  return {};
}

result<chat_response> chat_in_task(task_context& ctx, provider& p, chat_request request,
                                   loop_guard* guard, const token_sink& on_token) {
  if (request.project.empty()) request.project = ctx.task().project;
  if (guard != nullptr && guard->turns() >= guard->max_turns()) {
    // Refused before the call: the turn beyond the limit is not paid for.
    auto e = error(errc::limit_exceeded,
                   fmt::format("loop guard: {} model turns on this task already (max_turns {})",
                               guard->turns(), guard->max_turns()));
    (void)ctx.escalate(e);
    return e;
  }
  auto out = p.chat(request, on_token);
  if (!out) {
    if (out.error().code() == errc::limit_exceeded) (void)ctx.escalate(out.error());
    return out;
  }
  if (guard != nullptr) {
    if (auto looped = guard->observe(out->reply); !looped) {
      (void)ctx.escalate(looped.error());
      return looped.error();
    }
  }
  return out;
}

}  // namespace aise::llm
