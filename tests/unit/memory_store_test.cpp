// The in-memory store: the conformance suite (twice: on the system clock and
// on a manual clock) plus what only this implementation promises.

#include <aise/clock.hpp>
#include <aise/store.hpp>

#include <chrono>
#include <doctest/doctest.h>
#include <memory>
#include <string>

#include "conformance/store_suite.hpp"

AISE_STORE_CONFORMANCE_SUITE(memory, "memory", [] { return aise::make_memory_store(); });

AISE_STORE_CONFORMANCE_SUITE(memory_manual_clock, "memory-manual-clock", [] {
  aise::memory_store_options options;
  options.clock = std::make_shared<aise::manual_clock>();
  return aise::make_memory_store(options);
});

namespace {

using namespace std::chrono_literals;
using aise::conformance::store_suite::change;
using aise::conformance::store_suite::draft;
using aise::conformance::store_suite::make_task;
using aise::conformance::store_suite::must;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("memory store: backend name") {
  CHECK(aise::make_memory_store()->backend() == "memory");
}

TEST_CASE("memory store: stores are independent") {
  auto a = aise::make_memory_store();
  auto b = aise::make_memory_store();
  aise::project p;
  p.id = "only-in-a";
  must(a->create_project(p));
  must(a->append_event(draft("p1", "agent.started")));
  CHECK_FALSE(b->get_project("only-in-a").ok());
  CHECK(must(b->last_sequence("p1")) == 0);
}

TEST_CASE("memory store: timestamps it fills come from the options clock") {
  auto clock = std::make_shared<aise::manual_clock>();
  aise::memory_store_options options;
  options.clock = clock;
  auto s = aise::make_memory_store(options);
  const aise::time_point t0 = clock->now();

  aise::project p;
  p.id = "p1";
  auto created = must(s->create_project(p));
  CHECK(created.created_at == t0);
  CHECK(created.updated_at == t0);

  clock->advance(5s);
  auto updated = must(s->update_project(created));  // updated_at given: kept
  CHECK(updated.updated_at == t0);
  created.updated_at = {};
  updated = must(s->update_project(created));
  CHECK(updated.updated_at == t0 + 5s);
  CHECK(updated.created_at == t0);

  aise::agent_record a;
  a.id = "agent-1";
  must(s->put_agent(a));
  CHECK(must(s->get_agent("agent-1")).created_at == t0 + 5s);
  clock->advance(1s);
  a.status = "running";
  must(s->put_agent(a));  // a replacement keeps the first registration time
  CHECK(must(s->get_agent("agent-1")).created_at == t0 + 5s);

  aise::agent_snapshot snap;
  snap.agent_id = "agent-1";
  CHECK(must(s->save_snapshot(snap)).taken_at == t0 + 6s);

  auto t = make_task("t-1");
  auto event_unset = draft("p1", "task.queued", "t-1");
  event_unset.at = {};
  CHECK(must(s->insert_tasks({t}, {event_unset})).at(0) == 1);
  CHECK(must(s->read_events("p1", 0, 10)).at(0).at == t0 + 6s);
  auto stored = must(s->get_task("t-1"));
  CHECK(stored.created_at == t0 + 6s);
  CHECK(stored.updated_at == t0 + 6s);

  clock->advance(1s);
  auto u = change("t-1", 1, aise::task_state::running);
  u.at = {};
  u.event.at = {};
  CHECK(must(s->update_task(u)) == 2);
  CHECK(must(s->read_events("p1", 1, 10)).at(0).at == t0 + 7s);
  CHECK(must(s->get_task("t-1")).updated_at == t0 + 7s);

  auto appended = draft("p1", "agent.started");
  appended.at = {};
  CHECK(must(s->append_event(appended)).at == t0 + 7s);

  aise::artifact_meta art;
  art.id = "a-1";
  art.project = "p1";
  art.name = "out.txt";
  CHECK(must(s->put_artifact(art)).created_at == t0 + 7s);
}

TEST_CASE("memory store: error messages say what is wrong") {
  auto s = aise::make_memory_store();
  must(s->insert_tasks({make_task("t-1")}, {}));
  must(s->update_task(change("t-1", 1, aise::task_state::running)));

  auto stale = s->update_task(change("t-1", 1, aise::task_state::cancelled));
  REQUIRE_FALSE(stale.ok());
  CHECK(stale.error().code() == aise::errc::conflict);
  CHECK(contains(stale.error().message(), "'t-1'"));
  CHECK(contains(stale.error().message(), "expected version 1"));
  CHECK(contains(stale.error().message(), "stored version is 2"));

  auto no_kind = make_task("t-9");
  no_kind.kind.clear();
  auto bad = s->insert_tasks({make_task("t-8"), no_kind}, {});
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().code() == aise::errc::invalid_argument);
  CHECK(contains(bad.error().message(), "task #1"));
  CHECK(contains(bad.error().message(), "'t-9'"));
  CHECK(contains(bad.error().message(), "empty kind"));

  auto twice = s->insert_tasks({make_task("t-7"), make_task("t-7")}, {});
  REQUIRE_FALSE(twice.ok());
  CHECK(twice.error().code() == aise::errc::already_exists);
  CHECK(contains(twice.error().message(), "twice in the batch"));

