#include <aise/event.hpp>
#include <aise/task.hpp>

#include <chrono>
#include <doctest/doctest.h>
#include <map>
#include <set>
#include <string>

namespace {

using namespace std::chrono_literals;
using aise::task_state;
using json = nlohmann::json;

constexpr task_state all_states[] = {
    task_state::pending, task_state::queued,    task_state::running,  task_state::succeeded,
    task_state::failed,  task_state::cancelled, task_state::retrying, task_state::awaiting_approval,
};

// The state machine of task.hpp, written out independently of the code.
const std::map<task_state, std::set<task_state>>& allowed_transitions() {
  using enum task_state;
  static const std::map<task_state, std::set<task_state>> table = {
      {pending, {queued, awaiting_approval, cancelled, failed}},
      {awaiting_approval, {queued, cancelled, failed}},
      {queued, {running, awaiting_approval, cancelled, failed}},
      {running, {succeeded, failed, cancelled, retrying, awaiting_approval}},
      {retrying, {queued, cancelled, failed}},
      {succeeded, {}},
      {failed, {}},
      {cancelled, {}},
  };
  return table;
}

std::string spec_error(const json& j) {
  const auto r = aise::task_spec_from_json(j);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == aise::errc::invalid_argument);
  return r.error().message();
}

}  // namespace

TEST_CASE("task: state names round-trip") {
  for (const task_state s : all_states) {
    const auto parsed = aise::parse_task_state(aise::to_string(s));
    REQUIRE(parsed.ok());
    CHECK(*parsed == s);
  }
  CHECK(aise::to_string(task_state::awaiting_approval) == "awaiting_approval");
  const auto bad = aise::parse_task_state("done");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().code() == aise::errc::invalid_argument);
}

TEST_CASE("task: the transition table is exactly the documented state machine") {
  REQUIRE(allowed_transitions().size() == std::size(all_states));
  for (const task_state from : all_states) {
    for (const task_state to : all_states) {
      INFO(std::string(aise::to_string(from)), " -> ", std::string(aise::to_string(to)));
      const bool expected = allowed_transitions().at(from).contains(to);
      CHECK(aise::can_transition(from, to) == expected);
      CHECK(aise::check_transition(from, to).ok() == expected);
    }
  }
}

TEST_CASE("task: terminal states never change") {
  for (const task_state s : all_states) {
    INFO(std::string(aise::to_string(s)));
    const bool terminal =
        s == task_state::succeeded || s == task_state::failed || s == task_state::cancelled;
    CHECK(aise::is_terminal(s) == terminal);
    CHECK(allowed_transitions().at(s).empty() == terminal);
    // Every live task can be cancelled or failed (dependency policy, deadline).
    CHECK(aise::can_transition(s, task_state::cancelled) == !terminal);
    CHECK(aise::can_transition(s, task_state::failed) == !terminal);
  }
}

TEST_CASE("task: an illegal transition names both states") {
  const auto r = aise::check_transition(task_state::running, task_state::pending);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == aise::errc::illegal_transition);
  CHECK(r.error().message() == "illegal task transition: running -> pending");
}

