// aise::sql's auth_store on SQLite: the auth_store conformance suite (the
// same cases run on memory in auth_test.cpp and on PostgreSQL in
// sql_postgres_test.cpp), plus sharing one file with the task store.

#include <aise/sql.hpp>

#include <atomic>
#include <doctest/doctest.h>
#include <filesystem>
#include <memory>
#include <string>
#include <unistd.h>

#include "conformance/auth_store_suite.hpp"

namespace {

namespace fs = std::filesystem;

std::string fresh_auth_path() {
  static const fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / ("aise-sql-auth-test-" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
  }();
  static std::atomic<int> counter{0};
  return (dir / ("auth-" + std::to_string(counter.fetch_add(1)) + ".db")).string();
}

aise::sql::store_options auth_options(const std::string& path) {
  aise::sql::store_options o;
  o.url = "sqlite:" + path;
  o.sqlite_synchronous = "NORMAL";
  return o;
}

std::shared_ptr<aise::auth_store> open_sqlite_auth() {
  auto s = aise::sql::open_auth_store(auth_options(fresh_auth_path()));
  REQUIRE_MESSAGE(s.ok(), (s.ok() ? std::string() : s.error().describe()));
  return *s;
}

}  // namespace

AISE_AUTH_STORE_CONFORMANCE_SUITE(sqlite, "sqlite", open_sqlite_auth)

TEST_CASE("sqlite auth store: shares the database with the task store and survives reopening") {
  const auto path = fresh_auth_path();
  {
    auto tasks = aise::sql::open_store(auth_options(path));
    REQUIRE(tasks);
    auto auth = aise::sql::open_auth_store(auth_options(path));
    REQUIRE(auth);
    CHECK((*auth)->backend() == "sqlite");
    aise::auth_user u;
    u.id = "u-1";
    u.username = "ann";
    u.password_hash = "h";
    REQUIRE((*auth)->create_user(u));
    REQUIRE((*auth)->set_role("u-1", "p", aise::project_role::viewer));
  }
  auto auth = aise::sql::open_auth_store(auth_options(path));
  REQUIRE(auth);
  CHECK((*auth)->find_user("ann").value().id == "u-1");
  CHECK((*auth)->roles_of("u-1").value().at("p") == aise::project_role::viewer);
}
