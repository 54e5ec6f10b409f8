/// @file
/// libaise's team example: a planner, a coder, two testers and a reviewer
/// take a feature request through a graph of tasks, in one process.
///
///     plan ──spawns──► code ──┬──► test ──┬──► review
///       │                     └──► lint ──┘
///       └───────────────────────────────────────────► merge (needs approval)
///
/// main wires it up: it registers the agent kinds with an orchestrator,
/// spawns the agents, submits "plan" and "merge", prints every event,
/// approves (or asks whether to approve) the merge and prints a summary.
/// The agents themselves are in agents.cpp.

#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>
#include <aise/sql.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fmt/format.h>
#include <iostream>
#include <memory>
#include <optional>
#include <poll.h>
#include <spdlog/logger.h>
#include <string>
#include <string_view>
#include <unistd.h>
#include <utility>
#include <vector>

#include "agents.hpp"
#include "cli.hpp"
#include "event_line.hpp"
#include "process.hpp"
#include "task_watch.hpp"
#include "workspace.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

// The ids main gives the tasks it submits (the planner names its own steps).
constexpr const char* plan_id = "plan";
constexpr const char* merge_id = "merge";

// A normal run takes a few seconds; this bounds a stuck one.
constexpr auto run_budget = 120s;
// How long --interactive waits for an answer before taking it as "no".
constexpr auto answer_timeout = 300s;

// Registers the agent kinds (`register_only`: a kind is a factory, so the
// orchestrator can also re-create an agent that crashed, or one a resumed
// run brings back), or spawns the team: one supervised agent per seat,
// each seat by its own name. A seat whose agent is already there (a resumed
// run got it back from the store) is skipped: a run killed while it spawned
// the team recorded only some of the seats, and those alone cannot finish
// the work, so every missing seat is spawned, not only a whole team when
// none came back.
aise::result<void> assemble_team(aise::orchestrator& orch, const std::string& compiler,
                                 bool register_only) {
  const std::pair<const char*, aise::agent_factory> kinds[] = {
      {"planner", [] { return std::make_unique<team::planner>(); }},
      {"coder", [] { return std::make_unique<team::coder>(); }},
      {"tester", [compiler] { return std::make_unique<team::tester>(compiler); }},
      {"reviewer", [] { return std::make_unique<team::reviewer>(); }},
  };
  if (register_only) {
    for (const auto& [kind, factory] : kinds) {
      if (auto r = orch.register_kind(kind, factory); !r) return r;
    }
    return aise::ok();
  }
  // Two testers: "test" and "lint" run at the same time, one on each.
  const std::pair<const char*, const char*> seats[] = {{"planner", "planner-1"},
                                                       {"coder", "coder-1"},
                                                       {"tester", "tester-1"},
                                                       {"tester", "tester-2"},
                                                       {"reviewer", "reviewer-1"}};
  for (const auto& [kind, name] : seats) {
    aise::agent_spawn seat;
    seat.kind = kind;
    seat.name = name;
    auto spawned = orch.spawn(seat);
    if (!spawned && spawned.error().code() != aise::errc::already_exists) return spawned.error();
  }
  return aise::ok();
}

// The two tasks main submits; the planner adds the rest as its subtasks.
std::vector<aise::task_spec> feature_tasks(const team::cli_options& options,
                                           const fs::path& workdir) {
  aise::task_spec plan;
  plan.id = plan_id;
  plan.kind = "plan";
  plan.description = "turn the request into steps and see them through";
  plan.payload = {{"request", options.request}, {"workdir", workdir.string()}};
  // A run stopped mid-task loses that attempt (it counts): leave room to resume.
  plan.max_attempts = 3;

  aise::task_spec merge;
  merge.id = merge_id;
  merge.kind = "merge";
  merge.description = "merge the reviewed code";
  merge.payload = {{"inputs", {{"plan", plan_id}}}};  // the plan's result names file and verdict
  merge.depends_on = {plan_id};
  merge.requires_approval = true;  // waits in awaiting_approval for approve() or reject()
  merge.max_attempts = 3;
  return {plan, merge};
}

// Asks a yes/no question on the terminal. No answer within `timeout`, or
// the end of input, counts as no.
bool ask_yes_no(std::string_view question, std::chrono::seconds timeout) {
  fmt::print("{}", question);
  std::fflush(stdout);
  pollfd in{STDIN_FILENO, POLLIN, 0};
  const auto deadline = steady::now() + timeout;
  int ready = 0;
  do {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now());
    ready = ::poll(&in, 1, static_cast<int>(std::max<std::int64_t>(0, left.count())));
  } while (ready < 0 && errno == EINTR);
  if (ready <= 0) {
    fmt::print("\n  no answer within {} s: taken as no\n", timeout.count());
    return false;
  }
  std::string answer;
  if (!std::getline(std::cin, answer)) {
    fmt::print("\n");
    return false;
  }
  if (::isatty(STDIN_FILENO) == 0) fmt::print("{}\n", answer);  // a piped answer is not echoed
  std::fflush(stdout);
  return !answer.empty() && (answer.front() == 'y' || answer.front() == 'Y');
}

