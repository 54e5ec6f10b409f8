/// @file
/// Test helper for example/team_resumes_a_partly_spawned_team: writes the
/// state a run of the team example leaves when it is killed (SIGKILL) while
/// spawning its team: a SQLite store that lists some of the agents as
/// running (here only planner-1) and holds no task yet.
///
/// usage: aise_team_partial_state STATE_DIR   (creates STATE_DIR/state.db)

#include <aise/sql.hpp>
#include <aise/store.hpp>

#include <cstdio>
#include <filesystem>
#include <fmt/format.h>

int main(int argc, char** argv) {
  if (argc != 2) {
    fmt::print(stderr, "usage: {} STATE_DIR\n", argc > 0 ? argv[0] : "aise_team_partial_state");
    return 2;
  }
  const std::filesystem::path state = std::filesystem::absolute(argv[1]);
  std::filesystem::create_directories(state / "work");
  aise::sql::store_options options;
  options.url = "sqlite:" + (state / "state.db").string();
  auto store = aise::sql::open_store(options);
  if (!store) {
    fmt::print(stderr, "open: {}\n", store.error().describe());
    return 1;
  }
  // What spawn() records first: the first seat, before the others.
  aise::agent_record planner;
  planner.id = "planner-1";
  planner.kind = "planner";
  planner.capabilities = {"plan"};
  planner.status = "running";
  if (auto put = (*store)->put_agent(planner); !put) {
    fmt::print(stderr, "put_agent: {}\n", put.error().describe());
    return 1;
  }
  return 0;
}
