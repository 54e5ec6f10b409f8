#include <aise/clock.hpp>

#include <chrono>
#include <doctest/doctest.h>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using aise::time_point;

// Parses a time the test knows to be valid; keeps the cases short.
time_point at(const std::string& text) {
  time_point t;
  REQUIRE(aise::parse_time(text, t));
  return t;
}

}  // namespace

TEST_CASE("clock: the system clock follows the wall clock") {
  const auto clk = aise::make_system_clock();
  REQUIRE(clk != nullptr);
  CHECK_FALSE(clk->is_manual());
  const auto before = std::chrono::system_clock::now();
  const auto now = clk->now();
  const auto after = std::chrono::system_clock::now();
  CHECK(before <= now);
  CHECK(now <= after);
}

TEST_CASE("clock: manual clock starts at a fixed instant and moves only when told") {
  aise::manual_clock clk;
  CHECK(clk.is_manual());
  CHECK(clk.now() == aise::manual_clock::default_start());
  CHECK(aise::format_time(clk.now()) == "2026-01-01T00:00:00.000000Z");
  CHECK(clk.now() == clk.now());

  clk.advance(1500ms);
  CHECK(aise::format_time(clk.now()) == "2026-01-01T00:00:01.500000Z");
  clk.advance(-1h);  // ignored
  CHECK(aise::format_time(clk.now()) == "2026-01-01T00:00:01.500000Z");

  clk.set(at("2026-03-01T12:00:00Z"));
  CHECK(clk.now() == at("2026-03-01T12:00:00Z"));
  clk.set(at("2026-02-01T00:00:00Z"));  // backwards: ignored
  CHECK(clk.now() == at("2026-03-01T12:00:00Z"));

  aise::manual_clock custom(at("2030-06-15T08:30:00Z"));
  CHECK(custom.now() == at("2030-06-15T08:30:00Z"));
}

TEST_CASE("clock: listeners see the new time and can be removed") {
  aise::manual_clock clk;
  std::vector<time_point> seen_by_a;
  int calls_b = 0;
  // Reading now() from a listener also proves the clock is unlocked by then.
  const auto a = clk.add_listener([&] { seen_by_a.push_back(clk.now()); });
  const auto b = clk.add_listener([&] { ++calls_b; });
  CHECK(a != b);

  clk.advance(10s);
  REQUIRE(seen_by_a.size() == 1);
  CHECK(seen_by_a[0] == aise::manual_clock::default_start() + 10s);
  CHECK(calls_b == 1);

  clk.set(at("2026-01-02T00:00:00Z"));
  REQUIRE(seen_by_a.size() == 2);
  CHECK(seen_by_a[1] == at("2026-01-02T00:00:00Z"));

  // Moves that change nothing do not notify.
  clk.set(at("2026-01-01T00:00:00Z"));
  clk.set(clk.now());
  clk.advance(-1s);
  CHECK(seen_by_a.size() == 2);
  CHECK(calls_b == 2);

  clk.remove_listener(a);
  clk.remove_listener(a);      // twice: ignored
  clk.remove_listener(12345);  // unknown: ignored
  clk.advance(1s);
  CHECK(seen_by_a.size() == 2);
  CHECK(calls_b == 3);
}

TEST_CASE("clock: a listener may add and remove listeners while being called") {
  aise::manual_clock clk;
  int late_calls = 0;
  std::size_t self = 0;
  self = clk.add_listener([&] {
    clk.add_listener([&] { ++late_calls; });
    clk.remove_listener(self);
  });
  clk.advance(1s);  // runs the snapshot taken before the listener changed the list
  CHECK(late_calls == 0);
  clk.advance(1s);
  CHECK(late_calls == 1);
}

TEST_CASE("clock: advance saturates instead of overflowing") {
  aise::manual_clock clk;
  clk.advance(aise::duration::max());
  CHECK(clk.now() == time_point::max());
  clk.advance(1s);
  CHECK(clk.now() == time_point::max());
}

TEST_CASE("clock: format_time writes RFC 3339 UTC with microseconds") {
  CHECK(aise::format_time(time_point{}) == "1970-01-01T00:00:00.000000Z");
  CHECK(aise::format_time(time_point{1us}) == "1970-01-01T00:00:00.000001Z");
  CHECK(aise::format_time(time_point{-1us}) == "1969-12-31T23:59:59.999999Z");
  // Below a microsecond is cut off, not rounded.
  CHECK(aise::format_time(time_point{999ns}) == "1970-01-01T00:00:00.000000Z");
  CHECK(aise::format_time(std::chrono::sys_days{std::chrono::year{2024} / 2 / 29} + 23h + 59min +
                          59s + 123456us) == "2024-02-29T23:59:59.123456Z");
}

TEST_CASE("clock: parse_time reads back what format_time writes") {
  const time_point t = aise::manual_clock::default_start() + 86400s * 45 + 3723s + 654321us;
  const std::string text = aise::format_time(t);
  CHECK(text == "2026-02-15T01:02:03.654321Z");
  CHECK(at(text) == t);

  CHECK(at("2026-02-15T01:02:03Z") == t - 654321us);
  CHECK(at("2026-02-15T01:02:03.6Z") == t - 54321us);
  CHECK(at("2026-02-15T01:02:03.654321789Z") == t + 789ns);
  CHECK(at("1969-12-31T23:59:59.5Z") == time_point{-500ms});
  CHECK(at("2024-02-29T00:00:00Z") ==
        time_point{std::chrono::sys_days{std::chrono::year{2024} / 2 / 29}});
}

TEST_CASE("clock: parse_time rejects malformed text and leaves the output alone") {
  const char* bad[] = {
      "",
      "garbage",
      "2026-01-01",
      "2026-01-01T00:00:00",        // no zone
      "2026-01-01T00:00:00+00:00",  // offsets are not accepted, only Z
      "2026-01-01T00:00:00z",
      "2026-01-01 00:00:00Z",
      "2026-01-01T00:00:00.Z",            // a dot needs digits
      "2026-01-01T00:00:00.1234567890Z",  // more than 9 fractional digits
      "2026-01-01T00:00:00Z ",
      " 2026-01-01T00:00:00Z",
      "2026-1-01T00:00:00Z",
      "2026-13-01T00:00:00Z",
      "2026-00-10T00:00:00Z",
      "2026-01-00T00:00:00Z",
      "2026-01-32T00:00:00Z",
      "2026-02-29T00:00:00Z",  // not a leap year
      "2026-04-31T00:00:00Z",
      "2026-01-01T24:00:00Z",
      "2026-01-01T00:60:00Z",
      "2026-01-01T00:00:60Z",  // leap seconds are not representable
      "+026-01-01T00:00:00Z",
      "2026-01-01T0a:00:00Z",
      "9999-12-31T23:59:59Z",  // beyond what a time_point holds
      "1000-01-01T00:00:00Z",
  };
  const time_point sentinel = aise::manual_clock::default_start();
  for (const char* text : bad) {
    INFO("text: \"", text, "\"");
    time_point out = sentinel;
    CHECK_FALSE(aise::parse_time(text, out));
    CHECK(out == sentinel);
  }
}
