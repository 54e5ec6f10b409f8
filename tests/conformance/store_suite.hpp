#pragma once
/// @file
/// The store conformance suite: the doctest cases every `aise::store` must
/// pass unchanged — the in-memory store as well as SQLite and PostgreSQL.
///
/// Instantiate it once per store, at namespace scope of a test source:
///
///     AISE_STORE_CONFORMANCE_SUITE(memory, "memory", [] { return aise::make_memory_store(); })
///
/// `id` is a C++ identifier unique within the executable, `label` a string
/// literal that prefixes the test names ("memory store: ..."), and the rest
/// a factory callable as `factory()` that returns a fresh, empty
/// `std::shared_ptr<aise::store>` each time (a SQL adapter creates a fresh
/// database or schema). Each test case calls it once. Several instantiations
/// may live in one executable, in one or several translation units.
///
/// What the suite relies on, beyond store.hpp:
/// - Timestamps it sets are whole seconds, durations whole milliseconds, so
///   a backend that keeps microseconds (or milliseconds for timeouts) round
///   trips them exactly. `time_point{}` means "unset" and must round trip too.
/// - JSON values are compared by value (`==`): key order and the integer
///   representation (signed or unsigned) may change in storage, values not.
/// - Concurrency cases start their threads together on a latch or barrier
///   and join them; nothing sleeps or waits on time.
/// - Assertions run on the test thread only: worker threads record what
///   they saw, the test thread checks it after join.

#include <aise/error.hpp>
#include <aise/event.hpp>
#include <aise/store.hpp>
#include <aise/task.hpp>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <doctest/doctest.h>
#include <functional>
#include <latch>
#include <limits>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace aise::conformance {

/// Makes a fresh, empty store for one test case.
using store_factory = std::function<std::shared_ptr<store>()>;

namespace store_suite {

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A fixed instant plus `seconds`: whole seconds survive every backend.
inline time_point at(int seconds) {
  using namespace std::chrono;
  return time_point{sys_days{year{2026} / 3 / 1}} + std::chrono::seconds{seconds};
}

// Call sites come from __builtin_FILE/__builtin_LINE default arguments
// (GCC, Clang, MSVC): std::source_location needs Clang 15 with libstdc++.
inline std::string where(const char* file, int line) {
  return " (at " + std::string(file) + ":" + std::to_string(line) + ")";
}

template <class T>
std::string describe(const result<T>& r) {
  return r.ok() ? std::string("ok") : r.error().describe();
}

/// The value of `r`; fails the test case (naming the caller) on an error.
template <class T>
T must(result<T> r, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  const std::string message = "expected success, got " + describe(r) + where(file, line);
  REQUIRE_MESSAGE(r.ok(), message);
  return std::move(r).value();
}

/// Checks that `r` failed with `expected` and a non-empty message.
template <class T>
void expect_error(const result<T>& r, errc expected, const char* file = __builtin_FILE(),
                  int line = __builtin_LINE()) {
  const std::string want(to_string(expected));
  const std::string unexpected_success =
      "expected " + want + ", but the call succeeded" + where(file, line);
  REQUIRE_MESSAGE(!r.ok(), unexpected_success);
  const std::string got = "got " + r.error().describe() + where(file, line);
  CHECK_MESSAGE(std::string(to_string(r.error().code())) == want, got);
  const std::string no_message = "the " + want + " error has no message" + where(file, line);
  CHECK_MESSAGE(!r.error().message().empty(), no_message);
}

inline std::shared_ptr<store> fresh(const store_factory& make) {
  std::shared_ptr<store> s = make();
  REQUIRE_MESSAGE(s != nullptr, "the store factory returned no store");
  return s;
}

inline std::string name_of(task_state s) {
  return std::string(to_string(s));
}

inline task make_task(std::string id, std::string project = "p1", std::string kind = "work") {
  task t;
  t.id = std::move(id);
  t.project = std::move(project);
  t.kind = std::move(kind);
  t.state = task_state::queued;
  t.payload = {{"input", 1}};
  return t;
}

inline event_draft draft(std::string project, std::string type, std::string subject = {},
                         nlohmann::json data = nlohmann::json::object()) {
  event_draft d;
  d.project = std::move(project);
  d.type = std::move(type);
  d.subject = std::move(subject);
  d.at = at(0);
  d.data = std::move(data);
  return d;
}

/// A change of task `id` (in `project`) to `to`, expecting `version`, with
/// its "task.<state>" event.
inline task_update change(const std::string& id, std::uint64_t version, task_state to,
                          const std::string& project = "p1") {
  task_update u;
  u.id = id;
  u.expected_version = version;
  u.state = to;
  u.at = at(static_cast<int>(version) * 10);
  u.event = draft(project, "task." + name_of(to), id, {{"to", name_of(to)}});
  u.event.at = u.at;
  return u;
}

inline std::vector<std::uint64_t> sequences_of(const std::vector<event>& v) {
  std::vector<std::uint64_t> out;
  out.reserve(v.size());
  for (const event& e : v) out.push_back(e.sequence);
  return out;
}

/// "a,b,c": vectors compared as text, so a failure prints both sides.
template <class T>
std::string joined(const std::vector<T>& items) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    if constexpr (std::is_convertible_v<const T&, std::string_view>)
      out += std::string_view(items[i]);
    else
      out += std::to_string(items[i]);
  }
  return out;
}

/// Empty when `sorted` is exactly 1, 2, …, `n`; else where it first is not.
template <class T>
std::string gap_in(const std::vector<T>& sorted, std::size_t n) {
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    if (sorted[i] != static_cast<T>(i + 1))
      return "position " + std::to_string(i) + " holds " + std::to_string(sorted[i]);
  }
  if (sorted.size() != n)
    return std::to_string(sorted.size()) + " values instead of " + std::to_string(n);
  return "";
}

/// The ids of projects, tasks, agents or artifacts, joined.
template <class T>
std::string ids(const std::vector<T>& items) {
  std::vector<std::string> out;
  out.reserve(items.size());
  for (const T& item : items) out.push_back(item.id);
  return joined(out);
}

inline std::vector<task> all_tasks(store& s, task_filter f) {
  f.limit = 1000;
  std::vector<task> out;
  for (int pages = 0; pages < 100; ++pages) {
    page<task> p = must(s.list_tasks(f));
    out.insert(out.end(), p.items.begin(), p.items.end());
    if (p.next_cursor.empty()) return out;
    f.after = p.next_cursor;
  }
  FAIL("list_tasks never returned an empty cursor");
  return out;
}

/// JSON that tends to break storage: nesting, unicode, escapes, integers
/// beyond a double's precision, both ends of int64 and the top of uint64.
inline nlohmann::json tricky_json() {
  return {
      {"nested", {{"a", {{"b", {{"c", {1, 2, {{"d", nullptr}}}}}}}}}},
      {"unicode", "h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c\u8a9e \U0001F680"},
      {"escapes", "quote \" backslash \\ slash / newline \n tab \t"},
      {"\u043a\u043b\u044e\u0447", "\u0437\u043d\u0430\u0447\u0435\u043d\u0438\u0435"},
      {"int64_max", std::numeric_limits<std::int64_t>::max()},
      {"int64_min", std::numeric_limits<std::int64_t>::min()},
      {"uint64_max", std::numeric_limits<std::uint64_t>::max()},
      {"beyond_double", std::int64_t{9007199254740993}},
      {"half", 0.5},
      {"negative", -1.25e10},
      {"flags", {true, false, nullptr}},
      {"empty_object", nlohmann::json::object()},
      {"empty_array", nlohmann::json::array()},
      {"empty_string", ""},
  };
}

/// Checks the integers of `tricky_json()` survived with their exact values.
inline void check_tricky_numbers(const nlohmann::json& j) {
  REQUIRE(j.is_object());
  CHECK(j.at("int64_max").get<std::int64_t>() == std::numeric_limits<std::int64_t>::max());
  CHECK(j.at("int64_min").get<std::int64_t>() == std::numeric_limits<std::int64_t>::min());
  CHECK(j.at("uint64_max").get<std::uint64_t>() == std::numeric_limits<std::uint64_t>::max());
  CHECK(j.at("beyond_double").get<std::int64_t>() == 9007199254740993);
}

// ---------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------

// count_tasks: per state, per project and overall, following updates.
inline void count_tasks_by_state(const store_factory& make) {
  auto s = fresh(make);
  CHECK(must(s->count_tasks("")).total() == 0);
  auto t = [](std::string id, std::string project, task_state state) {
    task x = make_task(std::move(id), std::move(project), "sum");
    x.state = state;
    return x;
  };
  must(s->insert_tasks({t("c-1", "p1", task_state::queued), t("c-2", "p1", task_state::queued),
                        t("c-3", "p1", task_state::running), t("c-4", "p2", task_state::queued),
                        t("c-5", "p2", task_state::failed)},
                       {}));
  auto all = must(s->count_tasks(""));
  CHECK(all.total() == 5);
  CHECK(all[task_state::queued] == 3);
  CHECK(all[task_state::running] == 1);
  CHECK(all[task_state::failed] == 1);
  CHECK(all[task_state::succeeded] == 0);
  auto p1 = must(s->count_tasks("p1"));
  CHECK(p1.total() == 3);
  CHECK(p1[task_state::queued] == 2);
  CHECK(must(s->count_tasks("p3")).total() == 0);

  must(s->update_task(change("c-1", 1, task_state::cancelled)));
  p1 = must(s->count_tasks("p1"));
  CHECK(p1[task_state::queued] == 1);
  CHECK(p1[task_state::cancelled] == 1);
  CHECK(p1.total() == 3);
}

inline void fresh_store_is_empty(const store_factory& make) {
  auto s = fresh(make);
  CHECK_FALSE(s->backend().empty());
  auto projects = must(s->list_projects("", 100));
  CHECK(projects.items.empty());
  CHECK(projects.next_cursor.empty());
  CHECK(must(s->list_agents("")).empty());
  auto tasks = must(s->list_tasks({}));
  CHECK(tasks.items.empty());
  CHECK(tasks.next_cursor.empty());
  CHECK(must(s->last_sequence("p1")) == 0);
  CHECK(must(s->read_events("p1", 0, 100)).empty());
  CHECK(must(s->list_artifacts("p1")).empty());
  CHECK(must(s->artifact_versions("p1", "report")).empty());
}

inline void projects_create_get_update(const store_factory& make) {
  auto s = fresh(make);
  project p;
  p.id = "alpha";
  p.name = "Alpha";
  p.description = "the first one";
  p.metadata = {{"owner", "ann"}, {"tags", {"a", "b"}}};
  p.created_at = at(1);
  p.updated_at = at(2);

  project created = must(s->create_project(p));
  CHECK(created.id == "alpha");
  CHECK(created.name == "Alpha");
  CHECK(created.created_at == at(1));
  CHECK(created.updated_at == at(2));

  project got = must(s->get_project("alpha"));
  CHECK(got.name == "Alpha");
  CHECK(got.description == "the first one");
  CHECK(got.metadata == p.metadata);
  CHECK_FALSE(got.archived);
  CHECK(got.created_at == at(1));
  CHECK(got.updated_at == at(2));

  project other = p;
  other.name = "Impostor";
  expect_error(s->create_project(other), errc::already_exists);
  CHECK(must(s->get_project("alpha")).name == "Alpha");

  project unset;
  unset.id = "beta";
  project beta = must(s->create_project(unset));
  CHECK(beta.created_at != time_point{});
  CHECK(beta.updated_at != time_point{});
  CHECK(must(s->get_project("beta")).created_at == beta.created_at);

  project changed = got;
  changed.name = "Alpha 2";
  changed.description = "renamed";
  changed.metadata = {{"owner", "bob"}};
  changed.archived = true;
  changed.updated_at = at(10);
  changed.created_at = at(99);  // not a replaced field: the stored one stays
  CHECK(must(s->update_project(changed)).name == "Alpha 2");
  project updated = must(s->get_project("alpha"));
  CHECK(updated.name == "Alpha 2");
  CHECK(updated.description == "renamed");
  CHECK(updated.metadata == nlohmann::json{{"owner", "bob"}});
  CHECK(updated.archived);
  CHECK(updated.updated_at == at(10));
  CHECK(updated.created_at == at(1));

  project missing;
  missing.id = "gamma";
  expect_error(s->update_project(missing), errc::not_found);
  expect_error(s->get_project("gamma"), errc::not_found);
  expect_error(s->create_project(project{}), errc::invalid_argument);
  CHECK(must(s->list_projects("", 100)).items.size() == 2);
}

