// aise::sql on SQLite: the store conformance suite, unchanged, plus what
// only the SQL stores promise (migrations, reopening, bad URLs). The same
// suite runs against PostgreSQL in sql_postgres_test.cpp.

#include <aise/sql.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <doctest/doctest.h>
#include <filesystem>
#include <memory>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "conformance/store_suite.hpp"

namespace {

namespace fs = std::filesystem;
using aise::conformance::store_suite::change;
using aise::conformance::store_suite::draft;
using aise::conformance::store_suite::make_task;
using aise::conformance::store_suite::must;

/// A fresh database file in this process's scratch directory.
std::string fresh_path() {
  static const fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / ("aise-sql-test-" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
  }();
  static std::atomic<int> counter{0};
  return (dir / ("store-" + std::to_string(counter.fetch_add(1)) + ".db")).string();
}

aise::sql::store_options sqlite_options(const std::string& path) {
  aise::sql::store_options o;
  o.url = "sqlite:" + path;
  o.sqlite_synchronous = "NORMAL";  // the suite checks behaviour, not power-loss durability
  return o;
}

std::shared_ptr<aise::store> open_sqlite() {
  auto s = aise::sql::open_store(sqlite_options(fresh_path()));
  REQUIRE_MESSAGE(s.ok(), (s.ok() ? std::string() : s.error().describe()));
  return *s;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

AISE_STORE_CONFORMANCE_SUITE(sqlite, "sqlite", open_sqlite);

TEST_CASE("sqlite store: backend name and durable reopen") {
  const std::string path = fresh_path();
  {
    auto s = must(aise::sql::open_store(sqlite_options(path)));
    CHECK(s->backend() == "sqlite");
    auto t = make_task("t-1");
    t.state = aise::task_state::queued;
    must(s->insert_tasks({t}, {draft("p1", "task.queued", "t-1")}));
    must(s->update_task(change("t-1", 1, aise::task_state::running)));
  }
  auto s = must(aise::sql::open_store(sqlite_options(path)));
  auto t = must(s->get_task("t-1"));
  CHECK(t.state == aise::task_state::running);
  CHECK(t.version == 2);
  CHECK(must(s->last_sequence("p1")) == 2);
  CHECK(must(s->append_event(draft("p1", "agent.started", "a"))).sequence == 3);
}

TEST_CASE("sqlite store: migrations are applied once and recorded with a checksum") {
  const std::string path = fresh_path();
  auto status = must(aise::sql::status(sqlite_options(path)));
  CHECK(status.backend == "sqlite");
  CHECK(status.database_version == 0);
  REQUIRE(status.library_version >= 1);
  REQUIRE_FALSE(status.migrations.empty());
  CHECK_FALSE(status.migrations.front().applied);
  CHECK(status.migrations.front().checksum.size() == 64);

  auto migrated = must(aise::sql::migrate(sqlite_options(path)));
  CHECK(migrated.database_version == migrated.library_version);
  CHECK(migrated.problem.empty());
  for (const auto& m : migrated.migrations) {
    CHECK(m.applied);
    CHECK(m.applied_checksum == m.checksum);
  }
  // Again: nothing to do, nothing changes.
  auto again = must(aise::sql::migrate(sqlite_options(path)));
  CHECK(again.database_version == migrated.database_version);
  CHECK(again.migrations.front().applied_at == migrated.migrations.front().applied_at);
}

TEST_CASE("sqlite store: a database without the schema is refused when migrate is off") {
  auto o = sqlite_options(fresh_path());
  o.migrate = false;
  auto s = aise::sql::open_store(o);
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().code() == aise::errc::invalid_argument);
  CHECK(contains(s.error().message(), "aise-admin migrate"));
  o.migrate = true;
  must(aise::sql::open_store(o));
  o.migrate = false;
  CHECK(aise::sql::open_store(o).ok());  // migrated now
}

TEST_CASE("sqlite store: an edited migration or a newer schema is refused") {
  const std::string path = fresh_path();
  must(aise::sql::migrate(sqlite_options(path)));
  {
    soci::session db(soci::sqlite3, "db=" + path);
    db << "UPDATE schema_migrations SET checksum = 'deadbeef' WHERE version = 1";
  }
  auto edited = aise::sql::open_store(sqlite_options(path));
  REQUIRE_FALSE(edited.ok());
  CHECK(edited.error().code() == aise::errc::invalid_argument);
  CHECK(contains(edited.error().message(), "changed after it was applied"));
  CHECK(contains(edited.error().message(), "deadbeef"));
  auto status = must(aise::sql::status(sqlite_options(path)));
  CHECK_FALSE(status.problem.empty());

  const std::string newer = fresh_path();
  must(aise::sql::migrate(sqlite_options(newer)));
  {
    soci::session db(soci::sqlite3, "db=" + newer);
    db << "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (999, "
          "'0999_future', 'abc', 0)";
  }
  auto refused = aise::sql::open_store(sqlite_options(newer));
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code() == aise::errc::invalid_argument);
  CHECK(contains(refused.error().message(), "newer than this libaise"));
  CHECK(contains(refused.error().message(), "999"));
}