TEST_CASE("task: JSON round trip keeps every field") {
  aise::task t;
  t.id = "t-42";
  t.project = "website";
  t.kind = "code.review";
  t.capability = "review";
  t.description = "review the login change";
  t.priority = -3;
  t.payload = {{"pr", 17}, {"paths", {"src/login.cpp"}}};
  t.depends_on = {"t-40", "t-41"};
  t.max_attempts = 3;
  t.timeout = 90s;
  t.deadline = aise::manual_clock::default_start() + 24h;
  t.requires_approval = true;
  t.on_dependency_failure = aise::dependency_failure_policy::fail;
  t.parent = "t-1";
  t.state = task_state::failed;
  t.attempt = 2;
  t.agent = "reviewer-1";
  t.result = json{{"partial", true}};
  t.error = aise::error(aise::errc::timeout, "attempt 2 ran past 90s");
  t.created_at = aise::manual_clock::default_start() + 1us;
  t.updated_at = aise::manual_clock::default_start() + 5min;
  t.not_before = aise::manual_clock::default_start() + 6min;
  t.version = 9;

  const json j = aise::to_json(t);
  CHECK(j.at("timeout_ms") == 90000);
  CHECK(j.at("state") == "failed");
  CHECK(j.at("on_dependency_failure") == "fail");
  CHECK(j.at("error") == json{{"code", "timeout"}, {"message", "attempt 2 ran past 90s"}});
  CHECK(j.at("deadline") == "2026-01-02T00:00:00.000000Z");

  const auto r = aise::task_from_json(json::parse(j.dump()));
  REQUIRE(r.ok());
  const aise::task& b = *r;
  CHECK(b.id == t.id);
  CHECK(b.project == t.project);
  CHECK(b.kind == t.kind);
  CHECK(b.capability == t.capability);
  CHECK(b.description == t.description);
  CHECK(b.priority == t.priority);
  CHECK(b.payload == t.payload);
  CHECK(b.depends_on == t.depends_on);
  CHECK(b.max_attempts == t.max_attempts);
  CHECK(b.timeout == t.timeout);
  CHECK(b.deadline == t.deadline);
  CHECK(b.requires_approval == t.requires_approval);
  CHECK(b.on_dependency_failure == t.on_dependency_failure);
  CHECK(b.parent == t.parent);
  CHECK(b.state == t.state);
  CHECK(b.attempt == t.attempt);
  CHECK(b.agent == t.agent);
  CHECK(b.result == t.result);
  CHECK(b.error == t.error);
  CHECK(b.created_at == t.created_at);
  CHECK(b.updated_at == t.updated_at);
  CHECK(b.not_before == t.not_before);
  CHECK(b.version == t.version);
}

TEST_CASE("task: empty optionals are written as null and read back as empty") {
  aise::task t;
  t.kind = "noop";
  const json j = aise::to_json(t);
  for (const char* key : {"timeout_ms", "deadline", "result", "error"}) {
    INFO(key);
    CHECK(j.at(key).is_null());
  }
  const auto r = aise::task_from_json(j);
  REQUIRE(r.ok());
  CHECK_FALSE(r->timeout);
  CHECK_FALSE(r->deadline);
  CHECK_FALSE(r->result);
  CHECK_FALSE(r->error);
  CHECK(r->project == "default");

  // A handler may succeed with null; that result must survive the trip.
  t.state = task_state::succeeded;
  t.result = json(nullptr);
  const auto s = aise::task_from_json(aise::to_json(t));
  REQUIRE(s.ok());
  CHECK(s->result == std::optional<json>(json(nullptr)));
}

TEST_CASE("task: to_json of an attempt") {
  aise::task_attempt a;
  a.task_id = "t-7";
  a.number = 1;
  a.agent = "worker";
  a.started_at = aise::manual_clock::default_start();
  const json running = aise::to_json(a);
  CHECK(running == json{{"task_id", "t-7"},
                        {"number", 1},
                        {"agent", "worker"},
                        {"started_at", "2026-01-01T00:00:00.000000Z"},
                        {"finished_at", nullptr},
                        {"outcome", "running"},
                        {"error", nullptr}});

  a.finished_at = a.started_at + 2s;
  a.outcome = task_state::cancelled;
  a.error = aise::error(aise::errc::cancelled, "by user");
  const json done = aise::to_json(a);
  CHECK(done.at("finished_at") == "2026-01-01T00:00:02.000000Z");
  CHECK(done.at("outcome") == "cancelled");
  CHECK(done.at("error") == json{{"code", "cancelled"}, {"message", "by user"}});
}

