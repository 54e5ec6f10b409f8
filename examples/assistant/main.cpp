// The assistant example: an agent answers questions with an LLM, under a
// token budget per project, and pauses for a human when a project's budget
// runs out (instead of spending more).
//
// Which model answers:
//   AISE_LLM_URL set     an OpenAI-compatible server (AISE_LLM_KEY, AISE_LLM_MODEL)
//   otherwise            a local model through aise::ml: a small built-in demo
//                        language model (it can only parrot a few words, but it
//                        runs the same code path as a real local model)
//
//   aise_assistant_example ["question" ...]
#include <aise/llm.hpp>
#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>
#include <aise/task_context.hpp>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

namespace {

const std::vector<std::string> demo_vocab{"[PAD]",     "[UNK]", "[CLS]", "[SEP]", "user",
                                          "assistant", ":",     "?",     "i",     "would",
                                          "start",     "with",  "the",   "tests", "."};

/// The built-in demo language model: whatever it is asked, it says "i would
/// start with the tests." (each token's logits favour the next word of that
/// sentence; after "." comes [SEP]). A stand-in for a TorchScript model.
class demo_lm final : public aise::ml::model {
 public:
  demo_lm() { info_.name = "demo-lm"; }
  const aise::ml::model_info& info() const noexcept override { return info_; }
  aise::result<aise::ml::tensors> run(const aise::ml::tensors& in) override {
    const auto v = static_cast<std::int64_t>(demo_vocab.size());
    const auto t = in[0].shape()[1];
    std::vector<float> logits(static_cast<std::size_t>(t * v), 0.0F);
    for (std::int64_t i = 0; i < t; ++i) {
      const auto id = in[0].ints()[static_cast<std::size_t>(i)];
      // ":" → "i", then each sentence word → the next, "." → [SEP].
      std::int64_t next = 3;
      if (id == 6)
        next = 8;
      else if (id >= 8 && id < 14)
        next = id + 1;
      logits[static_cast<std::size_t>(i * v + next)] = 10.0F;
    }
    return aise::ml::tensors{*aise::ml::tensor::of({1, t, v}, std::move(logits))};
  }

 private:
  aise::ml::model_info info_;
};

std::shared_ptr<aise::llm::provider> choose_provider() {
  if (const char* url = std::getenv("AISE_LLM_URL"); url != nullptr && *url != '\0') {
    const char* key = std::getenv("AISE_LLM_KEY");
    const char* model = std::getenv("AISE_LLM_MODEL");
    auto p = aise::llm::make_openai_provider(
        {.base_url = url, .api_key = key ? key : "", .model = model ? model : "gpt-4o-mini"});
    if (!p) {
      std::fprintf(stderr, "AISE_LLM_URL: %s\n", p.error().describe().c_str());
      std::exit(1);
    }
    std::fprintf(stderr, "answering with %s\n", url);
    return *p;
  }
  auto tok = aise::ml::wordpiece_tokenizer::from_tokens(demo_vocab);
  auto p = aise::llm::make_local_provider(
      std::make_shared<demo_lm>(),
      std::make_shared<const aise::ml::wordpiece_tokenizer>(std::move(*tok)), {.max_tokens = 16});
  std::fprintf(stderr, "AISE_LLM_URL is not set: answering with the built-in demo model\n");
  return *p;
}

class assistant : public aise::agent {
 public:
  explicit assistant(std::shared_ptr<aise::llm::provider> p) : llm_(std::move(p)) {
    on_task("ask", [this](aise::task_context& ctx) -> aise::result<nlohmann::json> {
      aise::llm::chat_request req;
      req.messages = {{.role = "system", .content = "You help software engineers. Be brief."},
                      {.role = "user", .content = ctx.payload().at("question")}};
      req.max_tokens = 64;
      aise::llm::loop_guard guard;
      auto r = aise::llm::chat_in_task(ctx, *llm_, req, &guard);
      if (!r) return r.error();  // a budget or a loop: the task waits for a human
      return nlohmann::json{{"answer", r->reply.content}, {"tokens", r->used.total()}};
    });
  }

 private:
  std::shared_ptr<aise::llm::provider> llm_;
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> questions;
  for (int i = 1; i < argc; ++i) questions.emplace_back(argv[i]);
  if (questions.empty())
    questions = {"Where should I start refactoring this module?", "How do I review this diff?",
                 "What should I do about the flaky test?"};
  auto store = aise::make_memory_store();
  // A small budget for the "demo" project: room for about three answers
  // (each call reserves its prompt / 4 + max_tokens 64, then pays its usage).
  (void)store->set_budget_limit(aise::llm::project_tokens_key("demo"), 140);
  auto budgeted = aise::llm::make_budgeted_provider(choose_provider(), {.store = store});
  if (!budgeted) return 1;

  aise::runtime rt;
  aise::orchestrator_options oo;
  oo.store = store;
  aise::orchestrator orch(rt, oo);
  auto provider = *budgeted;
  (void)orch.register_kind("assistant",
                           [provider] { return std::make_unique<assistant>(provider); });
  if (!orch.spawn({.kind = "assistant", .project = "demo"})) return 1;

  for (const auto& q : questions) {
    auto id = orch.submit({.project = "demo", .kind = "ask", .payload = {{"question", q}}});
    if (!id) return 1;
    // Done, or paused for a human (awaiting_approval) when the budget ran out.
    for (int i = 0; i < 600; ++i) {
      auto t = orch.get(*id);
      if (t && t->state == aise::task_state::succeeded) {
        std::printf("Q: %s\nA: %s  (%lld tokens)\n", q.c_str(),
                    t->result->at("answer").get<std::string>().c_str(),
                    static_cast<long long>(t->result->at("tokens").get<std::int64_t>()));
        break;
      }
      if (t && t->state == aise::task_state::awaiting_approval) {
        std::printf("Q: %s\n   paused for a human: %s\n", q.c_str(),
                    t->error ? t->error->message().c_str() : "?");
        (void)orch.reject(*id, "example", "budget spent");
        break;
      }
      if (t && aise::is_terminal(t->state)) {
        std::printf("Q: %s\n   %s: %s\n", q.c_str(), std::string(aise::to_string(t->state)).c_str(),
                    t->error ? t->error->message().c_str() : "");
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  auto spent = store->get_budget(aise::llm::project_tokens_key("demo"));
  if (spent)
    std::printf("tokens spent by project demo: %lld of %lld\n",
                static_cast<long long>(spent->spent), static_cast<long long>(spent->limit));
  (void)rt.shutdown();
  return 0;
}