TEST_CASE("sql store: bad URLs and unreachable databases are clear errors") {
  aise::sql::store_options o;
  o.url = "";
  CHECK(aise::sql::open_store(o).error().code() == aise::errc::invalid_argument);
  o.url = "mysql://somewhere/db";
  auto unknown = aise::sql::open_store(o);
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.error().code() == aise::errc::invalid_argument);
  CHECK(contains(unknown.error().message(), "sqlite:<path>"));
  o.url = "sqlite:" + fresh_path();
  o.sqlite_synchronous = "SOMETIMES";
  CHECK(aise::sql::open_store(o).error().code() == aise::errc::invalid_argument);

  o = {};
  o.url = "sqlite:/nonexistent-dir-for-aise/x/y.db";
  o.connect_attempts = 2;
  o.connect_backoff = std::chrono::milliseconds(5);
  auto missing_dir = aise::sql::open_store(o);
  REQUIRE_FALSE(missing_dir.ok());
  CHECK(missing_dir.error().code() == aise::errc::unavailable);
  CHECK(contains(missing_dir.error().message(), "2 attempts"));

  // Nothing listens on this port: connection refused, retried, then unavailable.
  o.url = "postgresql://aise@127.0.0.1:1/aise?connect_timeout=2";
  const auto started = std::chrono::steady_clock::now();
  auto refused = aise::sql::open_store(o);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().code() == aise::errc::unavailable);
  CHECK(contains(refused.error().message(), "127.0.0.1"));
  CHECK(std::chrono::steady_clock::now() - started >= std::chrono::milliseconds(5));  // backed off
  o.url = "postgresql://aise:secret@127.0.0.1:1/aise?connect_timeout=2";
  auto hidden = aise::sql::open_store(o);
  REQUIRE_FALSE(hidden.ok());
  CHECK_FALSE(contains(hidden.error().message(), "secret"));
}

TEST_CASE("sqlite store: leases raced by two stores on one file (two processes)") {
  // Each store has its own connections, as a worker process and the
  // scheduler's process would: the database alone decides who wins.
  const std::string path = fresh_path();
  auto worker_side = must(aise::sql::open_store(sqlite_options(path)));
  auto scheduler_side = must(aise::sql::open_store(sqlite_options(path)));
  aise::conformance::store_suite::finish_end_race(worker_side, scheduler_side, 40);
}

TEST_CASE("sqlite store: renew_leases with more keys than one statement binds") {
  using namespace std::chrono_literals;
  using aise::conformance::store_suite::at;
  using aise::conformance::store_suite::insert_running;
  auto s = open_sqlite();
  std::vector<aise::lease_key> keys;
  for (int i = 0; i < 450; ++i) {
    const std::string id = "t-" + std::to_string(1000 + i);
    insert_running(*s, id, 1);
    if (i % 100 != 7) must(s->acquire_lease({id, 1}, "w1", at(100), 30s));  // 5 never taken
    keys.push_back({id, 1});
  }
  auto gone = must(s->renew_leases("w1", keys, at(110), 30s));
  REQUIRE(gone.size() == 5);
  CHECK(gone.front().task_id == "t-1007");
  CHECK(gone.back().task_id == "t-1407");
  std::vector<std::string> ids;
  for (const auto& k : keys) ids.push_back(k.task_id);
  auto rows = must(s->get_leases(ids));
  REQUIRE(rows.size() == 445);
  for (const auto& l : rows) CHECK(l.expires_at == at(140));
}

TEST_CASE("sqlite store: pool statistics") {
  auto o = sqlite_options(fresh_path());
  o.pool_size = 2;
  auto s = must(aise::sql::open_store(o));
  auto first = aise::sql::get_pool_stats(*s);
  REQUIRE(first.has_value());
  CHECK(first->size == 2);
  CHECK(first->in_use == 0);
  CHECK(first->waiting == 0);
  must(s->list_projects("", 10));
  auto after = *aise::sql::get_pool_stats(*s);
  CHECK(after.acquisitions > first->acquisitions);
  CHECK(after.in_use == 0);

  // More callers than connections: some wait (retried until one did, with a deadline).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (aise::sql::get_pool_stats(*s)->waits == 0 && std::chrono::steady_clock::now() < deadline) {
    std::vector<std::thread> threads;
    for (int i = 0; i < 6; ++i) {
      threads.emplace_back([&] {
        for (int k = 0; k < 50; ++k) (void)s->count_tasks("");
      });
    }
    for (auto& t : threads) t.join();
  }
  auto busy = *aise::sql::get_pool_stats(*s);
  CHECK(busy.waits > 0);
  CHECK(busy.waits <= busy.acquisitions);
  CHECK(busy.wait_seconds >= 0);
  CHECK(busy.in_use == 0);
  CHECK(busy.waiting == 0);

  CHECK_FALSE(aise::sql::get_pool_stats(*aise::make_memory_store()).has_value());
}
