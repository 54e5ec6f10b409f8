// The learned router on a real orchestrator: two agent kinds that can both
// take "work" tasks, each good at one sort (the other fails them). Routing
// starts at random and, trained on which kind succeeded, ends up sending
// nearly every task to the right kind on its first attempt.
#include <aise/learned_router.hpp>
#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>
#include <aise/task_context.hpp>

#include <doctest/doctest.h>

#include "unit/test_util.hpp"

using namespace aise;

namespace {

/// Succeeds on tasks about its own area, fails the others.
class specialist : public agent {
 public:
  explicit specialist(std::string area) : area_(std::move(area)) {
    on_task("work", [this](task_context& ctx) -> result<nlohmann::json> {
      if (ctx.task().description.find(area_) == std::string::npos)
        return error(errc::handler_failed, "not my area");
      return nullptr;
    });
  }

 private:
  std::string area_;
};

const char* const ui_words[] = {"button colour", "page layout", "css grid", "font size", "modal"};
const char* const db_words[] = {"slow query", "missing index", "schema migration", "deadlock",
                                "replication lag"};

/// Runs 80 tasks one at a time (both agents free at every choice) and
/// counts those that succeeded on their first attempt, per half.
std::pair<int, int> first_tries(std::shared_ptr<ml::learned_router> router) {
  runtime rt(test::quiet_options());
  orchestrator_options oo;
  oo.router = router;
  oo.retry_initial_backoff = std::chrono::milliseconds(1);
  orchestrator orch(rt, oo);
  REQUIRE(orch.register_kind("frontend", [] { return std::make_unique<specialist>("[ui]"); }));
  REQUIRE(orch.register_kind("backend", [] { return std::make_unique<specialist>("[db]"); }));
  REQUIRE(orch.spawn({.kind = "frontend", .name = "fe"}));
  REQUIRE(orch.spawn({.kind = "backend", .name = "be"}));
  auto first_try = [&](int i) {
    const bool ui = i % 2 == 0;
    const std::string description =
        std::string(ui ? "[ui] " : "[db] ") + (ui ? ui_words : db_words)[(i / 2) % 5];
    auto id = orch.submit({.kind = "work", .description = description, .max_attempts = 4});
    REQUIRE(id);
    auto t = orch.wait(*id, test::deadline);
    REQUIRE(t);
    // Without a router a retry goes to the same (wrong) agent again.
    if (router) REQUIRE(t->state == task_state::succeeded);
    return t->state == task_state::succeeded && t->attempt == 1;
  };
  int early = 0, late = 0;
  for (int i = 0; i < 40; ++i) early += first_try(i) ? 1 : 0;
  if (router) router->wait_idle();
  for (int i = 40; i < 80; ++i) {
    late += first_try(i) ? 1 : 0;
    if (router && i % 10 == 0) router->wait_idle();  // let trainings land between tasks
  }
  CHECK(rt.shutdown());
  return {early, late};
}

}  // namespace

TEST_CASE("learned router: routing improves as the system runs") {
  // Without a router the least-loaded choice takes the first free agent:
  // right for one sort of task only.
  const auto [plain_early, plain_late] = first_tries(nullptr);
  auto made = ml::make_learned_router(
      {.min_examples = 10, .retrain_every = 10, .explore = 0.05, .seed = 42});
  REQUIRE(made);
  auto router = *made;
  const auto [early, late] = first_tries(router);
  const auto s = router->stats();
  MESSAGE("tasks right on the first attempt (of 40): without a router ", plain_early, " then ",
          plain_late, "; learned router ", early, " then ", late, " after ", s.trainings,
          " trainings");
  CHECK(plain_late == 20);
  CHECK(s.trainings >= 2);
  CHECK(s.classes == 2);
  CHECK(late >= 36);  // at most a few explorations go wrong
  CHECK(late > plain_late);
  CHECK_FALSE(ml::make_learned_router({.explore = 2.0}));
}