inline void projects_pagination(const store_factory& make) {
  auto s = fresh(make);
  auto id = [](int i) { return std::string("proj-") + (i < 10 ? "0" : "") + std::to_string(i); };
  for (int k = 0; k < 25; ++k) {  // scrambled insertion order
    project p;
    p.id = id((k * 7) % 25);
    must(s->create_project(p));
  }

  auto first = must(s->list_projects("", 10));
  REQUIRE(first.items.size() == 10);
  CHECK(first.items.front().id == "proj-00");
  CHECK(first.items.back().id == "proj-09");
  CHECK(first.next_cursor == "proj-09");
  auto second = must(s->list_projects(first.next_cursor, 10));
  REQUIRE(second.items.size() == 10);
  CHECK(second.items.front().id == "proj-10");
  CHECK(second.next_cursor == "proj-19");
  auto third = must(s->list_projects(second.next_cursor, 10));
  REQUIRE(third.items.size() == 5);
  CHECK(third.items.front().id == "proj-20");
  CHECK(third.items.back().id == "proj-24");
  CHECK(third.next_cursor.empty());

  std::vector<std::string> seen;
  for (const auto* pg : {&first, &second, &third})
    for (const project& p : pg->items) seen.push_back(p.id);
  CHECK(std::is_sorted(seen.begin(), seen.end()));
  CHECK(std::set<std::string>(seen.begin(), seen.end()).size() == 25);

  // An exact multiple: the fifth page of five is the last and says so.
  std::string cursor;
  std::vector<std::size_t> sizes;
  for (int i = 0; i < 10; ++i) {
    auto pg = must(s->list_projects(cursor, 5));
    sizes.push_back(pg.items.size());
    cursor = pg.next_cursor;
    if (cursor.empty()) break;
  }
  CHECK(joined(sizes) == "5,5,5,5,5");

  auto one = must(s->list_projects("", 0));  // clamped up to 1
  REQUIRE(one.items.size() == 1);
  CHECK(one.items[0].id == "proj-00");
  CHECK(one.next_cursor == "proj-00");
  auto all = must(s->list_projects("", 5000));  // clamped down to 1000
  CHECK(all.items.size() == 25);
  CHECK(all.next_cursor.empty());
  auto between = must(s->list_projects("proj-05x", 3));  // a cursor need not exist
  CHECK(ids(between.items) == "proj-06,proj-07,proj-08");
  auto past = must(s->list_projects("proj-24", 10));
  CHECK(past.items.empty());
  CHECK(past.next_cursor.empty());
}

inline void unknown_ids_are_not_found(const store_factory& make) {
  auto s = fresh(make);
  project p;
  p.id = "nope";
  expect_error(s->get_project("nope"), errc::not_found);
  expect_error(s->update_project(p), errc::not_found);
  expect_error(s->get_agent("nope"), errc::not_found);
  expect_error(s->load_snapshot("nope"), errc::not_found);
  expect_error(s->get_task("nope"), errc::not_found);
  expect_error(s->update_task(change("nope", 1, task_state::running)), errc::not_found);
  expect_error(s->list_attempts("nope"), errc::not_found);
  expect_error(s->get_artifact("nope"), errc::not_found);
  CHECK(must(s->last_sequence("p1")) == 0);  // the failed update wrote no event
}

inline void agents_upsert_and_list(const store_factory& make) {
  auto s = fresh(make);
  agent_record b;
  b.id = "agent-b";
  b.project = "p1";
  b.kind = "writer";
  b.capabilities = {"write", "edit"};
  b.status = "running";
  b.last_heartbeat = at(5);
  b.created_at = at(1);
  agent_record a = b;
  a.id = "agent-a";
  agent_record c = b;
  c.id = "agent-c";
  c.project = "p2";
  must(s->put_agent(b));
  must(s->put_agent(c));
  must(s->put_agent(a));

  CHECK(ids(must(s->list_agents("p1"))) == "agent-a,agent-b");
  CHECK(ids(must(s->list_agents("p2"))) == "agent-c");
  CHECK(ids(must(s->list_agents(""))) == "agent-a,agent-b,agent-c");
  CHECK(must(s->list_agents("p3")).empty());

  agent_record got = must(s->get_agent("agent-b"));
  CHECK(got.project == "p1");
  CHECK(got.kind == "writer");
  CHECK(joined(got.capabilities) == "write,edit");
  CHECK(got.status == "running");
  CHECK(got.restarts == 0);
  CHECK(got.last_heartbeat == at(5));
  CHECK(got.created_at == at(1));

  b.status = "restarting";
  b.restarts = 2;
  b.capabilities = {"write"};
  b.last_heartbeat = at(9);
  must(s->put_agent(b));
  got = must(s->get_agent("agent-b"));
  CHECK(got.status == "restarting");
  CHECK(got.restarts == 2);
  CHECK(joined(got.capabilities) == "write");
  CHECK(got.last_heartbeat == at(9));
  CHECK(must(s->list_agents("")).size() == 3);

  b.project = "p2";  // a replacement may move the agent
  must(s->put_agent(b));
  CHECK(ids(must(s->list_agents("p1"))) == "agent-a");
  CHECK(ids(must(s->list_agents("p2"))) == "agent-b,agent-c");

  agent_record empty;
  expect_error(s->put_agent(empty), errc::invalid_argument);
  expect_error(s->get_agent("agent-z"), errc::not_found);
}

inline void snapshots_versions(const store_factory& make) {
  auto s = fresh(make);
  expect_error(s->load_snapshot("agent-x"), errc::not_found);

  for (int i = 1; i <= 3; ++i) {
    agent_snapshot snap;
    snap.agent_id = "agent-x";
    snap.version = 77;  // assigned by the store, whatever the caller says
    snap.taken_at = at(10 * i);
    snap.state = {{"step", i}, {"notes", {"a", "b"}}};
    agent_snapshot saved = must(s->save_snapshot(snap));
    CHECK(saved.version == static_cast<std::uint64_t>(i));
    CHECK(saved.agent_id == "agent-x");
  }
  agent_snapshot latest = must(s->load_snapshot("agent-x"));
  CHECK(latest.version == 3);
  CHECK(latest.agent_id == "agent-x");
  CHECK(latest.taken_at == at(30));
  CHECK(latest.state == nlohmann::json{{"step", 3}, {"notes", {"a", "b"}}});

  agent_snapshot other;
  other.agent_id = "agent-y";
  other.state = {{"mine", true}};
  agent_snapshot first_of_y = must(s->save_snapshot(other));
  CHECK(first_of_y.version == 1);
  CHECK(first_of_y.taken_at != time_point{});
  CHECK(must(s->load_snapshot("agent-x")).version == 3);
  CHECK(must(s->load_snapshot("agent-y")).state == nlohmann::json{{"mine", true}});

  std::uint64_t last = 0;
  for (int i = 0; i < 20; ++i) {
    agent_snapshot snap;
    snap.agent_id = "agent-x";
    snap.state = {{"step", 4 + i}};
    last = must(s->save_snapshot(snap)).version;
  }
  CHECK(last == 23);
  latest = must(s->load_snapshot("agent-x"));
  CHECK(latest.version == 23);
  CHECK(latest.state == nlohmann::json{{"step", 23}});

  expect_error(s->save_snapshot(agent_snapshot{}), errc::invalid_argument);
}

inline void tasks_round_trip(const store_factory& make) {
  auto s = fresh(make);
  task t = make_task("t-0001", "p1", "summarize");
  t.capability = "nlp";
  t.description = "Summarize \u2713";
  t.priority = 7;
  t.payload = {{"doc", {{"title", "x"}, {"pages", {1, 2, 3}}}}};
  t.depends_on = {"t-0000", "t-0002"};
  t.max_attempts = 3;
  t.timeout = std::chrono::milliseconds{1500};
  t.deadline = at(3600);
  t.requires_approval = true;
  t.on_dependency_failure = dependency_failure_policy::fail;
  t.parent = "t-0000";
  t.state = task_state::awaiting_approval;
  t.created_at = at(1);
  t.updated_at = at(2);
  t.version = 42;  // the store sets 1

  task done = make_task("t-0002", "p1", "translate");
  done.state = task_state::failed;
  done.attempt = 2;
  done.agent = "worker-1";
  done.result = nlohmann::json{{"partial", true}};
  done.error = aise::error(errc::handler_failed, "boom");
  done.not_before = at(50);
  done.payload = "just a string";

  task bare = make_task("t-0003");
  bare.payload = nullptr;

  auto sequences = must(s->insert_tasks(
      {t, done, bare},
      {draft("p1", "task.awaiting_approval", "t-0001", {{"to", "awaiting_approval"}}),
       draft("p1", "task.failed", "t-0002")}));
  CHECK(joined(sequences) == "1,2");
  auto events = must(s->read_events("p1", 0, 10));
  REQUIRE(events.size() == 2);
  CHECK(events[0].sequence == 1);
  CHECK(events[1].sequence == 2);
  CHECK(events[0].project == "p1");
  CHECK(events[0].type == "task.awaiting_approval");
  CHECK(events[0].subject == "t-0001");
  CHECK(events[0].at == at(0));
  CHECK(events[0].data == nlohmann::json{{"to", "awaiting_approval"}});
  CHECK(events[1].type == "task.failed");

  task got = must(s->get_task("t-0001"));
  CHECK(got.id == "t-0001");
  CHECK(got.project == "p1");
  CHECK(got.kind == "summarize");
  CHECK(got.capability == "nlp");
  CHECK(got.description == "Summarize \u2713");
  CHECK(got.priority == 7);
  CHECK(got.payload == t.payload);
  CHECK(joined(got.depends_on) == "t-0000,t-0002");
  CHECK(got.max_attempts == 3);
  REQUIRE(got.timeout.has_value());
  CHECK(std::chrono::duration_cast<std::chrono::milliseconds>(*got.timeout).count() == 1500);
  REQUIRE(got.deadline.has_value());
  CHECK(*got.deadline == at(3600));
  CHECK(got.requires_approval);
  CHECK(got.on_dependency_failure == dependency_failure_policy::fail);
  CHECK(got.parent == "t-0000");
  CHECK(name_of(got.state) == "awaiting_approval");
  CHECK(got.attempt == 0);
  CHECK(got.agent.empty());
  CHECK_FALSE(got.result.has_value());
  CHECK_FALSE(got.error.has_value());
  CHECK(got.created_at == at(1));
  CHECK(got.updated_at == at(2));
  CHECK(got.not_before == time_point{});
  CHECK(got.version == 1);

  got = must(s->get_task("t-0002"));
  CHECK(name_of(got.state) == "failed");
  CHECK(got.attempt == 2);
  CHECK(got.agent == "worker-1");
  REQUIRE(got.result.has_value());
  CHECK(*got.result == nlohmann::json{{"partial", true}});
  REQUIRE(got.error.has_value());
  CHECK(got.error->code() == errc::handler_failed);
  CHECK(got.error->message() == "boom");
  CHECK(got.not_before == at(50));
  CHECK(got.payload == nlohmann::json("just a string"));
  CHECK_FALSE(got.timeout.has_value());
  CHECK_FALSE(got.deadline.has_value());
  CHECK(got.depends_on.empty());
  CHECK(got.capability.empty());
  CHECK(got.on_dependency_failure == dependency_failure_policy::cancel);
  CHECK(got.version == 1);

  got = must(s->get_task("t-0003"));
  CHECK(got.payload.is_null());
  CHECK(got.created_at != time_point{});  // filled by the store when unset
  CHECK(must(s->list_attempts("t-0001")).empty());
  CHECK(must(s->last_sequence("p1")) == 2);
}

inline void insert_tasks_is_atomic(const store_factory& make) {
  auto s = fresh(make);
  auto no_kind = make_task("t-2");
  no_kind.kind.clear();
  expect_error(s->insert_tasks({make_task("t-1"), no_kind}, {draft("p1", "task.queued", "t-1")}),
               errc::invalid_argument);
  auto no_id = make_task("");
  expect_error(s->insert_tasks({make_task("t-1"), no_id}, {}), errc::invalid_argument);
  auto no_project = make_task("t-2");
  no_project.project.clear();
  expect_error(s->insert_tasks({make_task("t-1"), no_project}, {}), errc::invalid_argument);
  expect_error(s->get_task("t-1"), errc::not_found);
  CHECK(must(s->last_sequence("p1")) == 0);

  expect_error(
      s->insert_tasks({make_task("t-3"), make_task("t-3")}, {draft("p1", "task.queued", "t-3")}),
      errc::already_exists);
  expect_error(s->get_task("t-3"), errc::not_found);
  CHECK(must(s->last_sequence("p1")) == 0);

  auto stored = must(s->insert_tasks({make_task("t-4")}, {draft("p1", "task.queued", "t-4")}));
  CHECK(joined(stored) == "1");

  auto clash = make_task("t-4", "p1", "other-kind");
  expect_error(s->insert_tasks({make_task("t-5"), clash}, {draft("p1", "task.queued", "t-5")}),
               errc::already_exists);
  expect_error(s->get_task("t-5"), errc::not_found);
  CHECK(must(s->get_task("t-4")).kind == "work");
  CHECK(must(s->get_task("t-4")).version == 1);
  CHECK(must(s->last_sequence("p1")) == 1);

  expect_error(s->insert_tasks({make_task("t-6")},
                               {draft("p1", "task.queued", "t-6"), draft("p1", "", "t-6")}),
               errc::invalid_argument);
  expect_error(s->insert_tasks({make_task("t-6")}, {draft("", "task.queued", "t-6")}),
               errc::invalid_argument);
  expect_error(s->get_task("t-6"), errc::not_found);
  CHECK(must(s->last_sequence("p1")) == 1);
  CHECK(must(s->read_events("p1", 0, 100)).size() == 1);
  CHECK(ids(all_tasks(*s, {})) == "t-4");

  CHECK(must(s->insert_tasks({}, {})).empty());
  auto only_event = must(s->insert_tasks({}, {draft("p1", "agent.started", "a-1")}));
  CHECK(joined(only_event) == "2");
  auto logged = must(s->read_events("p1", 1, 10));
  REQUIRE(logged.size() == 1);
  CHECK(logged[0].type == "agent.started");
  CHECK(logged[0].subject == "a-1");
}

