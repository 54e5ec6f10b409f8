// Token budgets, loop guards and escalation of LLM tasks. The provider here
// is a double with fixed usage (the HTTP client has its own tests); the
// stores are real: the in-memory store, and a SQLite file shared by two
// processes for the global limit.
#include <aise/llm.hpp>
#include <aise/orchestrator.hpp>
#include <aise/sql.hpp>
#include <aise/task_context.hpp>

#include <atomic>
#include <cstdio>
#include <doctest/doctest.h>
#include <filesystem>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.hpp"

using namespace aise;
using namespace aise::llm;

namespace {

/// Replies with `text` (a loop if it never changes), usage 10 + 5.
class echo_provider final : public provider {
 public:
  explicit echo_provider(std::string text = "ok") : text_(std::move(text)) {}
  std::string_view name() const noexcept override { return "echo"; }
  result<chat_response> chat(const chat_request&, const token_sink& sink) override {
    ++calls;
    if (sink) sink(text_);
    chat_response r;
    r.reply = {.role = "assistant", .content = text_};
    r.used = {.prompt_tokens = 10, .completion_tokens = 5};
    return r;
  }
  std::atomic<int> calls{0};

 private:
  std::string text_;
};

chat_request ask(std::string project) {
  chat_request r;
  r.project = std::move(project);
  r.messages.push_back({.role = "user", .content = "abcdefgh"});  // ~2 tokens
  r.max_tokens = 13;                                              // 15 reserved per call
  return r;
}

}  // namespace

TEST_CASE("llm budget: a project's token budget refuses calls before they are sent") {
  auto store = make_memory_store();
  auto inner = std::make_shared<echo_provider>();
  auto p = make_budgeted_provider(inner, {.store = store});
  REQUIRE(p);
  REQUIRE(store->set_budget_limit(project_tokens_key("p1"), 50));
  int granted = 0;
  result<chat_response> last = error(errc::internal, "");
  while ((last = (*p)->chat(ask("p1")))) ++granted;
  CHECK(last.error().code() == errc::limit_exceeded);
  CHECK(last.error().message().find("llm.tokens.project.p1") != std::string::npos);
  CHECK(granted == 3);       // 15 + 15 + 15 ≤ 50, the fourth needs 60
  CHECK(inner->calls == 3);  // the refused call was never sent
  CHECK(store->get_budget(project_tokens_key("p1"))->spent == 45);  // usage, not reservations
  CHECK(store->get_budget(provider_tokens_key("echo"))->spent == 45);
  CHECK((*p)->chat(ask("p2")));             // another project is not limited
  CHECK_FALSE((*p)->chat(chat_request{}));  // no project: invalid_argument
  // The provider's budget limits every project.
  REQUIRE(store->set_budget_limit(provider_tokens_key("echo"), 75));  // 60 spent so far
  CHECK((*p)->chat(ask("p3")));
  auto capped = (*p)->chat(ask("p3"));
  REQUIRE_FALSE(capped);
  CHECK(capped.error().message().find("llm.tokens.provider.echo") != std::string::npos);
  CHECK(store->get_budget(project_tokens_key("p3"))->spent == 15);  // reservation given back
}

TEST_CASE("llm budget: a server that reports no usage is charged the estimate") {
  class no_usage final : public provider {
   public:
    std::string_view name() const noexcept override { return "silent"; }
    result<chat_response> chat(const chat_request&, const token_sink&) override {
      chat_response r;
      r.reply = {.role = "assistant", .content = "ok"};
      return r;  // usage left at 0, as some servers do when streaming
    }
  };
  auto store = make_memory_store();
  auto p = make_budgeted_provider(std::make_shared<no_usage>(), {.store = store});
  REQUIRE(p);
  REQUIRE(store->set_budget_limit(project_tokens_key("p"), 40));
  CHECK((*p)->chat(ask("p")));
  CHECK((*p)->chat(ask("p")));
  CHECK(store->get_budget(project_tokens_key("p"))->spent == 30);  // 2 × the 15 reserved
  CHECK_FALSE((*p)->chat(ask("p")));                               // 45 > 40
  auto negative = ask("p");
  negative.max_tokens = -5;
  auto refused = (*p)->chat(negative);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code() == errc::invalid_argument);
}