// Approves the merge, or rejects it when --interactive and the answer is no.
void decide_merge(aise::orchestrator& orch, bool interactive) {
  aise::result<void> decided = aise::ok();
  if (!interactive) {
    decided = orch.approve(merge_id, "auto");
  } else if (ask_yes_no("  approve merge? [y/N] ", answer_timeout)) {
    decided = orch.approve(merge_id, "you");
  } else {
    decided = orch.reject(merge_id, "you", "declined at the prompt");
  }
  if (!decided) fmt::print(stderr, "approval not recorded: {}\n", decided.error().describe());
}

// The final records: the plan, its steps in creation order, the merge.
std::vector<aise::task> final_tasks(aise::orchestrator& orch) {
  std::vector<aise::task> tasks;
  if (auto plan = orch.get(plan_id)) tasks.push_back(std::move(plan.value()));
  aise::task_filter steps;
  steps.parent = plan_id;
  if (auto page = orch.store().list_tasks(steps)) {
    std::vector<aise::task> children = std::move(page->items);
    std::stable_sort(children.begin(), children.end(),
                     [](const auto& a, const auto& b) { return a.created_at < b.created_at; });
    tasks.insert(tasks.end(), children.begin(), children.end());
  }
  if (auto merge = orch.get(merge_id)) tasks.push_back(std::move(merge.value()));
  return tasks;
}

// What a task came to: its result's summary, or its error.
std::string outcome_of(const aise::task& t) {
  if (t.state == aise::task_state::succeeded && t.result && t.result->is_object()) {
    return t.result->value("summary", "done");
  }
  return t.error ? t.error->message() : std::string();
}

void print_summary(const std::vector<aise::task>& tasks) {
  fmt::print("\nsummary\n");
  fmt::print("  {:<8} {:<10} {:<9} {:<11} {}\n", "task", "state", "attempts", "agent", "outcome");
  std::string verdict = "none: the review did not run";
  for (const auto& t : tasks) {
    const std::string outcome = outcome_of(t);
    const std::string attempts = fmt::format("{} of {}", t.attempt, t.max_attempts);
    const std::string agent = t.agent.empty() ? "-" : t.agent;
    const auto eol = outcome.find('\n');
    fmt::print("  {:<8} {:<10} {:<9} {:<11} {}\n", t.id, aise::to_string(t.state), attempts, agent,
               outcome.substr(0, eol));
    // Multi-line errors (compiler output) follow in full, indented.
    for (std::size_t begin = eol; begin < outcome.size();) {
      const std::size_t end = std::min(outcome.find('\n', begin + 1), outcome.size());
      fmt::print("      | {}\n", outcome.substr(begin + 1, end - begin - 1));
      begin = end;
    }
    if (t.kind == "review" && t.attempt > 0) verdict = outcome;
  }
  fmt::print("\n  verdict   {}\n", verdict);
}

