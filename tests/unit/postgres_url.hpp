#pragma once
// libpq's key=value form of a PostgreSQL URL (what SOCI's connect string
// takes), for tests that administer the test PostgreSQL directly.

#include <doctest/doctest.h>
#include <libpq-fe.h>
#include <string>

namespace aise::test {

/// libpq's key=value form of a URL (what SOCI's connect string takes).
inline std::string conninfo(const std::string& url) {
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

}  // namespace aise::test
