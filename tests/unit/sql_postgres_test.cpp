// aise::sql on a real PostgreSQL: the store conformance suite, unchanged.
// scripts/test.sh starts a private PostgreSQL (scripts/services.sh) and
// sets AISE_TEST_POSTGRES_URL to its maintenance database; every test case
// gets a database of its own, created from it.

#include <aise/sql.hpp>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <doctest/doctest.h>
#include <memory>
#include <soci/postgresql/soci-postgresql.h>
#include <soci/soci.h>
#include <string>
#include <unistd.h>

#include "conformance/auth_store_suite.hpp"
#include "conformance/store_suite.hpp"
#include "postgres_url.hpp"

namespace {

/// postgresql://user@host:port/postgres → the server part and the database.
std::string admin_url() {
  const char* url = std::getenv("AISE_TEST_POSTGRES_URL");
  REQUIRE_MESSAGE(url != nullptr,
                  "AISE_TEST_POSTGRES_URL is not set: run the tests through scripts/test.sh, "
                  "which starts PostgreSQL (or: eval \"$(scripts/services.sh start postgres)\")");
  return url;
}

struct opened {
  std::shared_ptr<aise::store> store;
  std::string database;
  aise::sql::store_options options;  ///< Opens another store on the same database.
};

/// A store on a database of its own.
opened open_fresh(std::size_t pool_size = 4) {
  static std::atomic<int> counter{0};
  const std::string admin = admin_url();
  const std::string name =
      "aise_t_" + std::to_string(::getpid()) + "_" + std::to_string(counter.fetch_add(1));
  {
    soci::session db(soci::postgresql, aise::test::conninfo(admin));
    db << "DROP DATABASE IF EXISTS " + name;
    db << "CREATE DATABASE " + name;
  }
  const auto slash = admin.rfind('/');
  const auto query = admin.find('?', slash);
  std::string url = admin.substr(0, slash + 1) + name;
  if (query != std::string::npos) url += admin.substr(query);
  aise::sql::store_options o;
  o.url = url;
  o.pool_size = pool_size;
  auto s = aise::sql::open_store(o);
  REQUIRE_MESSAGE(s.ok(), (s.ok() ? std::string() : s.error().describe()));
  return {*s, name, o};
}

std::shared_ptr<aise::store> open_postgres() {
  return open_fresh().store;
}

// An auth store on a database of its own (created, and migrated, through
// open_fresh's task store).
std::shared_ptr<aise::auth_store> open_postgres_auth() {
  auto fresh = open_fresh(1);
  auto s = aise::sql::open_auth_store(fresh.options);
  REQUIRE_MESSAGE(s.ok(), (s.ok() ? std::string() : s.error().describe()));
  return *s;
}

}  // namespace

AISE_STORE_CONFORMANCE_SUITE(postgresql, "postgresql", open_postgres);
AISE_AUTH_STORE_CONFORMANCE_SUITE(postgresql, "postgresql", open_postgres_auth)

TEST_CASE("postgresql store: backend name") {
  CHECK(open_postgres()->backend() == "postgresql");
}

TEST_CASE("postgresql store: a lost connection fails the call in progress and is reopened") {
  auto [s, database, options] = open_fresh(1);  // one connection: the next call must reuse it
  aise::project p;
  p.id = "before";
  REQUIRE(s->create_project(p).ok());
  {
    // What a server restart or a dropped network does to the store's connection.
    soci::session admin(soci::postgresql, aise::test::conninfo(admin_url()));
    int killed = 0;
    admin << "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '" +
                 database + "'",
        soci::into(killed);
    REQUIRE(killed == 1);
  }
  auto lost = s->get_project("before");
  REQUIRE_FALSE(lost.ok());
  CHECK(lost.error().code() == aise::errc::unavailable);
  CHECK(lost.error().message().find("connection lost") != std::string::npos);
  // The next call reconnects; what was committed before is there.
  auto again = s->get_project("before");
  REQUIRE_MESSAGE(again.ok(), (again.ok() ? std::string() : again.error().describe()));
  CHECK(again->id == "before");
  p.id = "after";
  CHECK(s->create_project(p).ok());
  CHECK(s->list_projects("", 10)->items.size() == 2);
}

TEST_CASE("postgresql store: leases raced by two stores on one database (two processes)") {
  // Each store has its own connections, as a worker process and the
  // scheduler's process would: the database alone decides who wins
  // (READ COMMITTED, the conditional UPDATE re-checked on the committed row).
  auto first = open_fresh();
  auto second = aise::sql::open_store(first.options);
  REQUIRE_MESSAGE(second.ok(), (second.ok() ? std::string() : second.error().describe()));
  aise::conformance::store_suite::finish_end_race(first.store, *second, 40);
}
