#include <aise/metrics.hpp>
#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>
#include <aise/store.hpp>

#include <doctest/doctest.h>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test_util.hpp"

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The value of the sample line starting with `series ` (exact series text).
std::string sample_value(const std::string& text, const std::string& series) {
  std::size_t pos = 0;
  while ((pos = text.find(series + " ", pos)) != std::string::npos) {
    if (pos == 0 || text[pos - 1] == '\n') {
      auto start = pos + series.size() + 1;
      return text.substr(start, text.find('\n', start) - start);
    }
    pos += series.size();
  }
  return "<missing>";
}

}  // namespace

TEST_CASE("metrics: counters and gauges with labels in the text format") {
  aise::metrics::registry reg;
  auto& requests = reg.counter_family("app_requests_total", "Requests.", {"method", "code"});
  requests.with({"GET", "200"}).inc();
  requests.with({"GET", "200"}).inc(2);
  requests.with({"POST", "201"}).inc();
  auto& temp = reg.gauge_family("app_temperature", "Degrees.\nSecond line \\ here.");
  temp.get().set(21.5);
  temp.get().add(-1.25);
  CHECK(temp.get().value() == doctest::Approx(20.25));
  auto text = reg.expose();
  CHECK(contains(text, "# HELP app_requests_total Requests.\n# TYPE app_requests_total counter\n"));
  CHECK(sample_value(text, R"(app_requests_total{method="GET",code="200"})") == "3");
  CHECK(sample_value(text, R"(app_requests_total{method="POST",code="201"})") == "1");
  CHECK(contains(text, "# HELP app_temperature Degrees.\\nSecond line \\\\ here.\n"));
  CHECK(sample_value(text, "app_temperature") == "20.25");
  // Families ordered by name.
  CHECK(text.find("app_requests_total") < text.find("app_temperature"));
}

TEST_CASE("metrics: label values are escaped") {
  aise::metrics::registry reg;
  reg.counter_family("x_total", "X.", {"path"}).with({"a\"b\\c\nd"}).inc();
  CHECK(sample_value(reg.expose(), R"(x_total{path="a\"b\\c\nd"})") == "1");
}

TEST_CASE("metrics: histogram buckets are cumulative and count matches") {
  aise::metrics::registry reg;
  auto& h = reg.histogram_family("op_seconds", "Op latency.", {"op"}, {0.1, 0.5, 1});
  auto& series = h.with({"read"});
  for (double v : {0.05, 0.1, 0.2, 0.7, 3.0}) series.observe(v);
  auto text = reg.expose();
  CHECK(contains(text, "# TYPE op_seconds histogram\n"));
  CHECK(sample_value(text, R"(op_seconds_bucket{op="read",le="0.1"})") == "2");  // le is inclusive
  CHECK(sample_value(text, R"(op_seconds_bucket{op="read",le="0.5"})") == "3");
  CHECK(sample_value(text, R"(op_seconds_bucket{op="read",le="1"})") == "4");
  CHECK(sample_value(text, R"(op_seconds_bucket{op="read",le="+Inf"})") == "5");
  CHECK(sample_value(text, R"(op_seconds_count{op="read"})") == "5");
  CHECK(std::stod(sample_value(text, R"(op_seconds_sum{op="read"})")) == doctest::Approx(4.05));
}

TEST_CASE("metrics: concurrent updates are all counted") {
  aise::metrics::registry reg;
  auto& c = reg.counter_family("hits_total", "Hits.", {"t"});
  auto& h = reg.histogram_family("lat_seconds", "Latency.", {});
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      for (int k = 0; k < 10000; ++k) {
        c.with({std::to_string(k % 3)}).inc();
        h.get().observe(0.001 * (k % 50));
      }
      (void)i;
    });
  }
  for (auto& t : threads) t.join();
  auto s = h.get().read();
  CHECK(s.count == 40000);
  CHECK(c.with({"0"}).value() + c.with({"1"}).value() + c.with({"2"}).value() == 40000);
}

