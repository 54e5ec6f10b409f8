#include "demo.hpp"

#include <aise/store.hpp>

#include <memory>
#include <system_error>
#include <utility>

#include "agents.hpp"
#include "process.hpp"

namespace aise::server::demo {

result<void> register_kinds(orchestrator& orch) {
  auto compiler = team::find_program({"c++", "g++", "clang++"});
  if (!compiler) {
    return fail(errc::unavailable,
                "the demo team needs a C++ compiler on PATH (c++, g++ or clang++)");
  }
  const std::pair<const char*, agent_factory> kinds[] = {
      {"planner", [] { return std::make_unique<team::planner>(); }},
      {"coder", [] { return std::make_unique<team::coder>(); }},
      {"tester", [c = *compiler] { return std::make_unique<team::tester>(c); }},
      {"reviewer", [] { return std::make_unique<team::reviewer>(); }},
  };
  for (const auto& [kind, factory] : kinds) {
    if (auto r = orch.register_kind(kind, factory); !r) return r;
  }
  return {};
}

result<started> start(orchestrator& orch, const std::filesystem::path& work_dir) {
  const std::pair<const char*, const char*> seats[] = {{"planner", "demo-planner-1"},
                                                       {"coder", "demo-coder-1"},
                                                       {"tester", "demo-tester-1"},
                                                       {"tester", "demo-tester-2"},
                                                       {"reviewer", "demo-reviewer-1"}};
  for (const auto& [kind, name] : seats) {
    agent_spawn seat;
    seat.kind = kind;
    seat.name = name;
    seat.project = project_id;
    auto spawned = orch.spawn(seat);
    if (!spawned && spawned.error().code() != errc::already_exists) return spawned.error();
  }

  store& db = orch.store();
  if (auto existing = db.get_project(project_id); !existing) {
    if (existing.error().code() != errc::not_found) return existing.error();
    project p;
    p.id = project_id;
    p.name = "Demo: fib(10) in C++";
    p.description =
        "The demo team takes a feature request to merged code: plan, code, test, lint, "
        "review, then a merge that waits for your approval.";
    auto created = db.create_project(std::move(p));
    if (!created && created.error().code() != errc::already_exists) return created.error();
  }

  started out;
  if (auto merge = db.get_task(merge_id)) {
    out.merge_state = std::string(to_string(merge->state));
    return out;
  } else if (merge.error().code() != errc::not_found) {
    return merge.error();
  }

  std::error_code ec;
  std::filesystem::create_directories(work_dir, ec);
  if (ec) {
    return fail(errc::unavailable,
                "cannot create the demo work directory " + work_dir.string() + ": " + ec.message());
  }
  task_spec plan;
  plan.id = plan_id;
  plan.project = project_id;
  plan.kind = "plan";
  plan.description = "turn the request into steps and see them through";
  plan.payload = {{"request", "a C++ program that prints fib(10)"},
                  {"workdir", std::filesystem::absolute(work_dir).string()}};
  plan.max_attempts = 3;

  task_spec merge;
  merge.id = merge_id;
  merge.project = project_id;
  merge.kind = "merge";
  merge.description = "merge the reviewed code (approve it in the dashboard or the API)";
  merge.payload = {{"inputs", {{"plan", plan_id}}}};
  merge.depends_on = {plan_id};
  merge.requires_approval = true;
  merge.max_attempts = 3;
  auto ids = orch.submit_all({plan, merge});
  if (!ids) return ids.error();
  out.submitted = true;
  out.merge_state = "pending";
  return out;
}

}  // namespace aise::server::demo