TEST_CASE("llm budget: cost budgets are charged from the reported usage") {
  auto store = make_memory_store();
  auto p = make_budgeted_provider(std::make_shared<echo_provider>(),
                                  {.store = store,
                                   .prompt_price_per_1k = 1000,        // 1 unit per prompt token
                                   .completion_price_per_1k = 2000});  // 2 per completion token
  REQUIRE(p);
  REQUIRE(store->set_budget_limit(project_cost_key("p1"), 40));
  CHECK((*p)->chat(ask("p1")));  // 10 + 2 × 5 = 20
  CHECK((*p)->chat(ask("p1")));  // 40: used up
  auto refused = (*p)->chat(ask("p1"));
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code() == errc::limit_exceeded);
  CHECK(store->get_budget(project_cost_key("p1"))->spent == 40);
}

TEST_CASE("llm loop guard: too many turns or repeated output is a loop") {
  loop_guard turns({.max_turns = 3, .max_repeats = 0});
  for (int i = 0; i < 3; ++i)
    CHECK(turns.observe({.role = "assistant", .content = std::to_string(i)}));
  auto over = turns.observe({.role = "assistant", .content = "x"});
  REQUIRE_FALSE(over);
  CHECK(over.error().message().find("max_turns") != std::string::npos);

  loop_guard repeats({.max_turns = 100, .max_repeats = 3});
  CHECK(repeats.observe({.role = "assistant", .content = "run tests"}));
  CHECK(repeats.observe({.role = "assistant", .content = "read file"}));
  CHECK(repeats.observe({.role = "assistant", .content = "run  tests\n"}));  // whitespace ignored
  auto looped = repeats.observe({.role = "assistant", .content = "run tests"});
  REQUIRE_FALSE(looped);
  CHECK(looped.error().message().find("same output 3 times") != std::string::npos);

  loop_guard calls({.max_turns = 100, .max_repeats = 2});
  chat_message a{.role = "assistant",
                 .tool_calls = {{.id = "1", .name = "grep", .arguments = "{}"}}};
  chat_message b{.role = "assistant",
                 .tool_calls = {{.id = "2", .name = "grep", .arguments = "{\"x\":1}"}}};
  CHECK(calls.observe(a));
  CHECK(calls.observe(b));
  CHECK_FALSE(calls.observe(a));  // the same tool call again (ids differ: ignored)
}

namespace {

/// Calls its provider each turn of a task until done or stopped.
class thinker : public agent {
 public:
  thinker(std::shared_ptr<provider> p, int turns) : p_(std::move(p)), turns_(turns) {
    on_task("think", [this](task_context& ctx) -> result<nlohmann::json> {
      loop_guard guard({.max_turns = 10, .max_repeats = 3});
      std::string answer;
      for (int i = 0; i < turns_; ++i) {
        auto r = chat_in_task(ctx, *p_, ask(""), &guard);
        if (!r) return r.error();  // escalated already when it was a budget or a loop
        answer = r->reply.content;
      }
      return answer;
    });
  }

 private:
  std::shared_ptr<provider> p_;
  int turns_;
};

}  // namespace

TEST_CASE("llm: a task that reaches its project's budget waits for a human, then goes on") {
  runtime rt(test::quiet_options());
  auto store = make_memory_store();
  orchestrator_options oo;
  oo.store = store;
  orchestrator orch(rt, oo);
  test::event_recorder events(orch);
  auto p = make_budgeted_provider(std::make_shared<echo_provider>("done"), {.store = store});
  REQUIRE(p);
  REQUIRE(orch.register_kind("thinker", [p] { return std::make_unique<thinker>(*p, 2); }));
  REQUIRE(orch.spawn({.kind = "thinker", .name = "t1", .project = "acme"}));
  REQUIRE(store->set_budget_limit(project_tokens_key("acme"), 45));  // three calls

  auto first = orch.submit({.project = "acme", .kind = "think"});
  REQUIRE(first);
  CHECK(orch.wait(*first, test::deadline)->state == task_state::succeeded);  // 2 calls
  auto second = orch.submit({.project = "acme", .kind = "think"});
  REQUIRE(second);
  // One call fits, the second is refused: the task pauses instead of failing.
  REQUIRE(events.wait_for("task.awaiting_approval", *second));
  const task paused = *orch.get(*second);
  CHECK(paused.state == task_state::awaiting_approval);
  REQUIRE(paused.error);
  CHECK(paused.error->code() == errc::limit_exceeded);
  CHECK(paused.error->message().find("llm.tokens.project.acme") != std::string::npos);
  // A human raises the budget and approves: the task runs again and finishes.
  REQUIRE(store->set_budget_limit(project_tokens_key("acme"), 1000));
  REQUIRE(orch.approve(*second, "alice"));
  CHECK(orch.wait(*second, test::deadline)->state == task_state::succeeded);
  CHECK(rt.shutdown());
}