TEST_CASE("metrics: registration errors and the series bound") {
  aise::metrics::registry reg(3);
  CHECK_THROWS_AS(reg.counter_family("bad-name", "x"), std::invalid_argument);
  CHECK_THROWS_AS(reg.counter_family("ok_total", "x", {"__reserved"}), std::invalid_argument);
  CHECK_THROWS_AS(reg.counter_family("ok_total", "x", {"a", "a"}), std::invalid_argument);
  CHECK_THROWS_AS(reg.histogram_family("h_seconds", "x", {}, {1, 0.5}), std::invalid_argument);
  auto& c = reg.counter_family("ok_total", "x", {"a"});
  CHECK(&reg.counter_family("ok_total", "x", {"a"}) == &c);  // the same family again
  CHECK_THROWS_AS(reg.gauge_family("ok_total", "x", {"a"}), std::invalid_argument);
  CHECK_THROWS_AS(c.with({"1", "2"}), std::invalid_argument);
  for (int i = 0; i < 10; ++i) c.with({std::to_string(i)}).inc();
  auto text = reg.expose();
  CHECK(sample_value(text, R"(ok_total{a="_overflow_"})") == "7");
  CHECK(sample_value(text, R"(ok_total{a="3"})") == "<missing>");
}

TEST_CASE("metrics: scrape-time functions") {
  aise::metrics::registry reg;
  double level = 4;
  reg.gauge_fn("water_level", "Level.", [&] { return level; });
  reg.collect("jobs_done_total", "Jobs.", aise::metrics::kind::counter, {"queue"}, [] {
    return std::vector<aise::metrics::sample>{{{"b"}, 2}, {{"a"}, 1}};
  });
  reg.gauge_fn("broken", "Throws.", []() -> double { throw std::runtime_error("no"); });
  level = 7;
  auto text = reg.expose();
  CHECK(sample_value(text, "water_level") == "7");
  CHECK(contains(text, "# TYPE jobs_done_total counter\n"));
  CHECK(text.find(R"(jobs_done_total{queue="a"} 1)") <
        text.find(R"(jobs_done_total{queue="b"} 2)"));
  CHECK_FALSE(contains(text, "broken"));  // skipped, the rest is served
  CHECK_THROWS_AS(reg.gauge_fn("water_level", "again", [] { return 1.0; }), std::invalid_argument);
}

TEST_CASE("metrics: orchestrator gauges follow the store") {
  aise::runtime rt(aise::test::quiet_options());
  {
    aise::orchestrator orch(rt);
    aise::metrics::registry reg;
    aise::metrics::add_orchestrator_metrics(reg, orch, {.cache_for = std::chrono::seconds(0)});
    auto text = reg.expose();
    CHECK(sample_value(text, R"(aise_tasks{state="queued"})") == "0");
    CHECK(sample_value(text, "aise_store_up") == "1");

    aise::task_spec spec;
    spec.kind = "nobody";  // no agent: stays queued
    auto a = orch.submit(spec);
    auto b = orch.submit(spec);
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    spec.requires_approval = true;
    REQUIRE(orch.submit(spec).ok());
    REQUIRE(orch.cancel(*a).ok());
    text = reg.expose();
    auto counts = orch.store().count_tasks("").value();
    CHECK(counts[aise::task_state::queued] == 1);
    CHECK(sample_value(text, R"(aise_tasks{state="queued"})") == "1");
    CHECK(sample_value(text, R"(aise_tasks{state="cancelled"})") == "1");
    CHECK(sample_value(text, R"(aise_tasks{state="awaiting_approval"})") == "1");
    CHECK(sample_value(text, R"(aise_tasks{state="succeeded"})") == "0");
    CHECK(sample_value(text, "aise_task_queue_depth") == "1");
    CHECK(sample_value(text, R"(aise_agents{status="running"})") == "0");

    aise::agent_record remote;
    remote.id = "w-1";
    remote.kind = "sum";
    remote.status = "remote";
    REQUIRE(orch.store().put_agent(remote).ok());
    CHECK(sample_value(reg.expose(), R"(aise_agents{status="remote"})") == "1");
  }
  (void)rt.shutdown();
}

TEST_CASE("metrics: orchestrator gauges are cached") {
  aise::runtime rt(aise::test::quiet_options());
  {
    aise::orchestrator orch(rt);
    aise::metrics::registry reg;
    aise::metrics::add_orchestrator_metrics(reg, orch, {.cache_for = std::chrono::hours(1)});
    CHECK(sample_value(reg.expose(), "aise_task_queue_depth") == "0");
    aise::task_spec spec;
    spec.kind = "nobody";
    REQUIRE(orch.submit(spec).ok());
    CHECK(sample_value(reg.expose(), "aise_task_queue_depth") == "0");  // the cached reading
  }
  (void)rt.shutdown();
}