inline void update_task_compare_and_set(const store_factory& make) {
  auto s = fresh(make);
  auto t = make_task("t-1");
  t.state = task_state::pending;
  must(s->insert_tasks({t}, {draft("p1", "task.pending", "t-1")}));

  auto u = change("t-1", 1, task_state::queued);
  u.event.data = {{"from", "pending"}, {"to", "queued"}};
  CHECK(must(s->update_task(u)) == 2);
  auto logged = must(s->read_events("p1", 1, 10));
  REQUIRE(logged.size() == 1);
  const event& e = logged[0];
  CHECK(e.sequence == 2);
  CHECK(e.project == "p1");
  CHECK(e.type == "task.queued");
  CHECK(e.subject == "t-1");
  CHECK(e.at == u.event.at);
  CHECK(e.data == nlohmann::json{{"from", "pending"}, {"to", "queued"}});
  task got = must(s->get_task("t-1"));
  CHECK(got.version == 2);
  CHECK(name_of(got.state) == "queued");
  CHECK(got.updated_at == u.at);

  // Lost compare-and-set: nothing changes, no event.
  expect_error(s->update_task(change("t-1", 1, task_state::cancelled)), errc::conflict);
  expect_error(s->update_task(change("t-1", 5, task_state::cancelled)), errc::conflict);
  got = must(s->get_task("t-1"));
  CHECK(got.version == 2);
  CHECK(name_of(got.state) == "queued");
  CHECK(must(s->last_sequence("p1")) == 2);
  CHECK(must(s->list_attempts("t-1")).empty());

  auto bad_event = change("t-1", 2, task_state::running);
  bad_event.event.type.clear();
  expect_error(s->update_task(bad_event), errc::invalid_argument);
  bad_event = change("t-1", 2, task_state::running);
  bad_event.event.project.clear();
  expect_error(s->update_task(bad_event), errc::invalid_argument);
  auto no_id = change("", 2, task_state::running);
  expect_error(s->update_task(no_id), errc::invalid_argument);
  CHECK(must(s->get_task("t-1")).version == 2);
  CHECK(must(s->last_sequence("p1")) == 2);

  u = change("t-1", 2, task_state::running);
  u.attempt = 1;
  u.agent = "worker-1";
  u.attempt_row =
      task_attempt{"t-1", 1, "worker-1", at(21), std::nullopt, task_state::running, std::nullopt};
  CHECK(must(s->update_task(u)) == 3);
  got = must(s->get_task("t-1"));
  CHECK(got.version == 3);
  CHECK(got.attempt == 1);
  CHECK(got.agent == "worker-1");

  u = change("t-1", 3, task_state::retrying);
  u.attempt = 1;
  u.agent = "worker-1";
  u.error = aise::error(errc::timeout, "too slow");
  u.not_before = at(35);
  must(s->update_task(u));
  got = must(s->get_task("t-1"));
  REQUIRE(got.error.has_value());
  CHECK(got.error->code() == errc::timeout);
  CHECK(got.error->message() == "too slow");
  CHECK(got.not_before == at(35));

  u = change("t-1", 4, task_state::queued);  // no error, no clear: the error stays
  u.attempt = 1;
  must(s->update_task(u));
  got = must(s->get_task("t-1"));
  REQUIRE(got.error.has_value());
  CHECK(got.error->message() == "too slow");
  CHECK(got.not_before == time_point{});

  u = change("t-1", 5, task_state::running);
  u.attempt = 2;
  u.agent = "worker-2";
  u.clear_error = true;
  must(s->update_task(u));
  got = must(s->get_task("t-1"));
  CHECK_FALSE(got.error.has_value());
  CHECK(got.attempt == 2);
  CHECK(got.agent == "worker-2");

  u = change("t-1", 6, task_state::succeeded);
  u.attempt = 2;
  u.agent = "worker-2";
  u.result = nlohmann::json{{"answer", 42}};
  must(s->update_task(u));
  got = must(s->get_task("t-1"));
  CHECK(name_of(got.state) == "succeeded");
  REQUIRE(got.result.has_value());
  CHECK(*got.result == nlohmann::json{{"answer", 42}});
  CHECK(got.version == 7);
  CHECK(must(s->last_sequence("p1")) == 7);

  // A result not given is kept.
  auto r = make_task("t-2");
  r.state = task_state::running;
  r.result = nlohmann::json{{"partial", 1}};
  must(s->insert_tasks({r}, {}));
  must(s->update_task(change("t-2", 1, task_state::succeeded)));
  got = must(s->get_task("t-2"));
  REQUIRE(got.result.has_value());
  CHECK(*got.result == nlohmann::json{{"partial", 1}});
  CHECK(got.version == 2);
}

/// A change through an intermediate state: two events, one write.
inline void update_task_via_event(const store_factory& make) {
  auto s = fresh(make);
  auto t = make_task("t-1");
  t.state = task_state::pending;
  must(s->insert_tasks({t}, {draft("p1", "task.pending", "t-1")}));

  // Refused changes write nothing: a via_event in another project, one
  // without a type, and a lost compare-and-set.
  auto other_project = change("t-1", 1, task_state::running);
  other_project.via_event = draft("p2", "task.queued", "t-1");
  expect_error(s->update_task(other_project), errc::invalid_argument);
  auto no_type = change("t-1", 1, task_state::running);
  no_type.via_event = draft("p1", "", "t-1");
  expect_error(s->update_task(no_type), errc::invalid_argument);
  auto stale = change("t-1", 7, task_state::running);
  stale.via_event = draft("p1", "task.queued", "t-1");
  expect_error(s->update_task(stale), errc::conflict);
  CHECK(must(s->last_sequence("p1")) == 1);
  CHECK(must(s->read_events("p2", 0, 10)).empty());
  CHECK(must(s->get_task("t-1")).version == 1);

  auto u = change("t-1", 1, task_state::running);
  u.attempt = 1;
  u.agent = "worker-1";
  u.attempt_row =
      task_attempt{"t-1", 1, "worker-1", at(11), std::nullopt, task_state::running, std::nullopt};
  u.via_event = draft("p1", "task.queued", "t-1", {{"via", true}});
  u.via_event->at = at(9);
  CHECK(must(s->update_task(std::move(u))) == 3);
  auto log = must(s->read_events("p1", 1, 10));
  REQUIRE(log.size() == 2);
  CHECK(log[0].sequence == 2);
  CHECK(log[0].type == "task.queued");
  CHECK(log[0].subject == "t-1");
  CHECK(log[0].at == at(9));
  CHECK(log[0].data == nlohmann::json{{"via", true}});
  CHECK(log[1].sequence == 3);
  CHECK(log[1].type == "task.running");
  task got = must(s->get_task("t-1"));
  CHECK(got.version == 2);  // one change, one version
  CHECK(name_of(got.state) == "running");
  CHECK(got.agent == "worker-1");
  CHECK(must(s->list_attempts("t-1")).size() == 1);
  // The numbering goes on after the pair.
  CHECK(must(s->update_task(change("t-1", 2, task_state::succeeded))) == 4);
}

/// A batch of changes: in order, chained per task, one transaction.
inline void update_tasks_batch(const store_factory& make) {
  auto s = fresh(make);
  auto t1 = make_task("t-1");
  t1.state = task_state::pending;
  auto t2 = make_task("t-2");
  t2.state = task_state::pending;
  must(s->insert_tasks({t1, t2},
                       {draft("p1", "task.pending", "t-1"), draft("p1", "task.pending", "t-2")}));
  CHECK(must(s->update_tasks({})).empty());
  CHECK(must(s->last_sequence("p1")) == 2);

  // t-1 runs and succeeds, t-2 is queued: three changes, two of one task
  // (the second checked against the version the first leaves).
  std::vector<task_update> batch;
  auto run = change("t-1", 1, task_state::running);
  run.attempt = 1;
  run.agent = "worker-1";
  run.via_event = draft("p1", "task.queued", "t-1");
  run.attempt_row =
      task_attempt{"t-1", 1, "worker-1", at(11), std::nullopt, task_state::running, std::nullopt};
  batch.push_back(run);
  // Text that needs quoting wherever a store puts it (arrays, literals).
  const aise::error odd(errc::timeout, "a \"quoted\" \\ back{slash}, NULL,\n'é'");
  auto queue = change("t-2", 1, task_state::queued);
  queue.error = odd;
  queue.attempt_row =
      task_attempt{"t-2", 1, "worker-2", at(13), std::nullopt, task_state::failed, odd};
  batch.push_back(queue);
  auto done = change("t-1", 2, task_state::succeeded);
  done.attempt = 1;
  done.agent = "worker-1";
  done.result = nlohmann::json{{"ok", true}};
  done.attempt_row =
      task_attempt{"t-1", 1, "worker-1", at(11), at(12), task_state::succeeded, std::nullopt};
  batch.push_back(done);
  const auto copy = batch;
  auto sequences = must(s->update_tasks(batch));
  CHECK(sequences == std::vector<std::uint64_t>{4, 5, 6});
  CHECK(batch.size() == copy.size());  // the batch is left as it was
  CHECK(batch[2].result == copy[2].result);
  CHECK(batch[0].via_event.has_value());
  auto log = must(s->read_events("p1", 2, 10));
  REQUIRE(log.size() == 4);
  CHECK(log[0].type == "task.queued");
  CHECK(log[0].subject == "t-1");
  CHECK(log[1].type == "task.running");
  CHECK(log[2].subject == "t-2");
  CHECK(log[3].type == "task.succeeded");
  task got = must(s->get_task("t-1"));
  CHECK(got.version == 3);
  CHECK(name_of(got.state) == "succeeded");
  REQUIRE(got.result.has_value());
  CHECK(*got.result == nlohmann::json{{"ok", true}});
  auto attempts = must(s->list_attempts("t-1"));
  REQUIRE(attempts.size() == 1);
  CHECK(attempts[0].finished_at == at(12));
  CHECK(must(s->get_task("t-2")).version == 2);
  REQUIRE(must(s->get_task("t-2")).error.has_value());
  CHECK(must(s->get_task("t-2")).error->message() == odd.message());
  auto failed = must(s->list_attempts("t-2"));
  REQUIRE(failed.size() == 1);
  CHECK_FALSE(failed[0].finished_at.has_value());
  REQUIRE(failed[0].error.has_value());
  CHECK(failed[0].error->message() == odd.message());
  CHECK(failed[0].agent == "worker-2");

  // All or nothing: a lost compare-and-set, an unknown task or a bad draft
  // anywhere in a batch writes none of it, and no sequence is used up.
  std::vector<task_update> stale{change("t-2", 2, task_state::running),
                                 change("t-2", 2, task_state::cancelled)};
  expect_error(s->update_tasks(stale), errc::conflict);
  std::vector<task_update> unknown{change("t-2", 2, task_state::cancelled),
                                   change("t-404", 1, task_state::cancelled)};
  expect_error(s->update_tasks(unknown), errc::not_found);
  std::vector<task_update> bad{change("t-2", 2, task_state::cancelled),
                               change("t-2", 3, task_state::failed)};
  bad[1].event.type.clear();
  expect_error(s->update_tasks(bad), errc::invalid_argument);
  got = must(s->get_task("t-2"));
  CHECK(got.version == 2);
  CHECK(name_of(got.state) == "queued");
  CHECK(must(s->last_sequence("p1")) == 6);
  // The numbering goes on without a gap.
  std::vector<task_update> cancel{change("t-2", 2, task_state::cancelled)};
  CHECK(must(s->update_tasks(cancel)) == std::vector<std::uint64_t>{7});
}