  auto taken = s->insert_tasks({make_task("t-1")}, {});
  REQUIRE_FALSE(taken.ok());
  CHECK(contains(taken.error().message(), "task 't-1' already exists"));

  auto no_type = s->append_event(draft("p1", ""));
  REQUIRE_FALSE(no_type.ok());
  CHECK(contains(no_type.error().message(), "without a type"));
}

TEST_CASE("memory store: rejects agents without project and artifacts without name") {
  auto s = aise::make_memory_store();
  aise::agent_record a;
  a.id = "agent-1";
  a.project.clear();
  auto r = s->put_agent(a);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == aise::errc::invalid_argument);

  aise::artifact_meta art;
  art.id = "a-1";
  art.project = "p1";
  auto ar = s->put_artifact(art);
  REQUIRE_FALSE(ar.ok());
  CHECK(ar.error().code() == aise::errc::invalid_argument);
  CHECK(s->list_artifacts("p1").value().empty());
}

TEST_CASE("memory store: an error and clear_error together replace the error") {
  auto s = aise::make_memory_store();
  auto t = make_task("t-1");
  t.error = aise::error(aise::errc::timeout, "old");
  must(s->insert_tasks({t}, {}));
  auto u = change("t-1", 1, aise::task_state::failed);
  u.clear_error = true;
  u.error = aise::error(aise::errc::handler_failed, "new");
  must(s->update_task(u));
  auto got = must(s->get_task("t-1"));
  REQUIRE(got.error.has_value());
  CHECK(got.error->message() == "new");
}

TEST_CASE("memory store: attempt rows belong to the updated task") {
  auto s = aise::make_memory_store();
  must(s->insert_tasks({make_task("t-1")}, {}));
  auto u = change("t-1", 1, aise::task_state::running);
  u.attempt_row = aise::task_attempt{};
  u.attempt_row->number = 1;
  u.attempt_row->task_id = "someone-else";
  must(s->update_task(u));
  auto attempts = must(s->list_attempts("t-1"));
  REQUIRE(attempts.size() == 1);
  CHECK(attempts[0].task_id == "t-1");
}

TEST_CASE("memory store: retention on writes keeps the newest history within bounds") {
  aise::memory_store_options options;
  options.retention.max_finished_tasks = 16;
  options.retention.max_events_per_project = 40;
  auto s = aise::make_memory_store(options);
  // 200 tasks, each inserted and finished; every tenth stays running.
  std::size_t most_tasks = 0;
  std::size_t most_events = 0;
  for (int i = 0; i < 200; ++i) {
    const std::string id = "t-" +
                           std::string(i < 10    ? "00"
                                       : i < 100 ? "0"
                                                 : "") +
                           std::to_string(i);
    must(s->insert_tasks({make_task(id)}, {draft("p1", "task.queued", id)}));
    const auto to = i % 10 == 0 ? aise::task_state::running : aise::task_state::succeeded;
    must(s->update_task(change(id, 1, to)));
    aise::task_filter all;
    all.limit = 1000;
    most_tasks = std::max(most_tasks, must(s->list_tasks(all)).items.size());
    most_events = std::max(most_events, must(s->read_events("p1", 0, 1000)).size());
  }
  // Bounded: the limits plus an eighth of overshoot, plus the 20 running tasks.
  CHECK(most_tasks <= 16 + 2 + 20);
  CHECK(most_events <= 40 + 5);
  aise::task_filter all;
  all.limit = 1000;
  auto kept = must(s->list_tasks(all)).items;
  std::size_t running = 0;
  for (const auto& t : kept) running += t.state == aise::task_state::running ? 1 : 0;
  CHECK(running == 20);                // never dropped
  CHECK(kept.back().id == "t-199");    // the newest finished are kept
  CHECK(kept.size() - running >= 16);  // at least the limit
  for (std::size_t i = 1; i < kept.size(); ++i) CHECK(kept[i - 1].id < kept[i].id);
  auto events = must(s->read_events("p1", 0, 1000));
  CHECK(events.back().sequence == 400);  // numbering unaffected
  CHECK(must(s->last_sequence("p1")) == 400);
  for (std::size_t i = 1; i < events.size(); ++i)
    CHECK(events[i].sequence == events[i - 1].sequence + 1);
  // A finished task that was dropped is gone with its attempts.
  aise::conformance::store_suite::expect_error(s->get_task("t-001"), aise::errc::not_found);
  CHECK(must(s->get_task("t-000")).state == aise::task_state::running);
}

TEST_CASE("memory store: retention zero keeps everything") {
  aise::memory_store_options options;
  options.retention = {};
  auto s = aise::make_memory_store(options);
  for (int i = 0; i < 300; ++i) {
    const std::string id = "k-" + std::to_string(1000 + i);
    must(s->insert_tasks({make_task(id)}, {draft("p1", "task.queued", id)}));
    must(s->update_task(change(id, 1, aise::task_state::succeeded)));
  }
  aise::task_filter all;
  all.limit = 1000;
  CHECK(must(s->list_tasks(all)).items.size() == 300);
  CHECK(must(s->read_events("p1", 0, 1000)).size() == 600);
}
