// A process of the cross-process budget test (tests/unit/llm_budget_test.cpp):
// calls a budgeted provider against a shared SQLite store until the budget
// refuses, then prints how many calls it was granted.
//
//   aise_llm_budget_child <store-url> <project>
#include <aise/llm.hpp>
#include <aise/sql.hpp>

#include <cstdio>
#include <string>

namespace {

/// Answers every call with the same fixed usage (10 prompt + 5 completion).
class fixed_usage final : public aise::llm::provider {
 public:
  std::string_view name() const noexcept override { return "fixed"; }
  aise::result<aise::llm::chat_response> chat(const aise::llm::chat_request&,
                                              const aise::llm::token_sink&) override {
    aise::llm::chat_response r;
    r.reply = {.role = "assistant", .content = "ok"};
    r.used = {.prompt_tokens = 10, .completion_tokens = 5};
    return r;
  }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: aise_llm_budget_child <store-url> <project>\n");
    return 2;
  }
  auto store = aise::sql::open_store({.url = argv[1], .pool_size = 1});
  if (!store) {
    std::fprintf(stderr, "open_store: %s\n", store.error().describe().c_str());
    return 1;
  }
  auto p = aise::llm::make_budgeted_provider(std::make_shared<fixed_usage>(), {.store = *store});
  if (!p) return 1;
  aise::llm::chat_request req;
  req.project = argv[2];
  req.messages.push_back({.role = "user", .content = "abcdefgh"});  // 2 tokens estimated
  req.max_tokens = 13;                                              // 2 + 13 = 15 reserved
  int granted = 0;
  for (;;) {
    auto r = (*p)->chat(req);
    if (r) {
      ++granted;
      continue;
    }
    if (r.error().code() == aise::errc::limit_exceeded) break;
    std::fprintf(stderr, "chat: %s\n", r.error().describe().c_str());
    return 1;
  }
  std::printf("%d\n", granted);
  return 0;
}