/// Retention: compact() by count and by age, events and finished tasks.
inline void retention_compact(const store_factory& make) {
  using namespace std::chrono_literals;
  auto s = fresh(make);
  for (int i = 0; i < 5; ++i)
    must(s->append_event(draft("p1", "agent.heartbeat", "a", {{"i", i}})));
  for (int i = 0; i < 2; ++i)
    must(s->append_event(draft("p2", "agent.heartbeat", "a", {{"i", i}})));
  retention_policy keep3;
  keep3.max_events_per_project = 3;
  auto stats = must(s->compact(keep3));
  CHECK(stats.events_removed == 2);
  CHECK(stats.tasks_removed == 0);
  CHECK(joined(sequences_of(must(s->read_events("p1", 0, 10)))) == "3,4,5");
  CHECK(joined(sequences_of(must(s->read_events("p1", 1, 10)))) == "3,4,5");
  CHECK(joined(sequences_of(must(s->read_events("p1", 3, 10)))) == "4,5");
  CHECK(must(s->read_events("p1", 0, 10)).front().data == nlohmann::json{{"i", 2}});
  CHECK(must(s->last_sequence("p1")) == 5);  // numbering goes on
  CHECK(must(s->append_event(draft("p1", "agent.heartbeat", "a"))).sequence == 6);
  CHECK(joined(sequences_of(must(s->read_events("p2", 0, 10)))) == "1,2");

  // By age: the store's clock says what "now" is (a probe event learns it).
  auto probe = draft("probe", "agent.heartbeat", "a");
  probe.at = {};
  const time_point now = must(s->append_event(probe)).at;
  auto aged = [&](duration ago) {
    auto d = draft("p3", "agent.heartbeat", "a");
    d.at = now - ago;
    return d;
  };
  must(s->append_event(aged(3h)));
  must(s->append_event(aged(2h)));
  must(s->append_event(aged(0h)));
  retention_policy hour;
  hour.max_event_age = 1h;
  stats = must(s->compact(hour));
  // p3 loses its old prefix; the probe (now) stays. p1 and p2 hold events
  // stamped 2026-03-01, which are old or in the future depending on the
  // store's clock, so they are checked only for consistency.
  CHECK(joined(sequences_of(must(s->read_events("p3", 0, 10)))) == "3");
  CHECK(must(s->read_events("probe", 0, 10)).size() == 1);
  const auto p1_left = must(s->read_events("p1", 0, 10)).size();
  const auto p2_left = must(s->read_events("p2", 0, 10)).size();
  CHECK(stats.events_removed == 2 + (4 - p1_left) + (2 - p2_left));
  CHECK(must(s->last_sequence("p3")) == 3);

  // Finished tasks: only terminal ones go, oldest finished first, with
  // their attempts; running and queued tasks stay whatever their age.
  for (const char* id : {"t-a", "t-b", "t-c", "t-d"}) {
    auto t = make_task(id, "p4");
    t.state = task_state::queued;
    t.created_at = now - 5h;
    must(s->insert_tasks({t}, {}));
  }
  auto move = [&](const char* id, std::uint64_t version, task_state to, duration ago) {
    auto u = change(id, version, to, "p4");
    u.at = now - ago;
    u.event.at = u.at;
    if (to == task_state::running) {
      u.attempt = 1;
      u.attempt_row =
          task_attempt{id, 1, "w", u.at, std::nullopt, task_state::running, std::nullopt};
    }
    must(s->update_task(std::move(u)));
  };
  move("t-a", 1, task_state::running, 4h);
  move("t-a", 2, task_state::succeeded, 4h);  // finished first (and long ago)
  move("t-b", 1, task_state::cancelled, 3h);  // finished second (long ago)
  move("t-c", 1, task_state::running, 3h);    // old but running
  move("t-d", 1, task_state::failed, 0h);     // finished last, just now
  retention_policy keep2;
  keep2.max_finished_tasks = 2;
  stats = must(s->compact(keep2));
  CHECK(stats.tasks_removed == 1);
  CHECK(stats.events_removed == 0);
  expect_error(s->get_task("t-a"), errc::not_found);
  expect_error(s->list_attempts("t-a"), errc::not_found);
  task_filter f;
  f.project = "p4";
  CHECK(ids(all_tasks(*s, f)) == "t-b,t-c,t-d");
  retention_policy old_tasks;
  old_tasks.max_finished_task_age = 1h;
  stats = must(s->compact(old_tasks));
  CHECK(stats.tasks_removed == 1);  // t-b; t-c runs, t-d is recent
  CHECK(ids(all_tasks(*s, f)) == "t-c,t-d");
  CHECK(must(s->get_task("t-c")).attempt == 1);
  CHECK(must(s->list_attempts("t-c")).size() == 1);
  // Nothing more to drop.
  stats = must(s->compact(keep2));
  CHECK(stats.tasks_removed == 0);
  CHECK(stats.events_removed == 0);
}

inline void attempts_history(const store_factory& make) {
  auto s = fresh(make);
  must(s->insert_tasks({make_task("t-1"), make_task("t-2"), make_task("t-3")}, {}));

  auto u = change("t-1", 1, task_state::running);
  u.attempt = 1;
  u.attempt_row =
      task_attempt{"t-1", 1, "worker-a", at(1), std::nullopt, task_state::running, std::nullopt};
  must(s->update_task(u));
  auto attempts = must(s->list_attempts("t-1"));
  REQUIRE(attempts.size() == 1);
  CHECK(attempts[0].task_id == "t-1");
  CHECK(attempts[0].number == 1);
  CHECK(name_of(attempts[0].outcome) == "running");
  CHECK_FALSE(attempts[0].finished_at.has_value());

  u = change("t-1", 2, task_state::retrying);
  u.attempt = 1;
  u.attempt_row = task_attempt{
      "t-1", 1, "worker-a", at(1), at(2), task_state::failed, aise::error(errc::timeout, "slow")};
  must(s->update_task(u));
  must(s->update_task(change("t-1", 3, task_state::queued)));
  u = change("t-1", 4, task_state::running);
  u.attempt = 2;
  u.attempt_row =
      task_attempt{"t-1", 2, "worker-b", at(3), std::nullopt, task_state::running, std::nullopt};
  must(s->update_task(u));

  attempts = must(s->list_attempts("t-1"));
  REQUIRE(attempts.size() == 2);
  CHECK(attempts[0].number == 1);
  CHECK(attempts[0].agent == "worker-a");
  CHECK(attempts[0].started_at == at(1));
  REQUIRE(attempts[0].finished_at.has_value());
  CHECK(*attempts[0].finished_at == at(2));
  CHECK(name_of(attempts[0].outcome) == "failed");
  REQUIRE(attempts[0].error.has_value());
  CHECK(attempts[0].error->code() == errc::timeout);
  CHECK(attempts[0].error->message() == "slow");
  CHECK(attempts[1].number == 2);
  CHECK(attempts[1].agent == "worker-b");
  CHECK(name_of(attempts[1].outcome) == "running");
  CHECK_FALSE(attempts[1].finished_at.has_value());
  CHECK_FALSE(attempts[1].error.has_value());

  u = change("t-1", 5, task_state::succeeded);
  u.attempt = 2;
  u.attempt_row =
      task_attempt{"t-1", 2, "worker-b", at(3), at(4), task_state::succeeded, std::nullopt};
  must(s->update_task(u));
  attempts = must(s->list_attempts("t-1"));
  REQUIRE(attempts.size() == 2);
  CHECK(name_of(attempts[1].outcome) == "succeeded");
  REQUIRE(attempts[1].finished_at.has_value());
  CHECK(*attempts[1].finished_at == at(4));

  // Ordered by number whatever the write order.
  u = change("t-2", 1, task_state::running);
  u.attempt_row = task_attempt{"t-2", 3, "w", at(1), std::nullopt, task_state::running, {}};
  must(s->update_task(u));
  u = change("t-2", 2, task_state::running);
  u.attempt_row = task_attempt{"t-2", 1, "w", at(1), at(2), task_state::cancelled, {}};
  must(s->update_task(u));
  attempts = must(s->list_attempts("t-2"));
  REQUIRE(attempts.size() == 2);
  CHECK(attempts[0].number == 1);
  CHECK(attempts[1].number == 3);
  CHECK(must(s->list_attempts("t-1")).size() == 2);  // other tasks untouched

  CHECK(must(s->list_attempts("t-3")).empty());
  expect_error(s->list_attempts("t-9"), errc::not_found);
}

inline void list_tasks_filters(const store_factory& make) {
  auto s = fresh(make);
  auto t = [](std::string id, std::string project, std::string kind, std::string capability,
              task_state state, std::string parent) {
    task x = make_task(std::move(id), std::move(project), std::move(kind));
    x.capability = std::move(capability);
    x.state = state;
    x.parent = std::move(parent);
    return x;
  };
  must(s->insert_tasks({t("a-06", "p1", "sum", "", task_state::failed, ""),
                        t("a-01", "p1", "sum", "", task_state::queued, ""),
                        t("a-02", "p1", "sum", "gpu", task_state::running, "a-01"),
                        t("a-03", "p1", "gpu", "", task_state::queued, "a-01"),
                        t("a-04", "p2", "sum", "", task_state::succeeded, ""),
                        t("a-05", "p2", "tr", "sum", task_state::queued, "a-04")},
                       {}));
  auto list = [&](task_filter f) { return ids(all_tasks(*s, std::move(f))); };
  task_filter f;
  CHECK(list(f) == "a-01,a-02,a-03,a-04,a-05,a-06");

  f = {};
  f.project = "p1";
  CHECK(list(f) == "a-01,a-02,a-03,a-06");
  f.project = "p2";
  CHECK(list(f) == "a-04,a-05");
  f.project = "p3";
  CHECK(list(f).empty());

  f = {};
  f.states = {task_state::queued};
  CHECK(list(f) == "a-01,a-03,a-05");
  f.states = {task_state::running, task_state::queued};
  CHECK(list(f) == "a-01,a-02,a-03,a-05");
  f.states = {task_state::succeeded, task_state::failed};
  CHECK(list(f) == "a-04,a-06");
  f.states = {task_state::cancelled};
  CHECK(list(f).empty());

  // The effective capability: `capability` when set, else `kind`.
  f = {};
  f.capability = "sum";
  CHECK(list(f) == "a-01,a-04,a-05,a-06");
  f.capability = "gpu";
  CHECK(list(f) == "a-02,a-03");
  f.capability = "tr";
  CHECK(list(f).empty());

  f = {};
  f.parent = "a-01";
  CHECK(list(f) == "a-02,a-03");
  f.parent = "a-04";
  CHECK(list(f) == "a-05");

  f = {};
  f.project = "p1";
  f.states = {task_state::queued};
  f.capability = "gpu";
  CHECK(list(f) == "a-03");
  f = {};
  f.project = "p1";
  f.parent = "a-01";
  f.states = {task_state::running};
  CHECK(list(f) == "a-02");

  // Filters see changes.
  must(s->update_task(change("a-01", 1, task_state::running)));
  f = {};
  f.states = {task_state::queued};
  CHECK(list(f) == "a-03,a-05");
}