// Runs one feature through the team. The orchestrator lives in here, so it
// is destroyed before the runtime, as it must be.
int run_feature(aise::runtime& rt, const team::cli_options& options, const std::string& compiler,
                const fs::path& workdir, std::shared_ptr<aise::store> store) {
  aise::orchestrator_options orch_options;
  orch_options.store = std::move(store);       // null: a new in-memory store
  orch_options.retry_initial_backoff = 100ms;  // snappier than the default 200 ms
  aise::orchestrator orch(rt, orch_options);

  // The listener runs on an executor thread and must not block: it prints
  // one line and records the merge's state; main does the waiting. It owns
  // what it uses (shared_ptr), so a late call can never touch a dead object.
  const aise::time_point start = rt.clock().now();
  auto merge_watch = std::make_shared<team::task_watch>(merge_id);
  const std::size_t listener = orch.subscribe([merge_watch, start](const aise::event& e) {
    fmt::print("{}\n", team::event_line(e, start));
    std::fflush(stdout);  // keep the order with log lines on stderr when piped
    merge_watch->observe(e);
  });

  fmt::print("events\n");
  if (auto kinds = assemble_team(orch, compiler, true); !kinds) {
    orch.unsubscribe(listener);
    fmt::print(stderr, "cannot register the team: {}\n", kinds.error().describe());
    return 1;
  }
  // Whatever an earlier run left unfinished (it was stopped or killed) goes
  // on from where it was; agents come back from their snapshots.
  auto recovered = orch.recover();
  if (!recovered) {
    orch.unsubscribe(listener);
    fmt::print(stderr, "cannot resume: {}\n", recovered.error().describe());
    return 1;
  }
  const bool resuming = orch.store().get_task(plan_id).ok();
  if (resuming) {
    const auto merge = orch.get(merge_id);
    if (merge && aise::is_terminal(merge->state)) {
      orch.unsubscribe(listener);
      fmt::print("  (nothing to do: an earlier run finished this feature; --fresh starts over)\n");
      print_summary(final_tasks(orch));
      const bool merged = merge->state == aise::task_state::succeeded;
      fmt::print("  outcome   {}\n", merged ? "merged" : "not merged");
      return merged ? 0 : 1;
    }
    fmt::print("  resuming: {} unfinished tasks, {} lost attempt(s) retried, {} agent(s) back\n",
               recovered->tasks, recovered->lost_attempts, recovered->agents);
    if (merge) merge_watch->set(merge->state);
  }
  // Spawns the seats that recover() did not bring back (all of them on a
  // first run).
  if (auto team = assemble_team(orch, compiler, false); !team) {
    orch.unsubscribe(listener);
    fmt::print(stderr, "cannot assemble the team: {}\n", team.error().describe());
    return 1;
  }
  if (!resuming) {
    if (auto ids = orch.submit_all(feature_tasks(options, workdir)); !ids) {
      orch.unsubscribe(listener);
      fmt::print(stderr, "cannot submit the tasks: {}\n", ids.error().describe());
      return 1;
    }
  }

  // The merge ends up awaiting approval once the plan succeeded, or
  // terminal (cancelled) when the plan failed.
  const auto deadline = steady::now() + run_budget;
  const auto state = merge_watch->wait_until(
      [](aise::task_state s) {
        return s == aise::task_state::awaiting_approval || aise::is_terminal(s);
      },
      deadline);
  if (state == aise::task_state::awaiting_approval) decide_merge(orch, options.interactive);

  auto terminal = [](aise::task_state s) { return aise::is_terminal(s); };
  if (auto final_state = merge_watch->wait_until(terminal, deadline);
      !final_state || !aise::is_terminal(*final_state)) {
    fmt::print("  gave up after {} s: cancelling\n", run_budget.count());
    (void)orch.cancel(plan_id, "the example ran out of time");  // cancels its steps too
    (void)orch.cancel(merge_id, "the example ran out of time");
    merge_watch->wait_until(terminal, steady::now() + 5s);
  }
  orch.unsubscribe(listener);

  print_summary(final_tasks(orch));
  const auto merge = orch.get(merge_id);
  const bool merged = merge && merge->state == aise::task_state::succeeded;
  fmt::print("  outcome   {}\n", merged ? "merged" : "not merged");
  return merged ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string program =
      argc > 0 ? fs::path(argv[0]).filename().string() : std::string("aise_team_example");
  const team::cli_parse cli = team::parse_cli(std::vector<std::string_view>(argv + 1, argv + argc));
  if (cli.what == team::cli_parse::action::help) {
    fmt::print("{}", team::usage(program));
    return 0;
  }
  if (cli.what == team::cli_parse::action::usage_error) {
    fmt::print(stderr, "{}: {}\n{}", program, cli.error, team::usage(program));
    return 2;
  }
  const team::cli_options& options = cli.options;

  try {
    const auto compiler = team::find_program({"c++", "g++", "clang++"});
    if (!compiler) {
      fmt::print(stderr, "{}: no C++ compiler (c++, g++ or clang++) on PATH\n", program);
      return 1;
    }
    // Where state and work live: a SQLite file and a directory beside it
    // (resumable), or memory and a temporary directory (--memory).
    std::optional<team::scratch_dir> scratch;
    std::shared_ptr<aise::store> store;
    fs::path workdir;
    if (options.memory) {
      auto dir = team::scratch_dir::create("aise-team-");
      if (!dir) {
        fmt::print(stderr, "{}: {}\n", program, dir.error().describe());
        return 1;
      }
      if (options.keep) dir->keep();
      workdir = dir->path();
      scratch.emplace(std::move(*dir));
    } else {
      const fs::path state = fs::absolute(options.state);
      if (options.fresh) fs::remove_all(state);
      workdir = state / "work";
      fs::create_directories(workdir);
      aise::sql::store_options sql;
      sql.url = "sqlite:" + (state / "state.db").string();
      auto opened = aise::sql::open_store(sql);
      if (!opened) {
        fmt::print(stderr, "{}: {}\n", program, opened.error().describe());
        return 1;
      }
      store = *opened;
    }

    fmt::print("aise team example\n");
    fmt::print("  request   {}\n", options.request);
    if (store) fmt::print("  state     {}\n", (workdir.parent_path() / "state.db").string());
    fmt::print("  workdir   {}\n", workdir.string());
    fmt::print("  compiler  {}\n\n", *compiler);
    std::fflush(stdout);

    int status = 1;
    {
      aise::runtime rt;  // default options: its own executor and blocking threads
      rt.logger().set_level(options.verbose ? spdlog::level::debug : spdlog::level::info);
      status = run_feature(rt, options, *compiler, workdir, store);
      if (auto down = rt.shutdown(); !down) {
        fmt::print(stderr, "{}: shutdown: {}\n", program, down.error().describe());
      }
    }
    if (scratch) {
      fmt::print("  workdir   {}\n", options.keep ? "kept: " + workdir.string()
                                                  : std::string("removed (--keep keeps it)"));
    } else {
      fmt::print(
          "  state     kept: run again to resume or to see the result; --fresh starts over\n");
    }
    return status;
  } catch (const std::exception& e) {
    // Only programming errors get here (libaise reports failures as values).
    fmt::print(stderr, "{}: {}\n", program, e.what());
    return 1;
  }
}
