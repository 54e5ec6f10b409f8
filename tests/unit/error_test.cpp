#include <aise/error.hpp>
#include <aise/task.hpp>  // parse_errc

#include <doctest/doctest.h>
#include <set>
#include <string>
#include <string_view>
#include <utility>

namespace {

using aise::errc;
using aise::result;

constexpr int last_code = static_cast<int>(errc::internal);

}  // namespace

TEST_CASE("error: a result holding a value") {
  result<int> r = 42;
  CHECK(r.ok());
  CHECK(static_cast<bool>(r));
  CHECK(r.value() == 42);
  CHECK(*r == 42);
  CHECK(r.value_or(7) == 42);

  *r = 43;  // the value is mutable through a non-const result
  CHECK(r.value() == 43);

  result<std::string> s = std::string("payload");
  CHECK(s->size() == 7);
  const std::string moved = std::move(s).value();
  CHECK(moved == "payload");
}

TEST_CASE("error: a result holding an error") {
  result<int> r = aise::fail(errc::not_found, "task t-1");
  CHECK_FALSE(r.ok());
  CHECK_FALSE(static_cast<bool>(r));
  CHECK(r.error().code() == errc::not_found);
  CHECK(r.error().message() == "task t-1");
  CHECK(r.value_or(7) == 7);

  try {
    (void)r.value();
    FAIL("value() of a failed result must throw");
  } catch (const aise::bad_result_access& e) {
    CHECK(e.held() == r.error());
    CHECK(std::string(e.what()) == "not_found: task t-1");
  }
  CHECK_THROWS_AS((void)*r, aise::bad_result_access);

  const result<std::string> s = aise::fail(errc::unavailable, "broker down");
  CHECK_THROWS_AS((void)s->size(), aise::bad_result_access);
}

TEST_CASE("error: result<void>") {
  result<void> good = aise::ok();
  CHECK(good.ok());
  CHECK_NOTHROW(good.value());

  result<void> bad = aise::error(errc::conflict, "version 3 is stale");
  CHECK_FALSE(bad.ok());
  CHECK(bad.error().code() == errc::conflict);
  CHECK_THROWS_WITH_AS(bad.value(), "conflict: version 3 is stale", aise::bad_result_access);
}

TEST_CASE("error: describe and equality") {
  const aise::error e(errc::timeout, "attempt 2 of t-9");
  CHECK(e.describe() == "timeout: attempt 2 of t-9");
  CHECK(e == aise::error(errc::timeout, "attempt 2 of t-9"));
  CHECK_FALSE(e == aise::error(errc::timeout, "attempt 3 of t-9"));
  CHECK_FALSE(e == aise::error(errc::cancelled, "attempt 2 of t-9"));

  // A default error is an internal one; with no message there is no ": ".
  const aise::error empty;
  CHECK(empty.code() == errc::internal);
  CHECK(empty.message().empty());
  CHECK(empty.describe() == "internal");
}

TEST_CASE("error: every code has a unique name that parse_errc reads back") {
  std::set<std::string_view> names;
  for (int i = 0; i <= last_code; ++i) {
    const auto code = static_cast<errc>(i);
    const std::string_view name = aise::to_string(code);
    INFO("code ", i, " is named ", std::string(name));
    CHECK(name != "unknown");
    CHECK(names.insert(name).second);
    CHECK(aise::parse_errc(name) == code);
  }
  CHECK(names.size() == static_cast<std::size_t>(last_code) + 1);

  CHECK(aise::to_string(errc::ok) == "ok");
  CHECK(aise::to_string(errc::invalid_argument) == "invalid_argument");
  CHECK(aise::to_string(errc::mailbox_full) == "mailbox_full");
}

TEST_CASE("error: unknown codes and names") {
  CHECK(aise::to_string(static_cast<errc>(last_code + 1)) == "unknown");
  CHECK(aise::to_string(static_cast<errc>(-1)) == "unknown");
  CHECK(aise::parse_errc("no_such_code") == errc::internal);
  CHECK(aise::parse_errc("") == errc::internal);
  CHECK(aise::parse_errc("NOT_FOUND") == errc::internal);  // names are case-sensitive
}