inline void list_tasks_paging(const store_factory& make) {
  auto s = fresh(make);
  auto id = [](int i) {
    std::string n = std::to_string(i);
    return "t-" + std::string(4 - n.size(), '0') + n;
  };
  std::vector<task> batch;
  batch.reserve(1001);
  for (int k = 0; k < 1001; ++k) {
    const int i = (k * 7919) % 1001;  // 7919 is prime to 1001: a permutation
    task t = make_task(id(i));
    t.state = i % 3 == 0 ? task_state::queued : task_state::pending;
    if (i < 200) t.capability = "first-200";
    batch.push_back(std::move(t));
  }
  must(s->insert_tasks(batch, {}));

  task_filter f;
  f.limit = 5000;  // clamped to 1000
  auto big = must(s->list_tasks(f));
  REQUIRE(big.items.size() == 1000);
  CHECK(big.items.front().id == "t-0000");
  CHECK(big.items.back().id == "t-0999");
  CHECK(big.next_cursor == "t-0999");
  f.after = big.next_cursor;
  auto rest = must(s->list_tasks(f));
  REQUIRE(rest.items.size() == 1);
  CHECK(rest.items[0].id == "t-1000");
  CHECK(rest.next_cursor.empty());

  f = {};
  f.limit = 0;  // clamped to 1
  auto one = must(s->list_tasks(f));
  REQUIRE(one.items.size() == 1);
  CHECK(one.items[0].id == "t-0000");
  CHECK(one.next_cursor == "t-0000");

  f = {};
  f.limit = 100;
  std::vector<std::string> seen;
  std::vector<std::size_t> sizes;
  for (int pages = 0; pages < 20; ++pages) {
    auto pg = must(s->list_tasks(f));
    sizes.push_back(pg.items.size());
    for (const task& t : pg.items) seen.push_back(t.id);
    if (pg.next_cursor.empty()) break;
    CHECK(pg.next_cursor == pg.items.back().id);
    f.after = pg.next_cursor;
  }
  CHECK(joined(sizes) == "100,100,100,100,100,100,100,100,100,100,1");
  CHECK(std::is_sorted(seen.begin(), seen.end()));
  CHECK(std::set<std::string>(seen.begin(), seen.end()).size() == 1001);

  // With a filter the cursor counts matches only.
  f = {};
  f.limit = 100;
  f.states = {task_state::queued};
  sizes.clear();
  std::size_t wrong_state = 0;
  for (int pages = 0; pages < 20; ++pages) {
    auto pg = must(s->list_tasks(f));
    sizes.push_back(pg.items.size());
    for (const task& t : pg.items) wrong_state += t.state == task_state::queued ? 0 : 1;
    if (pg.next_cursor.empty()) break;
    f.after = pg.next_cursor;
  }
  CHECK(joined(sizes) == "100,100,100,34");
  CHECK(wrong_state == 0);

  // Exactly `limit` matches left: that page is the last, though tasks follow.
  f = {};
  f.limit = 100;
  f.capability = "first-200";
  auto p1 = must(s->list_tasks(f));
  CHECK(p1.items.size() == 100);
  CHECK(p1.next_cursor == "t-0099");
  f.after = p1.next_cursor;
  auto p2 = must(s->list_tasks(f));
  CHECK(p2.items.size() == 100);
  CHECK(p2.items.back().id == "t-0199");
  CHECK(p2.next_cursor.empty());

  f = {};
  f.after = "t-0499x";  // a cursor need not exist
  f.limit = 2;
  CHECK(ids(must(s->list_tasks(f)).items) == "t-0500,t-0501");

  // Inserts between listings land in id order wherever their ids fall:
  // before, between and after the listed ones, in ascending and shuffled batches.
  must(s->insert_tasks({make_task("t-0500a"), make_task("t-0500b")}, {}));
  must(s->insert_tasks({make_task("t-9999"), make_task("s-first"), make_task("t-0001a")}, {}));
  f = {};
  f.after = "t-0499";
  f.limit = 4;
  CHECK(ids(must(s->list_tasks(f)).items) == "t-0500,t-0500a,t-0500b,t-0501");
  must(s->insert_tasks({make_task("t-0500c")}, {}));
  f.after = "t-0500a";
  CHECK(ids(must(s->list_tasks(f)).items) == "t-0500b,t-0500c,t-0501,t-0502");
  f = {};
  f.limit = 3;
  CHECK(ids(must(s->list_tasks(f)).items) == "s-first,t-0000,t-0001");
  f.after = "t-0001";
  CHECK(ids(must(s->list_tasks(f)).items) == "t-0001a,t-0002,t-0003");
  auto everything = all_tasks(*s, {});
  REQUIRE(everything.size() == 1007);
  CHECK(everything.back().id == "t-9999");
  std::vector<std::string> in_order;
  for (const task& t : everything) in_order.push_back(t.id);
  CHECK(std::is_sorted(in_order.begin(), in_order.end()));
}

inline void events_numbering(const store_factory& make) {
  auto s = fresh(make);
  CHECK(must(s->append_event(draft("p1", "agent.started", "a-1", {{"n", 1}}))).sequence == 1);
  CHECK(must(s->append_event(draft("p2", "agent.started", "b-1"))).sequence == 1);
  CHECK(must(s->append_event(draft("p1", "agent.stopped", "a-1", {{"n", 2}}))).sequence == 2);
  auto third = draft("p1", "agent.failed", "a-2", {{"n", 3}});
  third.at = at(7);
  event e3 = must(s->append_event(third));
  CHECK(e3.sequence == 3);
  CHECK(e3.at == at(7));
  CHECK(must(s->append_event(draft("p2", "agent.stopped", "b-1"))).sequence == 2);

  CHECK(must(s->last_sequence("p1")) == 3);
  CHECK(must(s->last_sequence("p2")) == 2);
  CHECK(must(s->last_sequence("p3")) == 0);

  auto all = must(s->read_events("p1", 0, 100));
  REQUIRE(all.size() == 3);
  CHECK(joined(sequences_of(all)) == "1,2,3");
  CHECK(all[0].type == "agent.started");
  CHECK(all[1].type == "agent.stopped");
  CHECK(all[2].type == "agent.failed");
  CHECK(all[2].project == "p1");
  CHECK(all[2].subject == "a-2");
  CHECK(all[2].at == at(7));
  CHECK(all[2].data == nlohmann::json{{"n", 3}});

  CHECK(joined(sequences_of(must(s->read_events("p1", 0, 2)))) == "1,2");
  CHECK(joined(sequences_of(must(s->read_events("p1", 1, 1)))) == "2");
  CHECK(joined(sequences_of(must(s->read_events("p1", 2, 10)))) == "3");
  CHECK(must(s->read_events("p1", 3, 10)).empty());
  CHECK(must(s->read_events("p1", 100, 10)).empty());
  CHECK(must(s->read_events("p1", 0, std::numeric_limits<std::size_t>::max())).size() == 3);
  CHECK(must(s->read_events("p3", 0, 10)).empty());
  CHECK(joined(sequences_of(must(s->read_events("p2", 0, 10)))) == "1,2");

  // Task writes share the project's numbering.
  auto inserted = must(s->insert_tasks({make_task("t-1")}, {draft("p1", "task.queued", "t-1")}));
  CHECK(joined(inserted) == "4");
  CHECK(must(s->update_task(change("t-1", 1, task_state::running))) == 5);
  CHECK(must(s->append_event(draft("p1", "agent.started", "a-3"))).sequence == 6);
  CHECK(must(s->last_sequence("p1")) == 6);
  auto tail = must(s->read_events("p1", 3, 10));
  REQUIRE(tail.size() == 3);
  CHECK(tail[0].type == "task.queued");
  CHECK(tail[1].type == "task.running");
  CHECK(tail[1].subject == "t-1");
  CHECK(tail[2].type == "agent.started");
  CHECK(must(s->last_sequence("p2")) == 2);

  expect_error(s->append_event(draft("", "agent.started")), errc::invalid_argument);
  expect_error(s->append_event(draft("p1", "")), errc::invalid_argument);
  CHECK(must(s->last_sequence("p1")) == 6);
}

inline void concurrent_sequences(const store_factory& make) {
  constexpr int threads = 8;
  constexpr int ops = 200;  // per thread: 100 appends and 100 task updates, interleaved
  auto s = fresh(make);
  std::vector<task> tasks;
  tasks.reserve(threads);
  for (int t = 0; t < threads; ++t) tasks.push_back(make_task("c-" + std::to_string(t), "conc"));
  must(s->insert_tasks(tasks, {}));

  struct outcome {
    std::vector<std::uint64_t> sequences;
    std::vector<std::string> errors;
  };
  std::vector<outcome> outcomes(threads);
  std::latch start(threads);
  std::vector<std::thread> workers;
  workers.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      outcome& out = outcomes[static_cast<std::size_t>(t)];
      out.sequences.reserve(ops);
      const std::string id = "c-" + std::to_string(t);
      // queued → running → retrying → queued …: legal transitions only.
      const task_state cycle[] = {task_state::running, task_state::retrying, task_state::queued};
      std::uint64_t version = 1;
      start.arrive_and_wait();
      for (int i = 0; i < ops; ++i) {
        result<std::uint64_t> r = fail(errc::internal, "not run");
        if (i % 2 == 0) {
          auto appended = s->append_event(draft("conc", "agent.heartbeat", id, {{"i", i}}));
          if (appended.ok())
            r = appended->sequence;
          else
            r = appended.error();
        } else {
          auto u = change(id, version, cycle[(version - 1) % 3], "conc");
          u.event.data = {{"i", i}};
          r = s->update_task(u);
          if (r.ok()) ++version;
        }
        if (r.ok())
          out.sequences.push_back(*r);
        else
          out.errors.push_back(r.error().describe());
      }
    });
  }
  for (auto& w : workers) w.join();

  std::vector<std::uint64_t> all;
  for (int t = 0; t < threads; ++t) {
    const outcome& out = outcomes[static_cast<std::size_t>(t)];
    const std::string first_error = out.errors.empty() ? std::string() : out.errors.front();
    CHECK_MESSAGE(out.errors.empty(), first_error);
    CHECK(out.sequences.size() == static_cast<std::size_t>(ops));
    // One thread's writes commit in its program order.
    CHECK(std::is_sorted(out.sequences.begin(), out.sequences.end()));
    all.insert(all.end(), out.sequences.begin(), out.sequences.end());
  }
  std::sort(all.begin(), all.end());
  CHECK(gap_in(all, static_cast<std::size_t>(threads) * ops) == "");  // exactly 1 … 1600

  CHECK(must(s->last_sequence("conc")) == static_cast<std::uint64_t>(threads * ops));
  auto log = must(s->read_events("conc", 0, std::numeric_limits<std::size_t>::max()));
  REQUIRE(log.size() == static_cast<std::size_t>(threads * ops));
  std::size_t misnumbered = 0;
  std::vector<int> last_i(threads, -1);
  std::size_t out_of_order = 0;
  for (std::size_t k = 0; k < log.size(); ++k) {
    if (log[k].sequence != k + 1) ++misnumbered;
    const int t = std::stoi(log[k].subject.substr(2));
    const int i = log[k].data.at("i").get<int>();
    if (i <= last_i[static_cast<std::size_t>(t)]) ++out_of_order;
    last_i[static_cast<std::size_t>(t)] = i;
  }
  CHECK(misnumbered == 0);
  CHECK(out_of_order == 0);  // the log holds each thread's writes in its order
  for (int t = 0; t < threads; ++t)
    CHECK(must(s->get_task("c-" + std::to_string(t))).version == 1 + ops / 2);
}

inline void concurrent_compare_and_set(const store_factory& make) {
  constexpr int threads = 8;
  constexpr int rounds = 100;
  auto s = fresh(make);
  must(s->insert_tasks({make_task("race", "conc")}, {draft("conc", "task.queued", "race")}));

  // Round r: every thread tries version r + 1 at once; exactly one may win.
  std::vector<std::atomic<int>> wins(rounds);
  std::atomic<int> conflicts{0};
  std::mutex errors_mutex;
  std::vector<std::string> errors;
  std::barrier round_start(threads);
  std::vector<std::thread> workers;
  workers.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int r = 0; r < rounds; ++r) {
        const task_state to = r % 2 == 0 ? task_state::running : task_state::retrying;
        auto u = change("race", static_cast<std::uint64_t>(r) + 1, to, "conc");
        u.agent = "w-" + std::to_string(t);
        u.event.data = {{"round", r}, {"thread", t}};
        round_start.arrive_and_wait();
        auto res = s->update_task(u);
        if (res.ok()) {
          wins[static_cast<std::size_t>(r)].fetch_add(1);
        } else if (res.error().code() == errc::conflict) {
          conflicts.fetch_add(1);
        } else {
          std::lock_guard lock(errors_mutex);
          errors.push_back(res.error().describe());
        }
      }
    });
  }
  for (auto& w : workers) w.join();

  const std::string first_error = errors.empty() ? std::string() : errors.front();
  CHECK_MESSAGE(errors.empty(), first_error);
  int rounds_with_one_winner = 0;
  for (auto& w : wins) rounds_with_one_winner += w.load() == 1 ? 1 : 0;
  CHECK(rounds_with_one_winner == rounds);
  CHECK(conflicts.load() == rounds * (threads - 1));

  task got = must(s->get_task("race"));
  CHECK(got.version == 1 + rounds);
  auto log = must(s->read_events("conc", 1, std::numeric_limits<std::size_t>::max()));
  REQUIRE(log.size() == static_cast<std::size_t>(rounds));
  int rounds_in_order = 0;
  for (int r = 0; r < rounds; ++r)
    rounds_in_order += log[static_cast<std::size_t>(r)].data.at("round").get<int>() == r ? 1 : 0;
  CHECK(rounds_in_order == rounds);
  CHECK(got.agent == "w-" + std::to_string(log.back().data.at("thread").get<int>()));
}

