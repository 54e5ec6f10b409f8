// Crash recovery, for real: a child process (crash_child.cpp) works through
// 3-task chains on a SQLite store; this test kills it with SIGKILL at random
// moments (AISE_CRASH_KILLS times, at least 20), checks the store's
// invariants after each kill, restarts it, and finally lets it finish.
//
// Invariants after every kill: no accepted task is missing; the event log
// of the project is numbered 1 … last without a gap or duplicate; attempts
// of a task are numbered 1 … n, at most one of them running, never more
// than max_attempts, and a finished attempt is never completed twice (at
// most one succeeded attempt per task). At the end: every task succeeded
// exactly once with the right result, and each restart restored every
// worker agent from its latest snapshot.

#include <aise/sql.hpp>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <doctest/doctest.h>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <map>
#include <random>
#include <spawn.h>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace {

namespace fs = std::filesystem;
constexpr int chains = 100;  // 300 tasks of 25–35 ms on 4 slots: ~2.5 s of work

pid_t start_child(const std::string& db, const std::string& report) {
  const std::string chains_arg = std::to_string(chains);
  std::vector<char*> argv{const_cast<char*>(AISE_CRASH_CHILD), const_cast<char*>(db.c_str()),
                          const_cast<char*>(chains_arg.c_str()), const_cast<char*>(report.c_str()),
                          nullptr};
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, AISE_CRASH_CHILD, nullptr, nullptr, argv.data(), environ) == 0);
  return pid;
}

std::shared_ptr<aise::store> open_store(const std::string& db) {
  aise::sql::store_options o;
  o.url = "sqlite:" + db;
  auto s = aise::sql::open_store(o);
  REQUIRE_MESSAGE(s.ok(), (s.ok() ? std::string() : s.error().describe()));
  return *s;
}

std::vector<aise::task> all_tasks(aise::store& s) {
  std::vector<aise::task> out;
  aise::task_filter f;
  f.limit = 1000;
  for (;;) {
    auto pg = s.list_tasks(f);
    REQUIRE(pg.ok());
    for (auto& t : pg->items) out.push_back(std::move(t));
    if (pg->next_cursor.empty()) break;
    f.after = pg->next_cursor;
  }
  return out;
}

/// Checks what must hold at any moment; returns the number of tasks seen.
std::size_t check_invariants(aise::store& s, bool submitted, const std::string& when) {
  INFO(when);
  const auto tasks = all_tasks(s);
  if (submitted)
    CHECK(tasks.size() == static_cast<std::size_t>(chains * 3));  // nothing accepted is lost
  const auto last = s.last_sequence("default");
  REQUIRE(last.ok());
  const auto events = s.read_events("default", 0, 1000000);
  REQUIRE(events.ok());
  CHECK(events->size() == *last);
  std::size_t misnumbered = 0;
  for (std::size_t i = 0; i < events->size(); ++i) misnumbered += (*events)[i].sequence != i + 1;
  CHECK(misnumbered == 0);
  for (const auto& t : tasks) {
    auto attempts = s.list_attempts(t.id);
    REQUIRE(attempts.ok());
    int running = 0;
    int succeeded = 0;
    for (std::size_t i = 0; i < attempts->size(); ++i) {
      const auto& a = (*attempts)[i];
      CHECK((a.number == static_cast<int>(i) + 1));
      running += a.outcome == aise::task_state::running;
      succeeded += a.outcome == aise::task_state::succeeded;
    }
    CHECK(running <= 1);
    CHECK(succeeded <= 1);
    CHECK(static_cast<int>(attempts->size()) == t.attempt);
    CHECK(t.attempt <= t.max_attempts);
    if (t.state == aise::task_state::running) CHECK(running == 1);
  }
  return tasks.size();
}

}  // namespace

TEST_CASE("crash: SIGKILL at random moments loses no accepted work") {
  int kills = 20;
  if (const char* env = std::getenv("AISE_CRASH_KILLS")) kills = std::max(20, std::atoi(env));
  const fs::path dir = fs::temp_directory_path() / ("aise-crash-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string db = (dir / "state.db").string();
  const std::string report = (dir / "report.txt").string();
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> delay_ms(20, 120);

  bool submitted = false;
  std::map<std::string, long long> last_snapshot;  // agent → handled, before a restart
  int restores_checked = 0;
  int killed = 0;
  for (int k = 0; k < kills; ++k) {
    const auto lines_before = [&] {
      std::ifstream in(report);
      std::vector<std::string> lines;
      for (std::string line; std::getline(in, line);) lines.push_back(line);
      return lines.size();
    }();
    const pid_t pid = start_child(db, report);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    ::kill(pid, SIGKILL);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    // The restored state of every worker that came back in this run must be
    // its latest snapshot before the run.
    std::ifstream in(report);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    for (std::size_t i = lines_before; i < lines.size(); ++i) {
      if (lines[i] == "submitted") submitted = true;
      if (lines[i].rfind("restored ", 0) == 0) {
        char name[64] = {};
        long long handled = -1;
        if (std::sscanf(lines[i].c_str(), "restored %63s %lld", name, &handled) == 2 &&
            last_snapshot.count(name) != 0) {
          CHECK_MESSAGE(handled == last_snapshot[name], lines[i]);
          ++restores_checked;
        }
      }
    }
    if (WIFEXITED(status)) break;  // it finished before the kill: nothing left to kill
    ++killed;
    auto s = open_store(db);
    check_invariants(*s, submitted, fmt::format("after kill {}", k + 1));
    for (const char* agent : {"w1", "w2"}) {
      auto snap = s->load_snapshot(agent);
      if (snap) last_snapshot[agent] = snap->state.value("handled", 0LL);
    }
  }
  // The last run goes to the end.
  const pid_t pid = start_child(db, report);
  int status = 0;
  const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > limit) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      FAIL("the last run did not finish within 120 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);

  auto s = open_store(db);
  REQUIRE(check_invariants(*s, true, "at the end") == static_cast<std::size_t>(chains * 3));
  std::size_t lost = 0;
  for (const auto& t : all_tasks(*s)) {
    INFO(t.id);
    REQUIRE(t.state == aise::task_state::succeeded);
    // c<chain>-<step>: n = chain*10 + step; result = 2n + the previous step's result.
    const int chain = std::stoi(t.id.substr(1, 3));
    const int step = t.id.back() - '0';
    long long expected = 0;
    for (int i = 0; i <= step; ++i) expected += 2LL * (chain * 10 + i);
    CHECK(t.result->get<long long>() == expected);
    auto attempts = s->list_attempts(t.id);
    for (const auto& a : *attempts) lost += a.outcome == aise::task_state::failed;
    CHECK(attempts->back().outcome == aise::task_state::succeeded);
  }
  MESSAGE(fmt::format("{} kills, {} lost attempts retried, {} agent restores checked", kills, lost,
                      restores_checked));
  fs::remove_all(dir);
}
