// aise::sql on a real PostgreSQL: the store conformance suite, unchanged.
// scripts/test.sh starts a private PostgreSQL (scripts/services.sh) and
// sets AISE_TEST_POSTGRES_URL to its maintenance database; every test case
// gets a database of its own, created from it.

#include <aise/sql.hpp>

#include <atomic>
#include <cstdlib>
#include <doctest/doctest.h>
#include <memory>
#include <soci/postgresql/soci-postgresql.h>
#include <soci/soci.h>
#include <string>
#include <unistd.h>

#include "conformance/store_suite.hpp"

namespace {

/// postgresql://user@host:port/postgres → the server part and the database.
std::string admin_url() {
  const char* url = std::getenv("AISE_TEST_POSTGRES_URL");
  REQUIRE_MESSAGE(url != nullptr,
                  "AISE_TEST_POSTGRES_URL is not set: run the tests through scripts/test.sh, "
                  "which starts PostgreSQL (or: eval \"$(scripts/services.sh start postgres)\")");
  return url;
}

/// libpq's key=value form of a URL (what SOCI's connect string takes).
std::string conninfo(const std::string& url) {
  char* message = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(url.c_str(), &message);
  REQUIRE_MESSAGE(parsed != nullptr, (message != nullptr ? message : "bad URL"));
  std::string out;
  for (PQconninfoOption* o = parsed; o->keyword != nullptr; ++o) {
    if (o->val == nullptr || *o->val == '\0') continue;
    out += std::string(out.empty() ? "" : " ") + o->keyword + "=" + o->val;
  }
  PQconninfoFree(parsed);
  return out;
}

std::shared_ptr<aise::store> open_postgres() {
  static std::atomic<int> counter{0};
  const std::string admin = admin_url();
  const std::string name =
      "aise_t_" + std::to_string(::getpid()) + "_" + std::to_string(counter.fetch_add(1));
  {
    soci::session db(soci::postgresql, conninfo(admin));
    db << "DROP DATABASE IF EXISTS " + name;
    db << "CREATE DATABASE " + name;
  }
  const auto slash = admin.rfind('/');
  const auto query = admin.find('?', slash);
  std::string url = admin.substr(0, slash + 1) + name;
  if (query != std::string::npos) url += admin.substr(query);
  aise::sql::store_options o;
  o.url = url;
  auto s = aise::sql::open_store(o);
  REQUIRE_MESSAGE(s.ok(), (s.ok() ? std::string() : s.error().describe()));
  return *s;
}

}  // namespace

AISE_STORE_CONFORMANCE_SUITE(postgresql, "postgresql", open_postgres);

TEST_CASE("postgresql store: backend name") {
  CHECK(open_postgres()->backend() == "postgresql");
}