inline void concurrent_unique_writes(const store_factory& make) {
  constexpr int threads = 8;
  auto s = fresh(make);

  // The same project id from every thread: exactly one creation succeeds.
  std::atomic<int> created{0};
  std::atomic<int> existed{0};
  std::atomic<int> other{0};
  {
    std::latch start(threads);
    std::vector<std::thread> workers;
    workers.reserve(threads);
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        project p;
        p.id = "shared";
        p.name = "by " + std::to_string(t);
        start.arrive_and_wait();
        auto r = s->create_project(p);
        if (r.ok())
          created.fetch_add(1);
        else if (r.error().code() == errc::already_exists)
          existed.fetch_add(1);
        else
          other.fetch_add(1);
      });
    }
    for (auto& w : workers) w.join();
  }
  CHECK(created.load() == 1);
  CHECK(existed.load() == threads - 1);
  CHECK(other.load() == 0);

  // Artifact versions of one (project, name) under contention: 1 … 100.
  constexpr int writers = 4;
  constexpr int per_writer = 25;
  std::vector<std::vector<int>> versions(writers);
  std::atomic<int> failures{0};
  {
    std::latch start(writers);
    std::vector<std::thread> workers;
    workers.reserve(writers);
    for (int t = 0; t < writers; ++t) {
      workers.emplace_back([&, t] {
        start.arrive_and_wait();
        for (int i = 0; i < per_writer; ++i) {
          artifact_meta a;
          a.id = "art-" + std::to_string(t) + "-" + std::to_string(i);
          a.project = "p1";
          a.name = "log.txt";
          auto r = s->put_artifact(a);
          if (r.ok())
            versions[static_cast<std::size_t>(t)].push_back(r->version);
          else
            failures.fetch_add(1);
        }
      });
    }
    for (auto& w : workers) w.join();
  }
  CHECK(failures.load() == 0);
  std::vector<int> all;
  for (const auto& v : versions) {
    CHECK(std::is_sorted(v.begin(), v.end()));
    all.insert(all.end(), v.begin(), v.end());
  }
  std::sort(all.begin(), all.end());
  constexpr std::size_t total = static_cast<std::size_t>(writers) * per_writer;
  CHECK(gap_in(all, total) == "");
  auto history = must(s->artifact_versions("p1", "log.txt"));
  REQUIRE(history.size() == total);
  CHECK(history.front().version == 1);
  CHECK(history.back().version == writers * per_writer);
  auto latest = must(s->list_artifacts("p1"));
  REQUIRE(latest.size() == 1);
  CHECK(latest[0].version == writers * per_writer);
}

inline void artifacts_versions(const store_factory& make) {
  auto s = fresh(make);
  auto art = [](std::string id, std::string project, std::string name) {
    artifact_meta a;
    a.id = std::move(id);
    a.project = std::move(project);
    a.name = std::move(name);
    a.task = "t-1";
    a.media_type = "text/plain";
    a.size = 1234;
    a.sha256 = std::string(64, 'a');
    a.created_at = at(5);
    a.version = 99;  // assigned by the store
    return a;
  };
  CHECK(must(s->put_artifact(art("a-1", "p1", "report"))).version == 1);
  CHECK(must(s->put_artifact(art("a-2", "p1", "report"))).version == 2);
  CHECK(must(s->put_artifact(art("a-4", "p1", "data"))).version == 1);
  CHECK(must(s->put_artifact(art("a-3", "p1", "report"))).version == 3);
  CHECK(must(s->put_artifact(art("b-1", "p2", "report"))).version == 1);

  auto latest = must(s->list_artifacts("p1"));
  REQUIRE(latest.size() == 2);
  CHECK(latest[0].name == "data");
  CHECK(latest[0].version == 1);
  CHECK(latest[1].name == "report");
  CHECK(latest[1].version == 3);
  CHECK(latest[1].id == "a-3");

  auto history = must(s->artifact_versions("p1", "report"));
  REQUIRE(history.size() == 3);
  CHECK(ids(history) == "a-1,a-2,a-3");
  CHECK(history[0].version == 1);
  CHECK(history[1].version == 2);
  CHECK(history[2].version == 3);
  CHECK(must(s->artifact_versions("p1", "nothing")).empty());
  CHECK(must(s->artifact_versions("p3", "report")).empty());

  auto p2 = must(s->list_artifacts("p2"));
  REQUIRE(p2.size() == 1);
  CHECK(p2[0].id == "b-1");
  CHECK(p2[0].version == 1);
  CHECK(must(s->list_artifacts("p3")).empty());

  artifact_meta got = must(s->get_artifact("a-2"));
  CHECK(got.id == "a-2");
  CHECK(got.project == "p1");
  CHECK(got.task == "t-1");
  CHECK(got.name == "report");
  CHECK(got.media_type == "text/plain");
  CHECK(got.size == 1234);
  CHECK(got.sha256 == std::string(64, 'a'));
  CHECK(got.version == 2);
  CHECK(got.created_at == at(5));

  auto unset = art("a-5", "p1", "notes");
  unset.created_at = {};
  CHECK(must(s->put_artifact(unset)).created_at != time_point{});

  expect_error(s->put_artifact(art("a-1", "p1", "other")), errc::already_exists);
  CHECK(must(s->artifact_versions("p1", "other")).empty());
  expect_error(s->get_artifact("a-9"), errc::not_found);
  expect_error(s->put_artifact(art("", "p1", "report")), errc::invalid_argument);
  expect_error(s->put_artifact(art("a-6", "", "report")), errc::invalid_argument);
  CHECK(must(s->artifact_versions("p1", "report")).size() == 3);

  // Digests in use, across projects and versions (the garbage collector's question).
  auto other = art("c-1", "p3", "blob");
  other.sha256 = std::string(64, 'c');
  must(s->put_artifact(other));
  CHECK(must(s->artifact_digest_in_use(std::string(64, 'a'))));
  CHECK(must(s->artifact_digest_in_use(std::string(64, 'c'))));
  CHECK_FALSE(must(s->artifact_digest_in_use(std::string(64, 'b'))));
  CHECK_FALSE(must(s->artifact_digest_in_use("")));
}

inline void budgets(const store_factory& make) {
  auto s = fresh(make);
  auto missing = s->get_budget("llm.tokens.project.p1");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code() == errc::not_found);
  CHECK(s->set_budget_limit("", 10).error().code() == errc::invalid_argument);
  CHECK(s->set_budget_limit("k", -1).error().code() == errc::invalid_argument);
  CHECK(s->charge_budget("", 1, false).error().code() == errc::invalid_argument);

  auto b = must(s->set_budget_limit("llm.tokens.project.p1", 100));
  CHECK(b.key == "llm.tokens.project.p1");
  CHECK(b.limit == 100);
  CHECK(b.spent == 0);
  CHECK(must(s->charge_budget("llm.tokens.project.p1", 60, true)).spent == 60);
  auto over = s->charge_budget("llm.tokens.project.p1", 41, true);
  REQUIRE_FALSE(over.ok());
  CHECK(over.error().code() == errc::limit_exceeded);
  CHECK(must(s->get_budget("llm.tokens.project.p1")).spent == 60);                // nothing added
  CHECK(must(s->charge_budget("llm.tokens.project.p1", 40, true)).spent == 100);  // exactly fits
  CHECK(must(s->charge_budget("llm.tokens.project.p1", -30, true)).spent == 70);  // a refund
  // Without within_limit the charge is recorded (actual usage beyond a reservation).
  CHECK(must(s->charge_budget("llm.tokens.project.p1", 50, false)).spent == 120);
  // Raising the limit keeps what was spent; 0 removes the limit.
  CHECK(must(s->set_budget_limit("llm.tokens.project.p1", 200)).spent == 120);
  CHECK(must(s->set_budget_limit("llm.tokens.project.p1", 0)).limit == 0);
  CHECK(must(s->charge_budget("llm.tokens.project.p1", 1000, true)).spent == 1120);
  // A counter charged first has no limit.
  auto fresh_counter = must(s->charge_budget("llm.cost.provider.openai", 7, true));
  CHECK(fresh_counter.limit == 0);
  CHECK(fresh_counter.spent == 7);

  // Concurrent charges: exactly those fitting under the limit succeed.
  must(s->set_budget_limit("shared", 50));
  constexpr int threads = 8;
  std::atomic<int> granted{0}, refused{0}, other{0};
  {
    std::latch start(threads);
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&] {
        start.arrive_and_wait();
        for (int i = 0; i < 5; ++i) {
          auto r = s->charge_budget("shared", 3, true);
          if (r.ok())
            granted.fetch_add(1);
          else if (r.error().code() == errc::limit_exceeded)
            refused.fetch_add(1);
          else
            other.fetch_add(1);
        }
      });
    }
    for (auto& w : workers) w.join();
  }
  CHECK(other.load() == 0);
  CHECK(granted.load() == 16);  // 16 × 3 = 48 ≤ 50 < 51
  CHECK(refused.load() == threads * 5 - 16);
  CHECK(must(s->get_budget("shared")).spent == 48);
}

// ---------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------

/// Inserts task `id` as `running` attempt `attempt` (version 1).
inline void insert_running(store& s, const std::string& id, int attempt) {
  task t = make_task(id);
  t.state = task_state::running;
  t.attempt = attempt;
  must(s.insert_tasks({t}, {}));
}

inline lease_key key_of(const std::string& id, int attempt) {
  return lease_key{id, attempt};
}

/// "t-1#1,t-2#3": keys compared as text, so a failure prints both sides.
inline std::string keys_text(const std::vector<lease_key>& keys) {
  std::vector<std::string> out;
  out.reserve(keys.size());
  for (const lease_key& k : keys) out.push_back(k.task_id + "#" + std::to_string(k.attempt));
  return joined(out);
}

/// "t-1#1:held:w1,…": rows compared as text.
inline std::string leases_text(const std::vector<task_lease>& leases) {
  std::vector<std::string> out;
  out.reserve(leases.size());
  for (const task_lease& l : leases)
    out.push_back(l.task_id + "#" + std::to_string(l.attempt) + ":" +
                  std::string(to_string(l.state)) + ":" + l.worker);
  return joined(out);
}

inline void leases_acquire_and_renew(const store_factory& make) {
  using namespace std::chrono_literals;
  auto s = fresh(make);
  insert_running(*s, "t-1", 1);
  insert_running(*s, "t-2", 1);
  insert_running(*s, "t-3", 2);
  auto queued = make_task("t-q");
  must(s->insert_tasks({queued}, {}));

  // The task row decides first: unknown, not running, or another attempt.
  expect_error(s->acquire_lease(key_of("nope", 1), "w1", at(100), 30s), errc::not_found);
  expect_error(s->acquire_lease(key_of("t-q", 1), "w1", at(100), 30s), errc::conflict);
  expect_error(s->acquire_lease(key_of("t-3", 1), "w1", at(100), 30s), errc::conflict);
  expect_error(s->acquire_lease(key_of("t-1", 2), "w1", at(100), 30s), errc::conflict);
  // Arguments no attempt can have.
  expect_error(s->acquire_lease(key_of("t-1", 1), "", at(100), 30s), errc::invalid_argument);
  expect_error(s->acquire_lease(key_of("t-1", 0), "w1", at(100), 30s), errc::invalid_argument);
  expect_error(s->acquire_lease(key_of("", 1), "w1", at(100), 30s), errc::invalid_argument);
  expect_error(s->acquire_lease(key_of("t-1", 1), "w1", at(100), 0s), errc::invalid_argument);
  expect_error(s->acquire_lease(key_of("t-1", 1), "w1", at(100), -1s), errc::invalid_argument);
  CHECK(must(s->get_leases({"t-1", "t-q", "nope"})).empty());  // nothing written

  task_lease l = must(s->acquire_lease(key_of("t-1", 1), "w1", at(100), 30s));
  CHECK(l.task_id == "t-1");
  CHECK(l.attempt == 1);
  CHECK(l.worker == "w1");
  CHECK(l.state == lease_state::held);
  CHECK(l.acquired_at == at(100));
  CHECK(l.expires_at == at(130));
  CHECK(l.ended_at == time_point{});
  CHECK_FALSE(l.outcome.has_value());
  auto stored = must(s->get_leases({"t-1"}));
  REQUIRE(stored.size() == 1);
  CHECK(stored[0].worker == "w1");
  CHECK(stored[0].state == lease_state::held);
  CHECK(stored[0].acquired_at == at(100));
  CHECK(stored[0].expires_at == at(130));
  CHECK(stored[0].ended_at == time_point{});
  CHECK_FALSE(stored[0].outcome.has_value());
  CHECK(must(s->get_task("t-1")).version == 1);  // the task row is not written

  // Delivered again to the same worker: renewed. Another worker: conflict.
  l = must(s->acquire_lease(key_of("t-1", 1), "w1", at(110), 30s));
  CHECK(l.state == lease_state::held);
  CHECK(l.acquired_at == at(100));
  CHECK(l.expires_at == at(140));
  expect_error(s->acquire_lease(key_of("t-1", 1), "w2", at(111), 30s), errc::conflict);
  CHECK(must(s->get_leases({"t-1"})).at(0).worker == "w1");

  // Heartbeats: the keys no longer held by the worker come back, in order.
  must(s->acquire_lease(key_of("t-2", 1), "w1", at(100), 30s));
  must(s->acquire_lease(key_of("t-3", 2), "w2", at(100), 30s));
  auto gone = must(s->renew_leases(
      "w1",
      {key_of("t-1", 1), key_of("nope", 1), key_of("t-2", 1), key_of("t-1", 2), key_of("t-3", 2)},
      at(120), 30s));
  CHECK(keys_text(gone) == "nope#1,t-1#2,t-3#2");
  auto rows = must(s->get_leases({"t-1", "t-2", "t-3"}));
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].expires_at == at(150));
  CHECK(rows[1].expires_at == at(150));
  CHECK(rows[2].expires_at == at(130));  // w2's lease: untouched
  // A lease past its expiry is still the worker's until the scheduler ends it.
  CHECK(must(s->renew_leases("w2", {key_of("t-3", 2)}, at(200), 30s)).empty());
  CHECK(must(s->get_leases({"t-3"})).at(0).expires_at == at(230));

  // Ended by the scheduler (lost or revoked): the worker hears it on its next heartbeat.
  CHECK(must(s->end_lease(key_of("t-2", 1), lease_state::revoked, at(125), false)).state ==
        lease_state::revoked);
  CHECK(must(s->end_lease(key_of("t-3", 2), lease_state::lost, at(300), true)).state ==
        lease_state::lost);
  CHECK(keys_text(must(
            s->renew_leases("w1", {key_of("t-1", 1), key_of("t-2", 1)}, at(130), 30s))) == "t-2#1");
  CHECK(keys_text(must(s->renew_leases("w2", {key_of("t-3", 2)}, at(300), 30s))) == "t-3#2");
  rows = must(s->get_leases({"t-2"}));
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].expires_at == at(150));  // a revoked lease is not renewed
  CHECK(rows[0].ended_at == at(125));

  CHECK(must(s->renew_leases("w1", {}, at(130), 30s)).empty());
  expect_error(s->renew_leases("", {key_of("t-1", 1)}, at(130), 30s), errc::invalid_argument);
  expect_error(s->renew_leases("w1", {key_of("t-1", 1)}, at(130), 0s), errc::invalid_argument);
  CHECK(must(s->get_leases({"t-1"})).at(0).expires_at == at(160));
}