TEST_CASE("llm: a looping agent is escalated, not killed") {
  runtime rt(test::quiet_options());
  orchestrator orch(rt);
  test::event_recorder events(orch);
  auto echo = std::make_shared<echo_provider>("let me check again");
  REQUIRE(orch.register_kind("thinker", [echo] { return std::make_unique<thinker>(echo, 50); }));
  REQUIRE(orch.spawn({.kind = "thinker", .name = "t1"}));
  auto id = orch.submit({.kind = "think", .max_attempts = 3});
  REQUIRE(id);
  REQUIRE(events.wait_for("task.awaiting_approval", *id));
  auto t = orch.get(*id);
  REQUIRE(t);
  CHECK(t->state == task_state::awaiting_approval);
  REQUIRE(t->error);
  CHECK(t->error->message().find("loop guard") != std::string::npos);
  CHECK(echo->calls == 3);  // stopped at the third identical answer
  CHECK(orch.reject(*id, "bob", "stuck"));
  CHECK(rt.shutdown());
}

TEST_CASE("llm: max_turns stops a task before the call beyond it") {
  class counting final : public provider {
   public:
    std::string_view name() const noexcept override { return "counting"; }
    result<chat_response> chat(const chat_request&, const token_sink&) override {
      chat_response r;
      r.reply = {.role = "assistant", .content = "answer " + std::to_string(++calls)};
      return r;
    }
    std::atomic<int> calls{0};
  };
  runtime rt(test::quiet_options());
  orchestrator orch(rt);
  test::event_recorder events(orch);
  auto p = std::make_shared<counting>();
  REQUIRE(orch.register_kind("thinker", [p] { return std::make_unique<thinker>(p, 50); }));
  REQUIRE(orch.spawn({.kind = "thinker", .name = "t1"}));
  auto id = orch.submit({.kind = "think"});
  REQUIRE(id);
  REQUIRE(events.wait_for("task.awaiting_approval", *id));
  auto t = orch.get(*id);
  REQUIRE(t);
  CHECK(t->state == task_state::awaiting_approval);
  CHECK(t->error->message().find("max_turns 10") != std::string::npos);
  CHECK(p->calls == 10);  // the eleventh was never sent
  CHECK(orch.reject(*id, "bob", "enough"));
  CHECK(rt.shutdown());
}

TEST_CASE("llm budget: two processes sharing one store stay within one limit") {
  const auto dir =
      std::filesystem::temp_directory_path() / ("aise-llm-budget-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string url = "sqlite:" + (dir / "shared.db").string();
  {
    auto s = sql::open_store({.url = url});
    REQUIRE(s);
    REQUIRE((*s)->set_budget_limit(project_tokens_key("shared"), 1000));
  }
  // Both children call until refused; their outputs go to files.
  std::vector<pid_t> kids;
  for (int k = 0; k < 2; ++k) {
    const std::string out = (dir / ("out" + std::to_string(k))).string();
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      std::FILE* f = std::freopen(out.c_str(), "w", stdout);
      if (f == nullptr) _exit(3);
      execl(AISE_LLM_BUDGET_CHILD, AISE_LLM_BUDGET_CHILD, url.c_str(), "shared", nullptr);
      _exit(4);
    }
    kids.push_back(pid);
  }
  int total = 0;
  for (std::size_t k = 0; k < kids.size(); ++k) {
    int status = 0;
    REQUIRE(waitpid(kids[k], &status, 0) == kids[k]);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    std::FILE* f = std::fopen((dir / ("out" + std::to_string(k))).c_str(), "r");
    REQUIRE(f != nullptr);
    int n = -1;
    CHECK(std::fscanf(f, "%d", &n) == 1);
    std::fclose(f);
    CHECK(n >= 0);
    total += n;
  }
  // Each call reserves 15 and uses 15: 66 × 15 = 990 ≤ 1000 < 1005.
  CHECK(total == 66);
  auto s = sql::open_store({.url = url});
  REQUIRE(s);
  CHECK((*s)->get_budget(project_tokens_key("shared"))->spent == 990);
  std::filesystem::remove_all(dir);
}