TEST_CASE("task: task_spec_from_json reads a REST request") {
  const auto minimal = aise::task_spec_from_json({{"kind", "build"}});
  REQUIRE(minimal.ok());
  CHECK(minimal->kind == "build");
  CHECK(minimal->project == "default");
  CHECK(minimal->max_attempts == 1);
  CHECK_FALSE(minimal->timeout);
  CHECK(minimal->payload.is_null());
  CHECK(minimal->on_dependency_failure == aise::dependency_failure_policy::cancel);

  const auto full = aise::task_spec_from_json({{"kind", "build"},
                                               {"id", "b-1"},
                                               {"project", "app"},
                                               {"priority", 5},
                                               {"max_attempts", 4},
                                               {"timeout_ms", 1500},
                                               {"deadline", "2026-01-01T10:00:00Z"},
                                               {"depends_on", {"a", "b"}},
                                               {"requires_approval", true},
                                               {"on_dependency_failure", "fail"},
                                               {"payload", {{"target", "all"}}},
                                               {"unknown_field", "ignored"}});
  REQUIRE(full.ok());
  CHECK(full->id == "b-1");
  CHECK(full->project == "app");
  CHECK(full->priority == 5);
  CHECK(full->max_attempts == 4);
  CHECK(full->timeout == aise::duration(1500ms));
  CHECK(full->deadline == aise::manual_clock::default_start() + 10h);
  CHECK(full->depends_on == std::vector<std::string>{"a", "b"});
  CHECK(full->requires_approval);
  CHECK(full->on_dependency_failure == aise::dependency_failure_policy::fail);
  CHECK(full->payload == json{{"target", "all"}});
}

TEST_CASE("task: task_spec_from_json names the offending field") {
  const auto with = [](const char* key, json value) {
    json j = {{"kind", "build"}};
    j[key] = std::move(value);
    return j;
  };
  CHECK(spec_error(json::array()) == "task: expected a JSON object");
  CHECK(spec_error(json::object()) == "task.kind: missing or empty");
  CHECK(spec_error({{"kind", ""}}) == "task.kind: missing or empty");
  CHECK(spec_error({{"kind", 3}}) == "task.kind: expected a string");
  CHECK(spec_error(with("project", "")) == "task.project: must not be empty when given");
  CHECK(spec_error(with("description", 1)) == "task.description: expected a string");
  CHECK(spec_error(with("priority", "high")) == "task.priority: expected an integer");
  CHECK(spec_error(with("priority", 1.5)) == "task.priority: expected an integer");
  CHECK(spec_error(with("priority", 1LL << 40)) == "task.priority: expected an integer");
  CHECK(spec_error(with("max_attempts", 0)) == "task.max_attempts: expected an integer >= 1");
  CHECK(spec_error(with("timeout_ms", 0)) == "task.timeout_ms: expected an integer > 0");
  CHECK(spec_error(with("timeout_ms", "5s")) == "task.timeout_ms: expected an integer > 0");
  CHECK(spec_error(with("deadline", "tomorrow")) ==
        R"(task.deadline: expected an RFC 3339 UTC time such as "2026-01-01T00:00:00Z")");
  CHECK(spec_error(with("depends_on", "a")) == "task.depends_on: expected an array of task ids");
  CHECK(spec_error(with("depends_on", {"a", 2})) ==
        "task.depends_on[1]: expected a non-empty string");
  CHECK(spec_error(with("requires_approval", "yes")) ==
        "task.requires_approval: expected true or false");
  CHECK(spec_error(with("on_dependency_failure", "ignore")) ==
        R"(task.on_dependency_failure: expected "cancel" or "fail")");
}

TEST_CASE("task: task_from_json checks the record fields") {
  json j = aise::to_json(aise::task{});
  j["kind"] = "noop";
  j["state"] = "finished";
  auto r = aise::task_from_json(j);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message().starts_with("task.state: "));

  j["state"] = "failed";
  j["error"] = {{"message", "no code"}};
  r = aise::task_from_json(j);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message() == "task.error.code: missing or empty");

  j["error"] = nullptr;
  j["version"] = -1;
  r = aise::task_from_json(j);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message() == "task.version: expected an integer >= 0");
}

// Events record task state changes; their JSON form is tested here until
// they get a test file of their own.
TEST_CASE("task: event JSON round trip") {
  aise::event e;
  e.sequence = 12;
  e.project = "website";
  e.type = "task.running";
  e.subject = "t-42";
  e.at = aise::manual_clock::default_start() + 3s;
  e.data = {{"from", "queued"}, {"to", "running"}, {"attempt", 1}};

  const auto r = aise::event_from_json(json::parse(aise::to_json(e).dump()));
  REQUIRE(r.ok());
  CHECK(r->sequence == e.sequence);
  CHECK(r->project == e.project);
  CHECK(r->type == e.type);
  CHECK(r->subject == e.subject);
  CHECK(r->at == e.at);
  CHECK(r->data == e.data);

  const auto missing = aise::event_from_json({{"project", "p"}});
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().message() == "event.type: missing or empty");
}