inline void leases_in_batches(const store_factory& make) {
  using namespace std::chrono_literals;
  auto s = fresh(make);
  insert_running(*s, "b-1", 1);
  insert_running(*s, "b-2", 1);
  insert_running(*s, "b-3", 2);
  must(s->acquire_lease(key_of("b-2", 1), "other", at(100), 30s));
  // One result per key, in order, each as acquire_lease would answer.
  auto got = s->acquire_leases({key_of("b-3", 2), key_of("nope", 1), key_of("b-2", 1),
                                key_of("b-1", 1), key_of("b-3", 1), key_of("", 1)},
                               "w1", at(100), 30s);
  REQUIRE(got.size() == 6);
  REQUIRE(got[0].ok());
  CHECK(got[0]->task_id == "b-3");
  CHECK(got[0]->attempt == 2);
  CHECK(got[0]->worker == "w1");
  CHECK(got[0]->expires_at == at(130));
  expect_error(got[1], errc::not_found);
  expect_error(got[2], errc::conflict);  // held by another worker
  REQUIRE(got[3].ok());
  CHECK(got[3]->task_id == "b-1");
  expect_error(got[4], errc::conflict);  // not that attempt
  expect_error(got[5], errc::invalid_argument);
  CHECK(s->acquire_leases({}, "w1", at(100), 30s).empty());
  // Taken again by the same worker: renewed, as with acquire_lease.
  auto again = s->acquire_leases({key_of("b-1", 1)}, "w1", at(110), 30s);
  REQUIRE(again.size() == 1);
  REQUIRE(again[0].ok());
  CHECK(again[0]->expires_at == at(140));

  must(s->end_lease(key_of("b-3", 2), lease_state::revoked, at(111), false));
  auto done = s->finish_leases({{key_of("b-1", 1), nlohmann::json{{"n", 1}}},
                                {key_of("b-3", 2), nlohmann::json{{"n", 3}}},
                                {key_of("b-2", 1), nlohmann::json{{"n", 2}}},
                                {key_of("nope", 1), nlohmann::json{{"n", 0}}}},
                               "w1", at(120));
  REQUIRE(done.size() == 4);
  REQUIRE(done[0].ok());
  CHECK(done[0]->state == lease_state::done);
  CHECK(done[0]->outcome == nlohmann::json{{"n", 1}});
  expect_error(done[1], errc::conflict);   // revoked first
  expect_error(done[2], errc::conflict);   // another worker's
  expect_error(done[3], errc::not_found);  // no such lease
  // Finishing again is idempotent and keeps the first outcome.
  auto repeat = s->finish_leases({{key_of("b-1", 1), nlohmann::json{{"n", 9}}}}, "w1", at(130));
  REQUIRE(repeat.size() == 1);
  REQUIRE(repeat[0].ok());
  CHECK(repeat[0]->outcome == nlohmann::json{{"n", 1}});
  auto stored = must(s->get_leases({"b-1", "b-2", "b-3"}));
  REQUIRE(stored.size() == 3);
  CHECK(stored[0].state == lease_state::done);
  CHECK(stored[1].state == lease_state::held);
  CHECK(stored[1].worker == "other");
  CHECK(stored[2].state == lease_state::revoked);
}

inline void leases_finish_and_end(const store_factory& make) {
  using namespace std::chrono_literals;
  auto s = fresh(make);
  for (const char* id : {"t-1", "t-2", "t-3", "t-4"}) insert_running(*s, id, 1);
  const nlohmann::json first = {{"state", "succeeded"}, {"result", {{"answer", 42}}}};
  const nlohmann::json second = {{"state", "failed"}};

  // finish: held → done with the outcome, even past the expiry; then idempotent.
  expect_error(s->finish_lease(key_of("t-1", 1), "w1", first, at(100)), errc::not_found);
  expect_error(s->finish_lease(key_of("nope", 1), "w1", first, at(100)), errc::not_found);
  must(s->acquire_lease(key_of("t-1", 1), "w1", at(100), 30s));
  expect_error(s->finish_lease(key_of("t-1", 1), "w2", first, at(140)), errc::conflict);
  expect_error(s->finish_lease(key_of("t-1", 1), "", first, at(140)), errc::invalid_argument);
  expect_error(s->finish_lease(key_of("t-1", 0), "w1", first, at(140)), errc::invalid_argument);
  task_lease l = must(s->finish_lease(key_of("t-1", 1), "w1", first, at(140)));
  CHECK(l.state == lease_state::done);
  CHECK(l.worker == "w1");
  CHECK(l.ended_at == at(140));
  REQUIRE(l.outcome.has_value());
  CHECK(*l.outcome == first);
  l = must(s->finish_lease(key_of("t-1", 1), "w1", second, at(150)));
  CHECK(l.state == lease_state::done);
  CHECK(l.ended_at == at(140));
  REQUIRE(l.outcome.has_value());
  CHECK(*l.outcome == first);  // the first outcome stays
  expect_error(s->finish_lease(key_of("t-1", 1), "w2", second, at(150)), errc::conflict);
  expect_error(s->acquire_lease(key_of("t-1", 1), "w1", at(150), 30s), errc::conflict);
  // The scheduler cannot take a done attempt back.
  l = must(s->end_lease(key_of("t-1", 1), lease_state::revoked, at(160), false));
  CHECK(l.state == lease_state::done);
  CHECK(l.ended_at == at(140));
  REQUIRE(l.outcome.has_value());
  CHECK(*l.outcome == first);
  auto stored = must(s->get_leases({"t-1"}));
  REQUIRE(stored.size() == 1);
  CHECK(stored[0].state == lease_state::done);
  REQUIRE(stored[0].outcome.has_value());
  CHECK(*stored[0].outcome == first);

  // Lost first: the worker's outcome does not count.
  must(s->acquire_lease(key_of("t-2", 1), "w1", at(100), 30s));
  l = must(s->end_lease(key_of("t-2", 1), lease_state::lost, at(131), true));
  CHECK(l.state == lease_state::lost);
  CHECK(l.worker == "w1");
  CHECK(l.ended_at == at(131));
  expect_error(s->finish_lease(key_of("t-2", 1), "w1", first, at(132)), errc::conflict);
  l = must(s->end_lease(key_of("t-2", 1), lease_state::revoked, at(140), false));
  CHECK(l.state == lease_state::lost);  // already ended: unchanged
  CHECK(l.ended_at == at(131));
  CHECK_FALSE(must(s->get_leases({"t-2"})).at(0).outcome.has_value());

  // Ended before anyone took it: a row without a worker that no delivery can take.
  l = must(s->end_lease(key_of("t-3", 1), lease_state::revoked, at(100), true));
  CHECK(l.task_id == "t-3");
  CHECK(l.attempt == 1);
  CHECK(l.state == lease_state::revoked);
  CHECK(l.worker.empty());
  CHECK(l.ended_at == at(100));
  expect_error(s->acquire_lease(key_of("t-3", 1), "w1", at(101), 30s), errc::conflict);
  expect_error(s->finish_lease(key_of("t-3", 1), "w1", first, at(102)), errc::conflict);
  CHECK(keys_text(must(s->renew_leases("w1", {key_of("t-3", 1)}, at(103), 30s))) == "t-3#1");
  CHECK(leases_text(must(s->get_leases({"t-3"}))) == "t-3#1:revoked:");

  // only_if_expired: a live lease is left alone, an expired one ends.
  must(s->acquire_lease(key_of("t-4", 1), "w1", at(100), 30s));
  l = must(s->end_lease(key_of("t-4", 1), lease_state::lost, at(120), true));
  CHECK(l.state == lease_state::held);
  CHECK(l.expires_at == at(130));
  CHECK(l.ended_at == time_point{});
  CHECK(must(s->end_lease(key_of("t-4", 1), lease_state::lost, at(130), true)).state ==
        lease_state::held);  // expires_at < now, strictly
  must(s->renew_leases("w1", {key_of("t-4", 1)}, at(125), 30s));
  CHECK(must(s->end_lease(key_of("t-4", 1), lease_state::lost, at(150), true)).state ==
        lease_state::held);  // renewed until 155
  l = must(s->end_lease(key_of("t-4", 1), lease_state::lost, at(156), true));
  CHECK(l.state == lease_state::lost);
  CHECK(l.ended_at == at(156));
  CHECK(l.expires_at == at(155));

  // end_lease arguments.
  expect_error(s->end_lease(key_of("t-1", 1), lease_state::held, at(1), false),
               errc::invalid_argument);
  expect_error(s->end_lease(key_of("t-1", 1), lease_state::done, at(1), false),
               errc::invalid_argument);
  expect_error(s->end_lease(key_of("t-1", 0), lease_state::lost, at(1), false),
               errc::invalid_argument);
  expect_error(s->end_lease(key_of("", 1), lease_state::lost, at(1), false),
               errc::invalid_argument);
  // A lease belongs to a task: none is made for an unknown one.
  expect_error(s->end_lease(key_of("nope", 1), lease_state::revoked, at(1), false),
               errc::not_found);
  CHECK(must(s->get_leases({"nope"})).empty());
}

inline void leases_listing_and_retention(const store_factory& make) {
  using namespace std::chrono_literals;
  auto s = fresh(make);
  insert_running(*s, "t-b", 2);
  insert_running(*s, "t-a", 1);
  insert_running(*s, "t-c", 1);
  must(s->acquire_lease(key_of("t-b", 2), "w2", at(100), 30s));
  must(s->end_lease(key_of("t-b", 3), lease_state::lost, at(100), false));
  must(s->end_lease(key_of("t-b", 1), lease_state::revoked, at(100), false));
  must(s->acquire_lease(key_of("t-a", 1), "w1", at(100), 30s));
  must(s->acquire_lease(key_of("t-c", 1), "w1", at(100), 30s));

  // Ordered by task id, then attempt; each task once; unknown ids skipped.
  CHECK(leases_text(must(s->get_leases({"t-b", "nope", "t-a", "t-b"}))) ==
        "t-a#1:held:w1,t-b#1:revoked:,t-b#2:held:w2,t-b#3:lost:");
  CHECK(must(s->get_leases({})).empty());
  std::vector<std::string> many;
  for (int i = 0; i < 999; ++i) many.push_back("a-" + std::to_string(i));  // sort before t-c
  many.push_back("t-c");
  CHECK(leases_text(must(s->get_leases(many))) == "t-c#1:held:w1");  // 1,000: the limit
  many.push_back("t-a");
  expect_error(s->get_leases(many), errc::invalid_argument);

  // Retention drops a finished task's lease rows with it.
  must(s->finish_lease(key_of("t-a", 1), "w1", {{"state", "succeeded"}}, at(110)));
  must(s->update_task(change("t-a", 1, task_state::succeeded)));
  auto later = make_task("t-z");
  later.state = task_state::succeeded;
  later.updated_at = at(1000);
  must(s->insert_tasks({later}, {}));
  retention_policy keep1;
  keep1.max_finished_tasks = 1;
  CHECK(must(s->compact(keep1)).tasks_removed == 1);
  expect_error(s->get_task("t-a"), errc::not_found);
  CHECK(leases_text(must(s->get_leases({"t-a", "t-b", "t-c"}))) ==
        "t-b#1:revoked:,t-b#2:held:w2,t-b#3:lost:,t-c#1:held:w1");
  // The id is free again, with no lease left behind.
  insert_running(*s, "t-a", 1);
  CHECK(must(s->acquire_lease(key_of("t-a", 1), "w3", at(200), 30s)).worker == "w3");
}

/// Workers finishing and schedulers ending the same attempts at once:
/// exactly one side wins each attempt, and every caller learns which.
/// `worker_side` and `scheduler_side` may be one store or two stores on one
/// database (two processes).
inline void finish_end_race(const std::shared_ptr<store>& worker_side,
                            const std::shared_ptr<store>& scheduler_side, int keys = 24) {
  using namespace std::chrono_literals;
  for (int i = 0; i < keys; ++i) {
    const std::string id = "race-" + std::to_string(100 + i);
    insert_running(*worker_side, id, 1);
    must(worker_side->acquire_lease(key_of(id, 1), "w1", at(100), 30s));
  }
  constexpr int threads = 6;  // even: finishers, odd: the scheduler ending leases
  enum class seen : int { none, finished, done, revoked, conflict, other };
  std::vector<std::vector<seen>> outcomes(threads, std::vector<seen>(keys, seen::none));
  std::vector<std::string> errors(threads);
  {
    std::latch start(threads);
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        start.arrive_and_wait();
        for (int n = 0; n < keys; ++n) {
          const int i = (n + t * 5) % keys;  // threads start at different keys
          const lease_key k = key_of("race-" + std::to_string(100 + i), 1);
          seen& out = outcomes[t][i];
          if (t % 2 == 0) {
            auto r = worker_side->finish_lease(k, "w1", {{"by", t}}, at(140));
            if (r.ok()) {
              out = r->state == lease_state::done ? seen::finished : seen::other;
            } else if (r.error().code() == errc::conflict) {
              out = seen::conflict;
            } else {
              out = seen::other;
              errors[t] = r.error().describe();
            }
          } else {
            auto r = scheduler_side->end_lease(k, lease_state::revoked, at(140), false);
            if (!r.ok()) {
              out = seen::other;
              errors[t] = r.error().describe();
            } else {
              out = r->state == lease_state::done      ? seen::done
                    : r->state == lease_state::revoked ? seen::revoked
                                                       : seen::other;
            }
          }
        }
      });
    }
    for (auto& w : workers) w.join();
  }
  for (int t = 0; t < threads; ++t) CHECK_MESSAGE(errors[t].empty(), errors[t]);
  std::vector<std::string> ids;
  for (int i = 0; i < keys; ++i) ids.push_back("race-" + std::to_string(100 + i));
  auto rows = must(scheduler_side->get_leases(ids));
  REQUIRE(rows.size() == static_cast<std::size_t>(keys));
  for (int i = 0; i < keys; ++i) {
    const task_lease& row = rows[static_cast<std::size_t>(i)];
    const bool finished = row.state == lease_state::done;
    CHECK_MESSAGE((finished || row.state == lease_state::revoked), row.task_id);
    for (int t = 0; t < threads; ++t) {
      const seen want = t % 2 == 0 ? (finished ? seen::finished : seen::conflict)
                                   : (finished ? seen::done : seen::revoked);
      const std::string what = row.task_id + ", thread " + std::to_string(t);
      CHECK_MESSAGE(outcomes[t][i] == want, what);
    }
    if (finished) {
      REQUIRE(row.outcome.has_value());
      CHECK(row.outcome->contains("by"));
    } else {
      CHECK_FALSE(row.outcome.has_value());
    }
  }
}

inline void leases_race(const store_factory& make) {
  auto s = fresh(make);
  finish_end_race(s, s);
}

inline void json_round_trip(const store_factory& make) {
  auto s = fresh(make);
  const nlohmann::json tricky = tricky_json();
  const std::string unicode = "\u00fcnic\u00f6de \u2713 \u65e5\u672c \U0001F680 \"q\" \\ \n";

  project p;
  p.id = "json";
  p.name = unicode;
  p.metadata = tricky;
  must(s->create_project(p));
  project gp = must(s->get_project("json"));
  CHECK(gp.name == unicode);
  CHECK(gp.metadata == tricky);
  check_tricky_numbers(gp.metadata);

  agent_record a;
  a.id = "agent-\u00e9";
  a.project = "json";
  a.capabilities = {unicode, "plain"};
  must(s->put_agent(a));
  CHECK(joined(must(s->get_agent("agent-\u00e9")).capabilities) == joined(a.capabilities));

  agent_snapshot snap;
  snap.agent_id = "agent-\u00e9";
  snap.state = tricky;
  must(s->save_snapshot(snap));
  auto loaded = must(s->load_snapshot("agent-\u00e9"));
  CHECK(loaded.state == tricky);
  check_tricky_numbers(loaded.state);

  task t = make_task("t-json", "json");
  t.payload = tricky;
  t.description = unicode;
  auto array_payload = make_task("t-array", "json");
  array_payload.payload = {1, "two", nullptr, {{"three", 3}}};
  must(s->insert_tasks({t, array_payload},
                       {draft("json", "task.queued", "t-json", {{"payload", tricky}})}));
  task gt = must(s->get_task("t-json"));
  CHECK(gt.payload == tricky);
  check_tricky_numbers(gt.payload);
  CHECK(gt.description == unicode);
  CHECK(must(s->get_task("t-array")).payload == array_payload.payload);

  auto u = change("t-json", 1, task_state::failed, "json");
  u.result = tricky;
  u.error = aise::error(errc::handler_failed, unicode);
  u.event.data = tricky;
  CHECK(must(s->update_task(u)) == 2);
  gt = must(s->get_task("t-json"));
  REQUIRE(gt.result.has_value());
  CHECK(*gt.result == tricky);
  check_tricky_numbers(*gt.result);
  REQUIRE(gt.error.has_value());
  CHECK(gt.error->code() == errc::handler_failed);
  CHECK(gt.error->message() == unicode);

  auto events = must(s->read_events("json", 0, 10));
  REQUIRE(events.size() == 2);
  CHECK(events[0].data == nlohmann::json{{"payload", tricky}});
  CHECK(events[1].data == tricky);
  check_tricky_numbers(events[1].data);

  artifact_meta art;
  art.id = "a-json";
  art.project = "json";
  art.name = "Bericht \u2013 \u00dcbersicht.pdf";
  art.media_type = "application/pdf";
  must(s->put_artifact(art));
  CHECK(must(s->get_artifact("a-json")).name == art.name);
  CHECK(must(s->list_artifacts("json")).at(0).name == art.name);
}

}  // namespace store_suite
}  // namespace aise::conformance

/// Instantiates the store conformance suite; see the file comment.
#define AISE_STORE_CONFORMANCE_SUITE(id, label, ...)                                               \
  namespace {                                                                                      \
  std::shared_ptr<::aise::store> aise_store_conformance_make_##id() {                              \
    return (__VA_ARGS__)();                                                                        \
  }                                                                                                \
  }                                                                                                \
  TEST_CASE(label " store: a fresh store is empty") {                                              \
    ::aise::conformance::store_suite::fresh_store_is_empty(&aise_store_conformance_make_##id);     \
  }                                                                                                \
  TEST_CASE(label " store: projects create get update") {                                          \
    ::aise::conformance::store_suite::projects_create_get_update(                                  \
        &aise_store_conformance_make_##id);                                                        \
  }                                                                                                \
  TEST_CASE(label " store: projects cursor pagination") {                                          \
    ::aise::conformance::store_suite::projects_pagination(&aise_store_conformance_make_##id);      \
  }                                                                                                \
  TEST_CASE(label " store: unknown ids are not_found") {                                           \
    ::aise::conformance::store_suite::unknown_ids_are_not_found(                                   \
        &aise_store_conformance_make_##id);                                                        \
  }                                                                                                \
  TEST_CASE(label " store: agents upsert and list by project") {                                   \
    ::aise::conformance::store_suite::agents_upsert_and_list(&aise_store_conformance_make_##id);   \
  }                                                                                                \
  TEST_CASE(label " store: snapshot versions and latest") {                                        \
    ::aise::conformance::store_suite::snapshots_versions(&aise_store_conformance_make_##id);       \
  }                                                                                                \
  TEST_CASE(label " store: tasks round trip every field") {                                        \
    ::aise::conformance::store_suite::tasks_round_trip(&aise_store_conformance_make_##id);         \
  }                                                                                                \
  TEST_CASE(label " store: insert_tasks is all or nothing") {                                      \
    ::aise::conformance::store_suite::insert_tasks_is_atomic(&aise_store_conformance_make_##id);   \
  }                                                                                                \
  TEST_CASE(label " store: update_task compare-and-set") {                                         \
    ::aise::conformance::store_suite::update_task_compare_and_set(                                 \
        &aise_store_conformance_make_##id);                                                        \
  }                                                                                                \
  TEST_CASE(label " store: update_task through an intermediate state") {                           \
    ::aise::conformance::store_suite::update_task_via_event(&aise_store_conformance_make_##id);    \
  }                                                                                                \
  TEST_CASE(label " store: update_tasks applies a batch in one transaction") {                     \
    ::aise::conformance::store_suite::update_tasks_batch(&aise_store_conformance_make_##id);       \
  }                                                                                                \
  TEST_CASE(label " store: retention drops old events and finished tasks") {                       \
    ::aise::conformance::store_suite::retention_compact(&aise_store_conformance_make_##id);        \
  }                                                                                                \
  TEST_CASE(label " store: attempts history") {                                                    \
    ::aise::conformance::store_suite::attempts_history(&aise_store_conformance_make_##id);         \
  }                                                                                                \
  TEST_CASE(label " store: list_tasks filters") {                                                  \
    ::aise::conformance::store_suite::list_tasks_filters(&aise_store_conformance_make_##id);       \
  }                                                                                                \
  TEST_CASE(label " store: count_tasks by state") {                                                \
    ::aise::conformance::store_suite::count_tasks_by_state(&aise_store_conformance_make_##id);     \
  }                                                                                                \
  TEST_CASE(label " store: list_tasks paging and limits") {                                        \
    ::aise::conformance::store_suite::list_tasks_paging(&aise_store_conformance_make_##id);        \
  }                                                                                                \
  TEST_CASE(label " store: events numbered per project") {                                         \
    ::aise::conformance::store_suite::events_numbering(&aise_store_conformance_make_##id);         \
  }                                                                                                \
  TEST_CASE(label " store: concurrent writers get gapless sequences") {                            \
    ::aise::conformance::store_suite::concurrent_sequences(&aise_store_conformance_make_##id);     \
  }                                                                                                \
  TEST_CASE(label " store: concurrent compare-and-set has one winner per version") {               \
    ::aise::conformance::store_suite::concurrent_compare_and_set(                                  \
        &aise_store_conformance_make_##id);                                                        \
  }                                                                                                \
  TEST_CASE(label " store: concurrent unique writes") {                                            \
    ::aise::conformance::store_suite::concurrent_unique_writes(&aise_store_conformance_make_##id); \
  }                                                                                                \
  TEST_CASE(label " store: artifact versions per project and name") {                              \
    ::aise::conformance::store_suite::artifacts_versions(&aise_store_conformance_make_##id);       \
  }                                                                                                \
  TEST_CASE(label " store: json and unicode round trip") {                                         \
    ::aise::conformance::store_suite::json_round_trip(&aise_store_conformance_make_##id);          \
  }                                                                                                \
  TEST_CASE(label " store: budgets") {                                                             \
    ::aise::conformance::store_suite::budgets(&aise_store_conformance_make_##id);                  \
  }                                                                                                \
  TEST_CASE(label " store: leases acquire and renew") {                                            \
    ::aise::conformance::store_suite::leases_acquire_and_renew(&aise_store_conformance_make_##id); \
  }                                                                                                \
  TEST_CASE(label " store: leases in batches") {                                                   \
    ::aise::conformance::store_suite::leases_in_batches(&aise_store_conformance_make_##id);        \
  }                                                                                                \
  TEST_CASE(label " store: leases finish and end") {                                               \
    ::aise::conformance::store_suite::leases_finish_and_end(&aise_store_conformance_make_##id);    \
  }                                                                                                \
  TEST_CASE(label " store: leases listing and retention") {                                        \
    ::aise::conformance::store_suite::leases_listing_and_retention(                                \
        &aise_store_conformance_make_##id);                                                        \
  }                                                                                                \
  TEST_CASE(label " store: leases finish and end race, one winner per attempt") {                  \
    ::aise::conformance::store_suite::leases_race(&aise_store_conformance_make_##id);              \
  }                                                                                                \
  static_assert(true, "require a semicolon")
