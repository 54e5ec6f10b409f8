// The store interface over SOCI, one implementation for SQLite and
// PostgreSQL (docs/sql.md).
//
// How it keeps the store contract:
// - Every write runs in one transaction on one leased connection; any
//   exception rolls it back (transaction's destructor) and becomes an error
//   value (to_error), so nothing of a failed call is committed.
// - Event sequences come from event_counters: an upsert that bumps the
//   project's counter and returns it. On PostgreSQL the counter row stays
//   locked until commit, so writers of one project commit in sequence order
//   (no gaps, no duplicates, readers never see n+1 before n). On SQLite the
//   write transaction (BEGIN IMMEDIATE) serializes writers anyway.
// - update_task is a compare-and-set: UPDATE … WHERE id AND version; zero
//   rows then means not_found or conflict (told apart by a SELECT).
// - Times are nanoseconds since the epoch in BIGINT columns; JSON is text.

#include <aise/sql.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <fmt/format.h>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>

#include "connection.hpp"
#include "migrations.hpp"

namespace aise::sql {
namespace {

using detail::connection;
using detail::dialect;
using detail::from_ns;
using detail::to_ns;

constexpr std::size_t max_page = 1000;
constexpr std::size_t snapshots_kept = 16;  // as the in-memory store

std::size_t clamp_limit(std::size_t limit) noexcept {
  return std::clamp<std::size_t>(limit, 1, max_page);
}

std::string in_quotes(std::string_view s) {
  return "'" + std::string(s) + "'";
}

std::string dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::json parse_json(const std::string& text) {
  if (text.empty()) return nullptr;
  return nlohmann::json::parse(text);
}

std::string error_text(const aise::error& e) {
  return dump(to_json(e));
}

std::optional<aise::error> error_from_text(const std::string& text) {
  aise::error out;
  if (!error_from_json(nlohmann::json::parse(text), out)) {
    return aise::error(errc::internal, "sql: a stored error could not be read: " + text);
  }
  return out;
}

std::optional<aise::error> check_draft(std::string_view op, const event_draft& e) {
  if (e.project.empty())
    return aise::error(errc::invalid_argument, std::string(op) + ": event without a project");
  if (e.type.empty())
    return aise::error(errc::invalid_argument, std::string(op) + ": event without a type");
  return std::nullopt;
}

const std::string& effective_capability(const task& t) noexcept {
  return t.capability.empty() ? t.kind : t.capability;
}

// ---- task rows ----

/// The columns of a task row, as SOCI binds them.
struct task_row {
  std::string id, project, kind, capability, effective, description, payload, depends_on;
  int priority = 0, max_attempts = 1, requires_approval = 0, policy = 0, attempt = 0;
  long long timeout = 0, deadline = 0, created_at = 0, updated_at = 0, not_before = 0, version = 0;
  soci::indicator timeout_ind = soci::i_null, deadline_ind = soci::i_null;
  std::string parent, state, agent, result, error;
  soci::indicator result_ind = soci::i_null, error_ind = soci::i_null;

  static task_row of(const task& t) {
    task_row r;
    r.id = t.id;
    r.project = t.project;
    r.kind = t.kind;
    r.capability = t.capability;
    r.effective = effective_capability(t);
    r.description = t.description;
    r.priority = t.priority;
    r.payload = dump(t.payload);
    r.depends_on = dump(nlohmann::json(t.depends_on));
    r.max_attempts = t.max_attempts;
    if (t.timeout) {
      r.timeout = static_cast<long long>(t.timeout->count());
      r.timeout_ind = soci::i_ok;
    }
    if (t.deadline) {
      r.deadline = to_ns(*t.deadline);
      r.deadline_ind = soci::i_ok;
    }
    r.requires_approval = t.requires_approval ? 1 : 0;
    r.policy = static_cast<int>(t.on_dependency_failure);
    r.parent = t.parent;
    r.state = std::string(to_string(t.state));
    r.attempt = t.attempt;
    r.agent = t.agent;
    if (t.result) {
      r.result = dump(*t.result);
      r.result_ind = soci::i_ok;
    }
    if (t.error) {
      r.error = error_text(*t.error);
      r.error_ind = soci::i_ok;
    }
    r.created_at = to_ns(t.created_at);
    r.updated_at = to_ns(t.updated_at);
    r.not_before = to_ns(t.not_before);
    r.version = static_cast<long long>(t.version);
    return r;
  }

  [[nodiscard]] task to_task() const {
    task t;
    t.id = id;
    t.project = project;
    t.kind = kind;
    t.capability = capability;
    t.description = description;
    t.priority = priority;
    t.payload = parse_json(payload);
    t.depends_on = parse_json(depends_on).get<std::vector<std::string>>();
    t.max_attempts = max_attempts;
    if (timeout_ind == soci::i_ok) t.timeout = duration(timeout);
    if (deadline_ind == soci::i_ok) t.deadline = from_ns(deadline);
    t.requires_approval = requires_approval != 0;
    t.on_dependency_failure = static_cast<dependency_failure_policy>(policy);
    t.parent = parent;
    auto s = parse_task_state(state);
    t.state = s ? *s : task_state::pending;
    t.attempt = attempt;
    t.agent = agent;
    if (result_ind == soci::i_ok) t.result = parse_json(result);
    if (error_ind == soci::i_ok) t.error = error_from_text(error);
    t.created_at = from_ns(created_at);
    t.updated_at = from_ns(updated_at);
    t.not_before = from_ns(not_before);
    t.version = static_cast<std::uint64_t>(version);
    return t;
  }
};

constexpr const char* task_columns =
    "id, project, kind, capability, effective_capability, description, priority, payload, "
    "depends_on, max_attempts, timeout_ns, deadline, requires_approval, on_dependency_failure, "
    "parent, state, attempt, agent, result, error, created_at, updated_at, not_before, version";

void bind_task_into(soci::statement& st, task_row& r) {
  st.exchange(soci::into(r.id));
  st.exchange(soci::into(r.project));
  st.exchange(soci::into(r.kind));
  st.exchange(soci::into(r.capability));
  st.exchange(soci::into(r.effective));
  st.exchange(soci::into(r.description));
  st.exchange(soci::into(r.priority));
  st.exchange(soci::into(r.payload));
  st.exchange(soci::into(r.depends_on));
  st.exchange(soci::into(r.max_attempts));
  st.exchange(soci::into(r.timeout, r.timeout_ind));
  st.exchange(soci::into(r.deadline, r.deadline_ind));
  st.exchange(soci::into(r.requires_approval));
  st.exchange(soci::into(r.policy));
  st.exchange(soci::into(r.parent));
  st.exchange(soci::into(r.state));
  st.exchange(soci::into(r.attempt));
  st.exchange(soci::into(r.agent));
  st.exchange(soci::into(r.result, r.result_ind));
  st.exchange(soci::into(r.error, r.error_ind));
  st.exchange(soci::into(r.created_at));
  st.exchange(soci::into(r.updated_at));
  st.exchange(soci::into(r.not_before));
  st.exchange(soci::into(r.version));
}

// ---- other rows ----

struct event_row {
  std::string project, type, subject, data;
  long long sequence = 0, at = 0;
  [[nodiscard]] event to_event() const {
    event e;
    e.project = project;
    e.type = type;
    e.subject = subject;
    e.at = from_ns(at);
    e.data = parse_json(data);
    e.sequence = static_cast<std::uint64_t>(sequence);
    return e;
  }
};

struct attempt_row {
  std::string task_id, agent, outcome, error;
  int number = 0;
  long long started_at = 0, finished_at = 0;
  soci::indicator finished_ind = soci::i_null, error_ind = soci::i_null;
  [[nodiscard]] task_attempt to_attempt() const {
    task_attempt a;
    a.task_id = task_id;
    a.number = number;
    a.agent = agent;
    a.started_at = from_ns(started_at);
    if (finished_ind == soci::i_ok) a.finished_at = from_ns(finished_at);
    auto s = parse_task_state(outcome);
    a.outcome = s ? *s : task_state::running;
    if (error_ind == soci::i_ok) a.error = error_from_text(error);
    return a;
  }
};

struct artifact_row {
  std::string id, project, task, name, media_type, sha256;
  long long size = 0, created_at = 0;
  int version = 0;
  [[nodiscard]] artifact_meta to_meta() const {
    artifact_meta a;
    a.id = id;
    a.project = project;
    a.task = task;
    a.name = name;
    a.media_type = media_type;
    a.size = static_cast<std::uint64_t>(size);
    a.sha256 = sha256;
    a.version = version;
    a.created_at = from_ns(created_at);
    return a;
  }
};

constexpr const char* artifact_columns =
    "id, project, task, name, media_type, size, sha256, version, created_at";

void bind_artifact_into(soci::statement& st, artifact_row& r) {
  st.exchange(soci::into(r.id));
  st.exchange(soci::into(r.project));
  st.exchange(soci::into(r.task));
  st.exchange(soci::into(r.name));
  st.exchange(soci::into(r.media_type));
  st.exchange(soci::into(r.size));
  st.exchange(soci::into(r.sha256));
  st.exchange(soci::into(r.version));
  st.exchange(soci::into(r.created_at));
}

struct lease_row {
  std::string task_id, worker, outcome;
  int attempt = 0, state = 0;
  long long acquired_at = 0, expires_at = 0, ended_at = 0;
  soci::indicator ended_ind = soci::i_null, outcome_ind = soci::i_null;
  [[nodiscard]] task_lease to_lease() const {
    task_lease l;
    l.task_id = task_id;
    l.attempt = attempt;
    l.worker = worker;
    l.state = static_cast<lease_state>(state);
    l.acquired_at = from_ns(acquired_at);
    l.expires_at = from_ns(expires_at);
    if (ended_ind == soci::i_ok) l.ended_at = from_ns(ended_at);
    if (outcome_ind == soci::i_ok) l.outcome = parse_json(outcome);
    return l;
  }
};

constexpr const char* lease_columns =
    "task_id, attempt, worker, state, acquired_at, expires_at, ended_at, outcome";

std::optional<aise::error> check_lease_key(std::string_view op, const lease_key& key) {
  if (key.task_id.empty())
    return aise::error(errc::invalid_argument, std::string(op) + ": empty task id");
  if (key.attempt < 1)
    return aise::error(
        errc::invalid_argument,
        std::string(op) + ": attempt " + std::to_string(key.attempt) + " (attempts start at 1)");
  return std::nullopt;
}

std::string lease_name(const lease_key& key) {
  return "of task " + in_quotes(key.task_id) + " attempt " + std::to_string(key.attempt);
}

/// "the lease of task 'x' attempt 2 is revoked (worker 'w')": why a call lost.
std::string describe_lease(const task_lease& l) {
  std::string out =
      "the lease " + lease_name({l.task_id, l.attempt}) + " is " + std::string(to_string(l.state));
  if (l.worker.empty()) return out + " (ended before a worker took it)";
  return out + " (worker " + in_quotes(l.worker) + ")";
}

class sql_store final : public store {
 public:
  sql_store(std::unique_ptr<detail::pool> pool, std::shared_ptr<aise::clock> clock,
            store_options options)
      : pool_(std::move(pool)), clock_(std::move(clock)), options_(std::move(options)) {}

  using store::insert_tasks;
  using store::update_task;

  [[nodiscard]] std::string_view backend() const noexcept override {
    return pool_->kind() == dialect::sqlite ? "sqlite" : "postgresql";
  }

  // ---- projects ----

  result<project> create_project(project p) override {
    if (p.id.empty()) return error(errc::invalid_argument, "create_project: empty project id");
    const time_point now = clock_->now();
    if (p.created_at == time_point{}) p.created_at = now;
    if (p.updated_at == time_point{}) p.updated_at = now;
    return run<project>("create_project", [&](connection& c) -> result<project> {
      detail::transaction tx(c, kind());
      int exists = 0;
      c.session << "SELECT COUNT(*) FROM projects WHERE id = :id", soci::use(p.id),
          soci::into(exists);
      if (exists != 0)
        return error(errc::already_exists, "project " + in_quotes(p.id) + " already exists");
      try {
        insert_project(c, p);
      } catch (...) {
        // A concurrent creator committed between the check and the insert.
        if (detail::is_unique_violation(kind()))
          return error(errc::already_exists, "project " + in_quotes(p.id) + " already exists");
        throw;
      }
      tx.commit();
      return p;
    });
  }

  result<project> get_project(std::string_view id) override {
    const std::string key(id);
    return run<project>("get_project", [&](connection& c) -> result<project> {
      auto found = select_projects(c, "WHERE id = :a", key, 1);
      if (found.empty()) return error(errc::not_found, "project " + in_quotes(id) + " not found");
      return found.front();
    });
  }

  result<page<project>> list_projects(std::string_view after, std::size_t limit) override {
    limit = clamp_limit(limit);
    const std::string cursor(after);
    return run<page<project>>("list_projects", [&](connection& c) -> result<page<project>> {
      page<project> out;
      out.items = select_projects(c, "WHERE id > :a", cursor, limit + 1);
      if (out.items.size() > limit) {
        out.items.pop_back();
        out.next_cursor = out.items.back().id;
      }
      return out;
    });
  }

  result<project> update_project(project p) override {
    if (p.id.empty()) return error(errc::invalid_argument, "update_project: empty project id");
    if (p.updated_at == time_point{}) p.updated_at = clock_->now();
    return run<project>("update_project", [&](connection& c) -> result<project> {
      detail::transaction tx(c, kind());
      auto found = select_projects(c, "WHERE id = :a", p.id, 1);
      if (found.empty()) return error(errc::not_found, "project " + in_quotes(p.id) + " not found");
      p.created_at = found.front().created_at;
      const std::string metadata = dump(p.metadata);
      const int archived = p.archived ? 1 : 0;
      const long long updated = to_ns(p.updated_at);
      c.session << "UPDATE projects SET name = :n, description = :d, metadata = :m, archived = "
                   ":ar, updated_at = :u WHERE id = :id",
          soci::use(p.name), soci::use(p.description), soci::use(metadata), soci::use(archived),
          soci::use(updated), soci::use(p.id);
      tx.commit();
      return p;
    });
  }

  // ---- agents ----

  result<void> put_agent(agent_record a) override {
    if (a.id.empty()) return error(errc::invalid_argument, "put_agent: empty agent id");
    if (a.project.empty())
      return error(errc::invalid_argument,
                   "put_agent: agent " + in_quotes(a.id) + " without a project");
    const time_point now = clock_->now();
    return run<void>("put_agent", [&](connection& c) -> result<void> {
      detail::transaction tx(c, kind());
      long long created = 0;
      soci::indicator created_ind = soci::i_null;
      c.session << "SELECT created_at FROM agents WHERE id = :id", soci::use(a.id),
          soci::into(created, created_ind);
      const bool exists = c.session.got_data();
      if (a.created_at == time_point{}) a.created_at = exists ? from_ns(created) : now;
      const std::string caps = dump(nlohmann::json(a.capabilities));
      const long long heartbeat = to_ns(a.last_heartbeat);
      const long long created_at = to_ns(a.created_at);
      // An upsert: concurrent first registrations of one id do not collide.
      c.session << "INSERT INTO agents (id, project, kind, capabilities, status, restarts, "
                   "last_heartbeat, created_at) VALUES (:id, :p, :k, :c, :s, :r, :h, :ca) "
                   "ON CONFLICT (id) DO UPDATE SET project = excluded.project, kind = "
                   "excluded.kind, capabilities = excluded.capabilities, status = "
                   "excluded.status, restarts = excluded.restarts, last_heartbeat = "
                   "excluded.last_heartbeat, created_at = excluded.created_at",
          soci::use(a.id), soci::use(a.project), soci::use(a.kind), soci::use(caps),
          soci::use(a.status), soci::use(a.restarts), soci::use(heartbeat), soci::use(created_at);
      tx.commit();
      return {};
    });
  }

  result<agent_record> get_agent(std::string_view id) override {
    const std::string key(id);
    return run<agent_record>("get_agent", [&](connection& c) -> result<agent_record> {
      auto found = select_agents(c, "WHERE id = :p0", {key});
      if (found.empty()) return error(errc::not_found, "agent " + in_quotes(id) + " not found");
      return found.front();
    });
  }

  result<std::vector<agent_record>> list_agents(std::string_view project) override {
    const std::string key(project);
    return run<std::vector<agent_record>>("list_agents",
                                          [&](connection& c) -> result<std::vector<agent_record>> {
                                            if (key.empty())
                                              return select_agents(c, "", {});  // every project
                                            return select_agents(c, "WHERE project = :p0", {key});
                                          });
  }

  result<agent_snapshot> save_snapshot(agent_snapshot s) override {
    if (s.agent_id.empty()) return error(errc::invalid_argument, "save_snapshot: empty agent id");
    if (s.taken_at == time_point{}) s.taken_at = clock_->now();
    // Snapshots of one agent take a lock on it (lock_key); a unique
    // violation on the version is still retried, should anything else race.
    for (int tries = 0;; ++tries) {
      auto r = run<agent_snapshot>("save_snapshot", [&](connection& c) -> result<agent_snapshot> {
        detail::transaction tx(c, kind());
        lock_key(c, "snapshot/" + s.agent_id);
        long long last = 0;
        soci::indicator ind = soci::i_null;
        c.session << "SELECT MAX(version) FROM agent_snapshots WHERE agent_id = :a",
            soci::use(s.agent_id), soci::into(last, ind);
        const long long version = (ind == soci::i_ok ? last : 0) + 1;
        const long long taken = to_ns(s.taken_at);
        const std::string state = dump(s.state);
        try {
          c.session << "INSERT INTO agent_snapshots (agent_id, version, taken_at, state) VALUES "
                       "(:a, :v, :t, :s)",
              soci::use(s.agent_id), soci::use(version), soci::use(taken), soci::use(state);
        } catch (...) {
          if (detail::is_unique_violation(kind())) return error(errc::conflict, "version taken");
          throw;
        }
        const long long oldest_kept = version - static_cast<long long>(snapshots_kept) + 1;
        c.session << "DELETE FROM agent_snapshots WHERE agent_id = :a AND version < :v",
            soci::use(s.agent_id), soci::use(oldest_kept);
        tx.commit();
        agent_snapshot out = s;
        out.version = static_cast<std::uint64_t>(version);
        return out;
      });
      if (r || r.error().code() != errc::conflict || tries >= 20) return r;
    }
  }

  result<agent_snapshot> load_snapshot(std::string_view agent_id) override {
    const std::string key(agent_id);
    return run<agent_snapshot>("load_snapshot", [&](connection& c) -> result<agent_snapshot> {
      agent_snapshot s;
      long long version = 0;
      long long taken = 0;
      std::string state;
      c.session << "SELECT version, taken_at, state FROM agent_snapshots WHERE agent_id = :a "
                   "ORDER BY version DESC LIMIT 1",
          soci::use(key), soci::into(version), soci::into(taken), soci::into(state);
      if (!c.session.got_data())
        return error(errc::not_found, "agent " + in_quotes(agent_id) + " has no snapshot");
      s.agent_id = key;
      s.version = static_cast<std::uint64_t>(version);
      s.taken_at = from_ns(taken);
      s.state = parse_json(state);
      return s;
    });
  }

  // ---- tasks ----

  result<std::vector<std::uint64_t>> insert_tasks(const std::vector<task>& tasks,
                                                  std::vector<event_draft>&& events) override {
    const time_point now = clock_->now();
    std::vector<task_row> rows;
    rows.reserve(tasks.size());
    for (std::size_t i = 0; i < tasks.size(); ++i) {
      const task& t = tasks[i];
      auto where = [i] { return "insert_tasks: task #" + std::to_string(i); };
      if (t.id.empty()) return error(errc::invalid_argument, where() + " has an empty id");
      if (t.project.empty())
        return error(errc::invalid_argument,
                     where() + " (" + in_quotes(t.id) + ") has an empty project");
      if (t.kind.empty())
        return error(errc::invalid_argument,
                     where() + " (" + in_quotes(t.id) + ") has an empty kind");
      for (std::size_t k = 0; k < i; ++k) {
        if (tasks[k].id == t.id)
          return error(errc::already_exists,
                       "insert_tasks: task id " + in_quotes(t.id) + " appears twice in the batch");
      }
      task_row r = task_row::of(t);
      r.version = 1;
      if (t.created_at == time_point{}) r.created_at = to_ns(now);
      if (t.updated_at == time_point{}) r.updated_at = r.created_at;
      rows.push_back(std::move(r));
    }
    for (std::size_t i = 0; i < events.size(); ++i) {
      if (auto e = check_draft("insert_tasks: event #" + std::to_string(i), events[i])) return *e;
      if (events[i].at == time_point{}) events[i].at = now;
    }
    return run<std::vector<std::uint64_t>>(
        "insert_tasks", [&](connection& c) -> result<std::vector<std::uint64_t>> {
          detail::transaction tx(c, kind());
          if (kind() == dialect::postgresql && rows.size() > 1) {
            try {  // a taken id is a unique violation: no lookup first
              insert_tasks_many(c, rows);
            } catch (const soci::soci_error& e) {
              if (!detail::is_unique_violation(kind())) throw;
              return error(errc::already_exists, "insert_tasks: " + taken_id(e.what()));
            }
          } else {
            for (auto& r : rows) {
              try {  // a taken id is a unique violation: no lookup first
                insert_task(c, r);
              } catch (...) {
                if (detail::is_unique_violation(kind()))
                  return error(errc::already_exists, "task " + in_quotes(r.id) + " already exists");
                throw;
              }
            }
          }
          std::map<std::string_view, std::pair<long long, std::uint64_t>> projects;
          for (const auto& e : events) ++projects[e.project].first;
          for (auto& [project, counts] : projects)
            counts.second = reserve_sequences(c, std::string(project), counts.first);
          std::vector<std::uint64_t> out;
          out.reserve(events.size());
          std::vector<numbered_event> numbered;
          numbered.reserve(events.size());
          for (const auto& e : events) {
            out.push_back(projects[e.project].second++);
            numbered.push_back({&e, out.back(), to_ns(e.at)});
          }
          insert_events(c, numbered);
          tx.commit();
          note_change();
          return out;
        });
  }

  result<std::uint64_t> update_task(task_update&& u) override {
    auto prepared = prepare_change("update_task", u);
    if (!prepared) return prepared.error();
    return run<std::uint64_t>("update_task", [&](connection& c) -> result<std::uint64_t> {
      detail::transaction tx(c, kind());
      auto sequences = write_changes(c, std::span<const task_update>(&u, 1),
                                     std::span<const change_values>(&prepared.value(), 1));
      if (!sequences) return sequences.error();
      tx.commit();
      note_change();
      return sequences->front();
    });
  }

  result<std::vector<std::uint64_t>> update_tasks(const std::vector<task_update>& batch) override {
    if (batch.empty()) return std::vector<std::uint64_t>{};
    const std::vector<task_update>& work = batch;  // read only: the caller may write it again
    std::vector<change_values> values;
    try {  // no exception escapes a store member (out of memory included)
      values.reserve(work.size());
      for (std::size_t i = 0; i < work.size(); ++i) {
        auto prepared = prepare_change("update_tasks: change #" + std::to_string(i), work[i]);
        if (!prepared) return prepared.error();
        values.push_back(std::move(prepared.value()));
      }
    } catch (...) {
      return detail::to_error("update_tasks", nullptr, kind());
    }
    return run<std::vector<std::uint64_t>>(
        "update_tasks", [&](connection& c) -> result<std::vector<std::uint64_t>> {
          detail::transaction tx(c, kind());
          auto out = write_changes(c, work, values);
          if (!out) return out;  // rolled back: nothing of the batch stays
          tx.commit();
          note_change();
          return out;
        });
  }

  result<task> get_task(std::string_view id) override {
    const std::string key(id);
    return run<task>("get_task", [&](connection& c) -> result<task> {
      auto found = select_tasks(c, "WHERE id = :p0", {key}, 1);
      if (found.empty()) return error(errc::not_found, "task " + in_quotes(id) + " not found");
      return std::move(found.front());
    });
  }

  result<page<task>> list_tasks(const task_filter& f) override {
    const std::size_t limit = clamp_limit(f.limit);
    std::string where = "WHERE 1 = 1";
    std::vector<std::string> params;
    auto param = [&](const std::string& value) {
      params.push_back(value);
      return ":p" + std::to_string(params.size() - 1);
    };
    if (!f.project.empty()) where += " AND project = " + param(f.project);
    if (!f.parent.empty()) where += " AND parent = " + param(f.parent);
    if (!f.capability.empty()) where += " AND effective_capability = " + param(f.capability);
    if (!f.after.empty()) where += " AND id > " + param(f.after);
    if (!f.states.empty()) {
      where += " AND state IN (";
      for (std::size_t i = 0; i < f.states.size(); ++i) {
        if (i > 0) where += ", ";
        where += in_quotes(to_string(f.states[i]));  // enum names, never user text
      }
      where += ")";
    }
    return run<page<task>>("list_tasks", [&](connection& c) -> result<page<task>> {
      page<task> out;
      out.items = select_tasks(c, where, params, limit + 1);
      if (out.items.size() > limit) {
        out.items.pop_back();
        out.next_cursor = out.items.back().id;
      }
      return out;
    });
  }

  // One GROUP BY over the state index (tasks_by_state, or
  // tasks_by_project_state with a project): no table rows are read.
  result<task_counts> count_tasks(std::string_view project) override {
    const std::string key(project);
    return run<task_counts>("count_tasks", [&](connection& c) -> result<task_counts> {
      task_counts out;
      std::string state;
      long long n = 0;
      soci::statement st(c.session);
      st.exchange(soci::into(state));
      st.exchange(soci::into(n));
      if (!key.empty()) st.exchange(soci::use(key, "p"));
      st.alloc();
      st.prepare(key.empty()
                     ? "SELECT state, COUNT(*) FROM tasks GROUP BY state"
                     : "SELECT state, COUNT(*) FROM tasks WHERE project = :p GROUP BY state");
      st.define_and_bind();
      st.execute();
      while (st.fetch()) {
        auto s = parse_task_state(state);
        if (!s) return error(errc::internal, "count_tasks: unknown stored state '" + state + "'");
        out[*s] += static_cast<std::uint64_t>(n);
      }
      return out;
    });
  }

  result<std::vector<task_attempt>> list_attempts(std::string_view task_id) override {
    const std::string key(task_id);
    return run<std::vector<task_attempt>>(
        "list_attempts", [&](connection& c) -> result<std::vector<task_attempt>> {
          int exists = 0;
          c.session << "SELECT COUNT(*) FROM tasks WHERE id = :id", soci::use(key),
              soci::into(exists);
          if (exists == 0)
            return error(errc::not_found, "task " + in_quotes(task_id) + " not found");
          std::vector<task_attempt> out;
          attempt_row r;
          soci::statement st =
              (c.session.prepare << "SELECT task_id, number, agent, started_at, finished_at, "
                                    "outcome, error FROM task_attempts WHERE task_id = :id "
                                    "ORDER BY number",
               soci::use(key), soci::into(r.task_id), soci::into(r.number), soci::into(r.agent),
               soci::into(r.started_at), soci::into(r.finished_at, r.finished_ind),
               soci::into(r.outcome), soci::into(r.error, r.error_ind));
          st.execute();
          while (st.fetch()) out.push_back(r.to_attempt());
          return out;
        });
  }

  // ---- events ----

  result<event> append_event(event_draft d) override {
    if (auto e = check_draft("append_event", d)) return *e;
    if (d.at == time_point{}) d.at = clock_->now();
    return run<event>("append_event", [&](connection& c) -> result<event> {
      detail::transaction tx(c, kind());
      event ev{d};
      ev.sequence = append(c, d);
      tx.commit();
      return ev;
    });
  }

  result<std::vector<event>> read_events(std::string_view project, std::uint64_t after_sequence,
                                         std::size_t limit) override {
    const std::string key(project);
    const long long after =
        static_cast<long long>(std::min<std::uint64_t>(after_sequence, INT64_MAX));
    const long long count =
        static_cast<long long>(std::min<std::size_t>(limit, static_cast<std::size_t>(INT64_MAX)));
    return run<std::vector<event>>("read_events", [&](connection& c) -> result<std::vector<event>> {
      std::vector<event> out;
      if (count == 0) return out;
      event_row r;
      soci::statement st =
          (c.session.prepare << "SELECT project, sequence, type, subject, at, data FROM events "
                                "WHERE project = :p AND sequence > :a ORDER BY sequence LIMIT :n",
           soci::use(key), soci::use(after), soci::use(count), soci::into(r.project),
           soci::into(r.sequence), soci::into(r.type), soci::into(r.subject), soci::into(r.at),
           soci::into(r.data));
      st.execute();
      while (st.fetch()) out.push_back(r.to_event());
      return out;
    });
  }

  result<std::uint64_t> last_sequence(std::string_view project) override {
    const std::string key(project);
    return run<std::uint64_t>("last_sequence", [&](connection& c) -> result<std::uint64_t> {
      long long last = 0;
      c.session << "SELECT last_sequence FROM event_counters WHERE project = :p", soci::use(key),
          soci::into(last);
      return c.session.got_data() ? static_cast<std::uint64_t>(last) : 0U;
    });
  }

  // ---- retention ----

  result<compaction_stats> compact(const retention_policy& policy) override {
    const long long now = to_ns(clock_->now());
    return run<compaction_stats>("compact", [&](connection& c) -> result<compaction_stats> {
      detail::transaction tx(c, kind());
      compaction_stats out;
      if (policy.max_events_per_project != 0 || policy.max_event_age.count() > 0) {
        std::vector<std::pair<std::string, long long>> projects;
        {
          std::string p;
          long long last = 0;
          soci::statement st = (c.session.prepare << "SELECT project, last_sequence FROM "
                                                     "event_counters ORDER BY project",
                                soci::into(p), soci::into(last));
          st.execute();
          while (st.fetch()) projects.emplace_back(p, last);
        }
        for (const auto& [p, last] : projects) {
          long long below = 0;  // delete every sequence < below
          if (policy.max_events_per_project != 0) {
            below = last - static_cast<long long>(policy.max_events_per_project) + 1;
          }
          if (policy.max_event_age.count() > 0) {
            // The prefix of events older than the cutoff (never a hole in the middle).
            const long long cutoff = now - static_cast<long long>(policy.max_event_age.count());
            long long first_young = 0;
            soci::indicator ind = soci::i_null;
            c.session << "SELECT MIN(sequence) FROM events WHERE project = :p AND at >= :c",
                soci::use(p), soci::use(cutoff), soci::into(first_young, ind);
            below = std::max(below, ind == soci::i_ok ? first_young : last + 1);
          }
          if (below <= 1) continue;
          soci::statement del = (c.session.prepare << "DELETE FROM events WHERE project = :p AND "
                                                      "sequence < :b",
                                 soci::use(p), soci::use(below));
          del.execute(true);
          out.events_removed += static_cast<std::uint64_t>(del.get_affected_rows());
        }
      }
      const std::string finished = "('succeeded', 'failed', 'cancelled')";
      if (policy.max_finished_tasks != 0) {
        const long long keep = static_cast<long long>(policy.max_finished_tasks);
        const std::string offset = kind() == dialect::sqlite ? "LIMIT -1 OFFSET :k" : "OFFSET :k";
        soci::statement del =
            (c.session.prepare << "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE "
                                  "state IN " +
                                      finished + " ORDER BY updated_at DESC, id DESC " + offset +
                                      ")",
             soci::use(keep));
        del.execute(true);
        out.tasks_removed += static_cast<std::uint64_t>(del.get_affected_rows());
      }
      if (policy.max_finished_task_age.count() > 0) {
        const long long cutoff = now - static_cast<long long>(policy.max_finished_task_age.count());
        soci::statement del = (c.session.prepare << "DELETE FROM tasks WHERE state IN " + finished +
                                                        " AND updated_at < :c",
                               soci::use(cutoff));
        del.execute(true);
        out.tasks_removed += static_cast<std::uint64_t>(del.get_affected_rows());
      }
      tx.commit();
      return out;
    });
  }

  // ---- artifact metadata ----

  result<artifact_meta> put_artifact(artifact_meta a) override {
    if (a.id.empty()) return error(errc::invalid_argument, "put_artifact: empty artifact id");
    if (a.project.empty())
      return error(errc::invalid_argument,
                   "put_artifact: artifact " + in_quotes(a.id) + " without a project");
    if (a.name.empty())
      return error(errc::invalid_argument,
                   "put_artifact: artifact " + in_quotes(a.id) + " without a name");
    if (a.created_at == time_point{}) a.created_at = clock_->now();
    // Writers of one name take a lock on it (lock_key); a unique violation
    // on the version is still retried, should anything else race.
    for (int tries = 0;; ++tries) {
      auto r = run<artifact_meta>("put_artifact", [&](connection& c) -> result<artifact_meta> {
        detail::transaction tx(c, kind());
        int exists = 0;
        c.session << "SELECT COUNT(*) FROM artifacts WHERE id = :id", soci::use(a.id),
            soci::into(exists);
        if (exists != 0)
          return error(errc::already_exists, "artifact " + in_quotes(a.id) + " already exists");
        lock_key(c, "artifact/" + a.project + "/" + a.name);
        int last = 0;
        soci::indicator ind = soci::i_null;
        c.session << "SELECT MAX(version) FROM artifacts WHERE project = :p AND name = :n",
            soci::use(a.project), soci::use(a.name), soci::into(last, ind);
        a.version = (ind == soci::i_ok ? last : 0) + 1;
        const long long size = static_cast<long long>(a.size);
        const long long created = to_ns(a.created_at);
        try {
          c.session << "INSERT INTO artifacts (id, project, task, name, media_type, size, sha256, "
                       "version, created_at) VALUES (:id, :p, :t, :n, :m, :s, :h, :v, :c)",
              soci::use(a.id), soci::use(a.project), soci::use(a.task), soci::use(a.name),
              soci::use(a.media_type), soci::use(size), soci::use(a.sha256), soci::use(a.version),
              soci::use(created);
        } catch (...) {
          if (detail::is_unique_violation(kind())) return error(errc::conflict, "version taken");
          throw;
        }
        tx.commit();
        return a;
      });
      if (r || r.error().code() != errc::conflict || tries >= 20) return r;
    }
  }

  result<artifact_meta> get_artifact(std::string_view id) override {
    const std::string key(id);
    return run<artifact_meta>("get_artifact", [&](connection& c) -> result<artifact_meta> {
      auto found = select_artifacts(c, "WHERE id = :a", key, "");
      if (found.empty()) return error(errc::not_found, "artifact " + in_quotes(id) + " not found");
      return found.front();
    });
  }

  result<std::vector<artifact_meta>> list_artifacts(std::string_view project) override {
    const std::string key(project);
    return run<std::vector<artifact_meta>>(
        "list_artifacts", [&](connection& c) -> result<std::vector<artifact_meta>> {
          return select_artifacts(
              c,
              "WHERE project = :a AND version = (SELECT MAX(version) FROM artifacts b WHERE "
              "b.project = artifacts.project AND b.name = artifacts.name) ORDER BY name",
              key, "");
        });
  }

  result<std::vector<artifact_meta>> artifact_versions(std::string_view project,
                                                       std::string_view name) override {
    const std::string p(project);
    const std::string n(name);
    return run<std::vector<artifact_meta>>(
        "artifact_versions", [&](connection& c) -> result<std::vector<artifact_meta>> {
          return select_artifacts(c, "WHERE project = :a AND name = :b ORDER BY version", p, n);
        });
  }

  result<bool> artifact_digest_in_use(std::string_view sha256) override {
    const std::string key(sha256);
    return run<bool>("artifact_digest_in_use", [&](connection& c) -> result<bool> {
      int n = 0;
      c.session << "SELECT COUNT(*) FROM artifacts WHERE sha256 = :h", soci::use(key),
          soci::into(n);
      return n > 0;
    });
  }

  // ---- budgets ----
  // One row per key. A charge is one conditional UPDATE (the row lock on
  // PostgreSQL, the write lock on SQLite make it atomic across processes);
  // a missing row is inserted first (ON CONFLICT DO NOTHING: racing
  // creators are fine).

  result<budget_state> set_budget_limit(std::string key, std::int64_t limit) override {
    if (key.empty()) return error(errc::invalid_argument, "set_budget_limit: empty key");
    if (limit < 0) return error(errc::invalid_argument, "set_budget_limit: negative limit");
    const long long now = to_ns(clock_->now());
    return run<budget_state>("set_budget_limit", [&](connection& c) -> result<budget_state> {
      detail::transaction tx(c, kind());
      long long lim = limit;
      c.session << "INSERT INTO budgets (name, limit_value, spent, updated_at) VALUES (:k, :l, 0, "
                   ":t) ON CONFLICT (name) DO UPDATE SET limit_value = :l2, updated_at = :t2",
          soci::use(key), soci::use(lim), soci::use(now), soci::use(lim), soci::use(now);
      auto b = read_budget(c, key);
      tx.commit();
      return b;
    });
  }

  result<budget_state> charge_budget(std::string key, std::int64_t amount,
                                     bool within_limit) override {
    if (key.empty()) return error(errc::invalid_argument, "charge_budget: empty key");
    const long long now = to_ns(clock_->now());
    return run<budget_state>("charge_budget", [&](connection& c) -> result<budget_state> {
      detail::transaction tx(c, kind());
      c.session << "INSERT INTO budgets (name, limit_value, spent, updated_at) VALUES (:k, 0, 0, "
                   ":t) ON CONFLICT (name) DO NOTHING",
          soci::use(key), soci::use(now);
      long long a = amount;
      const int check = within_limit && amount > 0 ? 1 : 0;
      soci::statement st =
          (c.session.prepare << "UPDATE budgets SET spent = spent + :a, updated_at = :t WHERE "
                                "name = :k AND (:c = 0 OR limit_value = 0 OR spent + :a2 <= "
                                "limit_value)",
           soci::use(a), soci::use(now), soci::use(key), soci::use(check), soci::use(a));
      st.execute(true);
      auto b = read_budget(c, key);
      if (st.get_affected_rows() != 1) {
        return error(errc::limit_exceeded, "budget " + in_quotes(key) + ": " +
                                               std::to_string(b.spent) + " + " +
                                               std::to_string(amount) + " would pass its limit " +
                                               std::to_string(b.limit));
      }
      tx.commit();
      return b;
    });
  }

  result<budget_state> get_budget(std::string_view key) override {
    const std::string k(key);
    return run<budget_state>("get_budget", [&](connection& c) -> result<budget_state> {
      long long n = 0;
      c.session << "SELECT COUNT(*) FROM budgets WHERE name = :k", soci::use(k), soci::into(n);
      if (n == 0) return error(errc::not_found, "budget " + in_quotes(k) + " not found");
      return read_budget(c, k);
    });
  }

  // ---- leases ----
  // One row per attempt (0003_leases.sql). Every decision is one
  // conditional write whose affected-row count says who won: on PostgreSQL
  // (READ COMMITTED) a second writer of a row waits for the first to commit,
  // then re-checks its WHERE clause against the committed row, and an
  // INSERT ... ON CONFLICT DO NOTHING waits for a racing insert of the same
  // key the same way; on SQLite the write transactions (BEGIN IMMEDIATE)
  // run one at a time anyway.

  result<task_lease> acquire_lease(const lease_key& key, std::string_view worker, time_point now,
                                   duration ttl) override {
    if (auto e = check_acquire("acquire_lease", key, worker, ttl)) return *e;
    const std::string who(worker);
    return run<task_lease>("acquire_lease", [&](connection& c) -> result<task_lease> {
      detail::transaction tx(c, kind());
      auto l = acquire_in(c, key, who, to_ns(now), to_ns(now + ttl));
      if (l) tx.commit();
      return l;
    });
  }

  std::vector<result<task_lease>> acquire_leases(const std::vector<lease_key>& keys,
                                                 std::string_view worker, time_point now,
                                                 duration ttl) override {
    std::vector<result<task_lease>> out(keys.size(), error(errc::internal, "not reached"));
    std::vector<std::size_t> todo;
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (auto e = check_acquire("acquire_leases", keys[i], worker, ttl)) {
        out[i] = *e;
      } else {
        todo.push_back(i);
      }
    }
    if (todo.empty()) return out;
    // Task rows are share-locked in id order, as every batch here does.
    std::sort(todo.begin(), todo.end(),
              [&](std::size_t a, std::size_t b) { return keys[a].task_id < keys[b].task_id; });
    const std::string who(worker);
    auto all = run<bool>("acquire_leases", [&](connection& c) -> result<bool> {
      detail::transaction tx(c, kind());
      for (std::size_t i : todo) out[i] = acquire_in(c, keys[i], who, to_ns(now), to_ns(now + ttl));
      tx.commit();
      return true;
    });
    if (!all) {
      for (std::size_t i : todo) out[i] = all.error();
    }
    return out;
  }

  static std::optional<aise::error> check_acquire(std::string_view op, const lease_key& key,
                                                  std::string_view worker, duration ttl) {
    if (auto e = check_lease_key(op, key)) return e;
    if (worker.empty()) return error(errc::invalid_argument, std::string(op) + ": empty worker");
    if (ttl <= duration::zero())
      return error(errc::invalid_argument, std::string(op) + ": the ttl must be positive");
    return std::nullopt;
  }

  // The body of acquire_lease inside the caller's transaction; writes
  // nothing when it returns an error.
  result<task_lease> acquire_in(connection& c, const lease_key& key, const std::string& who,
                                long long acquired, long long expires) {
    // On PostgreSQL the task row stays share-locked until commit: a
    // change of the task waits, so the check holds while the lease is taken.
    std::string state;
    int attempt = 0;
    c.session << std::string("SELECT state, attempt FROM tasks WHERE id = :id") +
                     (kind() == dialect::postgresql ? " FOR SHARE" : ""),
        soci::use(key.task_id), soci::into(state), soci::into(attempt);
    if (!c.session.got_data())
      return error(errc::not_found, "acquire_lease: task " + in_quotes(key.task_id) + " not found");
    if (state != to_string(task_state::running) || attempt != key.attempt)
      return error(errc::conflict, "acquire_lease: task " + in_quotes(key.task_id) + " is " +
                                       state + " at attempt " + std::to_string(attempt) +
                                       ", not running attempt " + std::to_string(key.attempt));
    const int number = key.attempt;
    const int held = static_cast<int>(lease_state::held);
    soci::statement take =
        (c.session.prepare << "INSERT INTO task_leases (task_id, attempt, worker, state, "
                              "acquired_at, expires_at) VALUES (:t, :a, :w, :s, :n, :e) "
                              "ON CONFLICT (task_id, attempt) DO NOTHING",
         soci::use(key.task_id), soci::use(number), soci::use(who), soci::use(held),
         soci::use(acquired), soci::use(expires));
    take.execute(true);
    if (take.get_affected_rows() != 1) {
      // Delivered again to its holder: a renewal. Anything else lost.
      soci::statement renew =
          (c.session.prepare << "UPDATE task_leases SET expires_at = :e WHERE task_id = :t AND "
                                "attempt = :a AND state = :s AND worker = :w",
           soci::use(expires), soci::use(key.task_id), soci::use(number), soci::use(held),
           soci::use(who));
      renew.execute(true);
      if (renew.get_affected_rows() != 1) {
        auto l = select_lease(c, key);
        return error(errc::conflict,
                     "acquire_lease: " +
                         (l ? describe_lease(*l) : "the lease " + lease_name(key) + " is taken"));
      }
    }
    auto l = select_lease(c, key);
    if (!l)
      return error(errc::internal, "acquire_lease: the lease " + lease_name(key) + " vanished");
    return std::move(*l);
  }

  result<std::vector<lease_key>> renew_leases(std::string_view worker,
                                              const std::vector<lease_key>& keys, time_point now,
                                              duration ttl) override {
    if (worker.empty()) return error(errc::invalid_argument, "renew_leases: empty worker");
    if (ttl <= duration::zero())
      return error(errc::invalid_argument, "renew_leases: the ttl must be positive");
    if (keys.empty()) return std::vector<lease_key>{};
    const std::string who(worker);
    const long long expires = to_ns(now + ttl);
    return run<std::vector<lease_key>>(
        "renew_leases", [&](connection& c) -> result<std::vector<lease_key>> {
          detail::transaction tx(c, kind());
          std::set<std::pair<std::string, int>> renewed;
          const int held = static_cast<int>(lease_state::held);
          if (kind() == dialect::postgresql) {
            // One statement for every key: the keys as two arrays. The
            // heartbeat of every worker: prepared once per connection.
            struct values {
              std::string ids, numbers, worker, task_id;
              long long expires = 0;
              int held = 0, attempt = 0;
            };
            auto prepare = [](values& v, connection& c) {
              return std::make_unique<soci::statement>(
                  (c.session.prepare
                       << "UPDATE task_leases AS l SET expires_at = :e FROM unnest(CAST(:t "
                          "AS text[]), CAST(:a AS int[])) AS k(task_id, attempt) WHERE "
                          "l.task_id = k.task_id AND l.attempt = k.attempt AND l.state = :s "
                          "AND l.worker = :w RETURNING l.task_id, l.attempt",
                   soci::use(v.expires), soci::use(v.ids), soci::use(v.numbers), soci::use(v.held),
                   soci::use(v.worker), soci::into(v.task_id), soci::into(v.attempt)));
            };
            auto [v, st] = cached<values>(c, cached_id::renew_leases_pg, prepare);
            pg_array ids, numbers;
            for (const lease_key& k : keys) {
              ids.add(k.task_id);
              numbers.add(static_cast<long long>(k.attempt));
            }
            v.ids = ids.done();
            v.numbers = numbers.done();
            v.expires = expires;
            v.held = held;
            v.worker = who;
            for (bool got = st.execute(true); got; got = st.fetch())
              renewed.emplace(v.task_id, v.attempt);
          } else {
            // SQLite: a statement per batch of keys, within the bound-variable limit.
            constexpr std::size_t batch = 400;
            std::string task_id;
            int attempt = 0;
            for (std::size_t from = 0; from < keys.size(); from += batch) {
              const std::size_t n = std::min(batch, keys.size() - from);
              std::vector<int> numbers;
              numbers.reserve(n);
              std::string sql =
                  "UPDATE task_leases SET expires_at = :e WHERE state = :s AND worker = :w AND "
                  "(task_id, attempt) IN (VALUES ";
              soci::statement st(c.session);
              st.exchange(soci::use(expires, "e"));
              st.exchange(soci::use(held, "s"));
              st.exchange(soci::use(who, "w"));
              for (std::size_t i = 0; i < n; ++i) {
                const lease_key& k = keys[from + i];
                numbers.push_back(k.attempt);  // reserved: the addresses stay
                const std::string index = std::to_string(i);
                sql += fmt::format("{}(:t{}, :a{})", i == 0 ? "" : ", ", index, index);
                st.exchange(soci::use(k.task_id, "t" + index));
                st.exchange(soci::use(numbers.back(), "a" + index));
              }
              sql += ") RETURNING task_id, attempt";
              st.exchange(soci::into(task_id));
              st.exchange(soci::into(attempt));
              st.alloc();
              st.prepare(sql);
              st.define_and_bind();
              // Every row is stepped through: SQLite refuses to commit while
              // a statement still has rows to give.
              for (bool got = st.execute(true); got; got = st.fetch())
                renewed.emplace(task_id, attempt);
            }
          }
          tx.commit();
          std::vector<lease_key> out;
          for (const lease_key& k : keys)
            if (renewed.count({k.task_id, k.attempt}) == 0) out.push_back(k);
          return out;
        });
  }

  result<task_lease> finish_lease(const lease_key& key, std::string_view worker,
                                  nlohmann::json outcome, time_point now) override {
    if (auto e = check_lease_key("finish_lease", key)) return *e;
    if (worker.empty()) return error(errc::invalid_argument, "finish_lease: empty worker");
    const std::string who(worker);
    std::string text;
    try {
      text = dump(outcome);
    } catch (...) {
      return detail::to_error("finish_lease", nullptr, kind());
    }
    return run<task_lease>("finish_lease", [&](connection& c) -> result<task_lease> {
      detail::transaction tx(c, kind());
      auto l = finish_in(c, key, who, text, to_ns(now));
      if (l) tx.commit();  // a repeat of the holder's finish writes nothing
      return l;
    });
  }

  std::vector<result<task_lease>> finish_leases(const std::vector<lease_outcome>& items,
                                                std::string_view worker, time_point now) override {
    std::vector<result<task_lease>> out(items.size(), error(errc::internal, "not reached"));
    std::vector<std::pair<std::size_t, std::string>> todo;
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (auto e = check_lease_key("finish_leases", items[i].key)) {
        out[i] = *e;
      } else if (worker.empty()) {
        out[i] = error(errc::invalid_argument, "finish_leases: empty worker");
      } else {
        try {
          todo.emplace_back(i, dump(items[i].outcome));
        } catch (...) {
          out[i] = detail::to_error("finish_leases", nullptr, kind());
        }
      }
    }
    if (todo.empty()) return out;
    const std::string who(worker);
    auto all = run<bool>("finish_leases", [&](connection& c) -> result<bool> {
      detail::transaction tx(c, kind());
      for (const auto& [i, text] : todo) out[i] = finish_in(c, items[i].key, who, text, to_ns(now));
      tx.commit();
      return true;
    });
    if (!all) {
      for (const auto& [i, text] : todo) out[i] = all.error();
    }
    return out;
  }

  // The body of finish_lease inside the caller's transaction.
  result<task_lease> finish_in(connection& c, const lease_key& key, const std::string& who,
                               const std::string& text, long long ended) {
    const int number = key.attempt;
    const int held = static_cast<int>(lease_state::held);
    const int done = static_cast<int>(lease_state::done);
    soci::statement st =
        (c.session.prepare << "UPDATE task_leases SET state = :d, ended_at = :n, outcome = :o "
                              "WHERE task_id = :t AND attempt = :a AND state = :s AND "
                              "worker = :w",
         soci::use(done), soci::use(ended), soci::use(text), soci::use(key.task_id),
         soci::use(number), soci::use(held), soci::use(who));
    st.execute(true);
    const bool won = st.get_affected_rows() == 1;
    auto l = select_lease(c, key);
    if (!l) return error(errc::not_found, "finish_lease: no lease " + lease_name(key));
    if (!won && (l->worker != who || l->state != lease_state::done))
      return error(errc::conflict, "finish_lease: " + describe_lease(*l));
    return std::move(*l);
  }

  result<task_lease> end_lease(const lease_key& key, lease_state to, time_point now,
                               bool only_if_expired) override {
    if (auto e = check_lease_key("end_lease", key)) return *e;
    if (to != lease_state::lost && to != lease_state::revoked)
      return error(errc::invalid_argument,
                   "end_lease: a lease ends lost or revoked, not " + std::string(to_string(to)));
    const long long ended = to_ns(now);
    return run<task_lease>("end_lease", [&](connection& c) -> result<task_lease> {
      detail::transaction tx(c, kind());
      int exists = 0;
      c.session << "SELECT COUNT(*) FROM tasks WHERE id = :id", soci::use(key.task_id),
          soci::into(exists);
      if (exists == 0)
        return error(errc::not_found, "end_lease: task " + in_quotes(key.task_id) + " not found");
      const int number = key.attempt;
      const int state = static_cast<int>(to);
      const int held = static_cast<int>(lease_state::held);
      const int check_expiry = only_if_expired ? 1 : 0;
      // Nobody took it yet: an ended row, so that no delivery can take it later.
      soci::statement create =
          (c.session.prepare << "INSERT INTO task_leases (task_id, attempt, worker, state, "
                                "acquired_at, expires_at, ended_at) VALUES (:t, :a, '', :s, 0, 0, "
                                ":n) ON CONFLICT (task_id, attempt) DO NOTHING",
           soci::use(key.task_id), soci::use(number), soci::use(state), soci::use(ended));
      create.execute(true);
      if (create.get_affected_rows() != 1) {
        soci::statement end =
            (c.session.prepare << "UPDATE task_leases SET state = :s, ended_at = :n WHERE "
                                  "task_id = :t AND attempt = :a AND state = :h AND (:x = 0 OR "
                                  "expires_at < :n2)",
             soci::use(state), soci::use(ended), soci::use(key.task_id), soci::use(number),
             soci::use(held), soci::use(check_expiry), soci::use(ended));
        end.execute(true);
      }
      auto l = select_lease(c, key);
      if (!l) return error(errc::internal, "end_lease: the lease " + lease_name(key) + " vanished");
      tx.commit();
      return std::move(*l);
    });
  }

  result<std::vector<task_lease>> get_leases(const std::vector<std::string>& task_ids) override {
    if (task_ids.size() > max_page)
      return error(errc::invalid_argument, "get_leases: " + std::to_string(task_ids.size()) +
                                               " task ids, at most " + std::to_string(max_page) +
                                               " per call");
    if (task_ids.empty()) return std::vector<task_lease>{};
    return run<std::vector<task_lease>>(
        "get_leases", [&](connection& c) -> result<std::vector<task_lease>> {
          std::vector<std::string> ids(task_ids);
          std::sort(ids.begin(), ids.end());
          ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
          std::vector<task_lease> out;
          lease_row r;
          auto bind_into = [&r](soci::statement& st) {
            st.exchange(soci::into(r.task_id));
            st.exchange(soci::into(r.attempt));
            st.exchange(soci::into(r.worker));
            st.exchange(soci::into(r.state));
            st.exchange(soci::into(r.acquired_at));
            st.exchange(soci::into(r.expires_at));
            st.exchange(soci::into(r.ended_at, r.ended_ind));
            st.exchange(soci::into(r.outcome, r.outcome_ind));
          };
          const std::string select =
              std::string("SELECT ") + lease_columns + " FROM task_leases WHERE task_id ";
          if (kind() == dialect::postgresql) {
            pg_array list;
            for (const auto& id : ids) list.add(id);
            const std::string all = list.done();
            soci::statement st(c.session);
            st.exchange(soci::use(all, "ids"));
            bind_into(st);
            st.alloc();
            st.prepare(select + "= ANY(CAST(:ids AS text[]))");
            st.define_and_bind();
            for (bool got = st.execute(true); got; got = st.fetch()) out.push_back(r.to_lease());
          } else {
            constexpr std::size_t batch = 500;  // within SQLite's bound-variable limit
            for (std::size_t from = 0; from < ids.size(); from += batch) {
              const std::size_t n = std::min(batch, ids.size() - from);
              std::string in = "IN (";
              soci::statement st(c.session);
              for (std::size_t i = 0; i < n; ++i) {
                in += fmt::format("{}:p{}", i == 0 ? "" : ", ", i);
                st.exchange(soci::use(ids[from + i], "p" + std::to_string(i)));
              }
              bind_into(st);
              st.alloc();
              st.prepare(select + in + ")");
              st.define_and_bind();
              for (bool got = st.execute(true); got; got = st.fetch()) out.push_back(r.to_lease());
            }
          }
          // Byte order of ids (as the in-memory store), whatever the collation.
          std::sort(out.begin(), out.end(), [](const task_lease& a, const task_lease& b) {
            return a.task_id != b.task_id ? a.task_id < b.task_id : a.attempt < b.attempt;
          });
          return out;
        });
  }

 private:
  /// The lease row of `key`, if there is one.
  std::optional<task_lease> select_lease(connection& c, const lease_key& key) {
    lease_row r;
    const int number = key.attempt;
    c.session << std::string("SELECT ") + lease_columns +
                     " FROM task_leases WHERE task_id = :t AND attempt = :a",
        soci::use(key.task_id), soci::use(number), soci::into(r.task_id), soci::into(r.attempt),
        soci::into(r.worker), soci::into(r.state), soci::into(r.acquired_at),
        soci::into(r.expires_at), soci::into(r.ended_at, r.ended_ind),
        soci::into(r.outcome, r.outcome_ind);
    if (!c.session.got_data()) return std::nullopt;
    return r.to_lease();
  }

  budget_state read_budget(connection& c, const std::string& key) {
    budget_state b;
    b.key = key;
    long long limit = 0, spent = 0;
    c.session << "SELECT limit_value, spent FROM budgets WHERE name = :k", soci::use(key),
        soci::into(limit), soci::into(spent);
    b.limit = limit;
    b.spent = spent;
    return b;
  }

  /// A change's column values, computed before its transaction.
  struct change_values {
    long long updated = 0;
    long long event_at = 0, via_at = 0;  // the drafts' times, or now when left at the epoch
    std::string result_text;
    int error_mode = 0;  // 0 keep, 1 set, 2 clear (clear_error before error: both = replace)
    std::string error_value;
  };

  /// Validates `u` and computes its column values (times left at the
  /// epoch become now).
  result<change_values> prepare_change(const std::string& op, const task_update& u) const {
    if (u.id.empty()) return error(errc::invalid_argument, op + ": empty task id");
    if (auto e = check_draft(op, u.event)) return *e;
    if (u.via_event) {
      if (auto e = check_draft(op + ": via_event", *u.via_event)) return *e;
      if (u.via_event->project != u.event.project)
        return error(errc::invalid_argument, op + ": via_event names project " +
                                                 in_quotes(u.via_event->project) + ", the event " +
                                                 in_quotes(u.event.project));
    }
    const time_point now = clock_->now();
    change_values out;
    out.event_at = to_ns(u.event.at == time_point{} ? now : u.event.at);
    if (u.via_event) out.via_at = to_ns(u.via_event->at == time_point{} ? now : u.via_event->at);
    out.updated = to_ns(u.at == time_point{} ? now : u.at);
    if (u.result) out.result_text = dump(*u.result);
    out.error_mode = u.error ? 1 : (u.clear_error ? 2 : 0);
    if (u.error) out.error_value = error_text(*u.error);
    return out;
  }

  /// Several changes of one task in one transaction, folded into one
  /// compare-and-set: the values of the last change, the result and error
  /// as the changes leave them, the version moved by their number.
  struct folded_change {
    const task_update* last = nullptr;
    const change_values* last_values = nullptr;
    std::uint64_t expected = 0;  // of the first change
    long long steps = 0;
    const std::string* result = nullptr;  // the last result set, if any
    int error_mode = 0;                   // 0 keep, 1 set (from `error`), 2 clear
    const std::string* error = nullptr;
  };

  /// The changes of one transaction, inside it: one compare-and-set per
  /// task (its changes folded) and one write per attempt row (the last
  /// one of each number), then one sequence reservation per project
  /// (projects in name order, so transactions lock counters in one order),
  /// then every event. Returns the sequence of each change's event.
  result<std::vector<std::uint64_t>> write_changes(connection& c,
                                                   std::span<const task_update> changes,
                                                   std::span<const change_values> values) {
    std::vector<folded_change> folded;
    std::unordered_map<std::string_view, std::size_t> by_task;
    std::map<std::pair<std::string_view, int>, const task_attempt*> attempts;
    std::vector<std::pair<std::string_view, const task_attempt*>> attempt_order;
    for (std::size_t i = 0; i < changes.size(); ++i) {
      const task_update& u = changes[i];
      auto [it, first] = by_task.try_emplace(u.id, folded.size());
      if (first) {
        folded.push_back({.expected = u.expected_version});
      }
      folded_change& f = folded[it->second];
      if (!first && u.expected_version != f.expected + static_cast<std::uint64_t>(f.steps)) {
        return error(errc::conflict, "task " + in_quotes(u.id) + ": expected version " +
                                         std::to_string(u.expected_version) +
                                         " but the batch leaves version " +
                                         std::to_string(f.expected + f.steps));
      }
      f.last = &u;
      f.last_values = &values[i];
      ++f.steps;
      if (u.result) f.result = &values[i].result_text;
      if (values[i].error_mode != 0) {
        f.error_mode = values[i].error_mode;
        f.error = &values[i].error_value;
      }
      if (u.attempt_row) {
        auto [at, fresh] = attempts.try_emplace({u.id, u.attempt_row->number}, &*u.attempt_row);
        if (fresh) {
          attempt_order.emplace_back(u.id, &*u.attempt_row);
        } else {
          at->second = &*u.attempt_row;  // an upsert: the last one wins
        }
      }
    }
    if (kind() == dialect::postgresql && folded.size() > 1) {
      if (auto r = compare_and_set_many(c, folded); !r) return r.error();
    } else {
      for (const folded_change& f : folded) {
        if (auto r = compare_and_set(c, f); !r) return r.error();
      }
    }
    std::vector<std::pair<std::string_view, const task_attempt*>> rows;
    rows.reserve(attempt_order.size());
    for (const auto& [id, first] : attempt_order)
      rows.emplace_back(id, attempts.at({id, first->number}));
    upsert_attempts(c, rows);
    std::map<std::string_view, std::pair<long long, std::uint64_t>> projects;  // count, next
    for (const auto& u : changes) projects[u.event.project].first += u.via_event ? 2 : 1;
    for (auto& [project, counts] : projects)
      counts.second = reserve_sequences(c, std::string(project), counts.first);
    std::vector<std::uint64_t> out;
    out.reserve(changes.size());
    std::vector<numbered_event> numbered;
    numbered.reserve(2 * changes.size());
    for (std::size_t i = 0; i < changes.size(); ++i) {
      const task_update& u = changes[i];
      std::uint64_t& next = projects[u.event.project].second;
      if (u.via_event) numbered.push_back({&*u.via_event, next++, values[i].via_at});
      out.push_back(next);
      numbered.push_back({&u.event, next++, values[i].event_at});
    }
    insert_events(c, numbered);
    return out;
  }

  // ---- PostgreSQL: one statement for many rows -------------------------------
  // A batch on PostgreSQL would otherwise pay a network round trip per row;
  // these pass every column as one array (unnest) instead.

  /// A PostgreSQL array literal, element by element ("{"a","b\\"c",NULL}").
  class pg_array {
   public:
    void add(std::string_view v) {
      separate();
      text_ += '"';
      for (char ch : v) {
        if (ch == '"' || ch == '\\') text_ += '\\';
        text_ += ch;
      }
      text_ += '"';
    }
    void add(long long v) {
      separate();
      text_ += std::to_string(v);
    }
    void add_null() {
      separate();
      text_ += "NULL";
    }
    [[nodiscard]] std::string done() const { return text_ + "}"; }

   private:
    void separate() {
      if (text_.size() > 1) text_ += ',';
    }
    std::string text_ = "{";
  };

  struct numbered_event {
    const event_draft* draft;
    std::uint64_t sequence;
    long long at;  // nanoseconds since the epoch
  };

  void insert_events(connection& c, std::span<const numbered_event> events) {
    if (kind() != dialect::postgresql || events.size() < 2) {
      for (const auto& e : events) insert_event(c, *e.draft, e.sequence, e.at);
      return;
    }
    pg_array project, sequence, type, subject, at, data;
    for (const auto& e : events) {
      project.add(e.draft->project);
      sequence.add(static_cast<long long>(e.sequence));
      type.add(e.draft->type);
      subject.add(e.draft->subject);
      at.add(e.at);
      data.add(dump(e.draft->data));
    }
    const std::string a = project.done(), b = sequence.done(), t = type.done(), j = subject.done(),
                      x = at.done(), d = data.done();
    c.session << "INSERT INTO events (project, sequence, type, subject, at, data) SELECT * FROM "
                 "unnest(CAST(:p AS text[]), CAST(:s AS bigint[]), CAST(:t AS text[]), "
                 "CAST(:j AS text[]), CAST(:a AS bigint[]), CAST(:d AS text[]))",
        soci::use(a), soci::use(b), soci::use(t), soci::use(j), soci::use(x), soci::use(d);
  }

  void upsert_attempts(connection& c,
                       std::span<const std::pair<std::string_view, const task_attempt*>> rows) {
    if (kind() != dialect::postgresql || rows.size() < 2) {
      for (const auto& [id, a] : rows) upsert_attempt(c, std::string(id), *a);
      return;
    }
    pg_array task, number, agent, started, finished, outcome, err;
    for (const auto& [id, a] : rows) {
      task.add(id);
      number.add(static_cast<long long>(a->number));
      agent.add(a->agent);
      started.add(to_ns(a->started_at));
      if (a->finished_at) {
        finished.add(to_ns(*a->finished_at));
      } else {
        finished.add_null();
      }
      outcome.add(to_string(a->outcome));
      if (a->error) {
        err.add(error_text(*a->error));
      } else {
        err.add_null();
      }
    }
    const std::string t = task.done(), n = number.done(), g = agent.done(), s = started.done(),
                      f = finished.done(), o = outcome.done(), e = err.done();
    c.session << "INSERT INTO task_attempts (task_id, number, agent, started_at, finished_at, "
                 "outcome, error) SELECT * FROM unnest(CAST(:t AS text[]), CAST(:n AS int[]), "
                 "CAST(:g AS text[]), CAST(:s AS bigint[]), CAST(:f AS bigint[]), "
                 "CAST(:o AS text[]), CAST(:e AS text[])) ON CONFLICT (task_id, number) DO UPDATE "
                 "SET agent = excluded.agent, started_at = excluded.started_at, finished_at = "
                 "excluded.finished_at, outcome = excluded.outcome, error = excluded.error",
        soci::use(t), soci::use(n), soci::use(g), soci::use(s), soci::use(f), soci::use(o),
        soci::use(e);
  }

  /// "task 'x' already exists" from PostgreSQL's unique-violation detail
  /// ("Key (id)=(x) already exists."), or a general text without it.
  static std::string taken_id(std::string_view what) {
    constexpr std::string_view key = "Key (id)=(";
    const auto from = what.find(key);
    const auto to = from == std::string_view::npos ? from : what.find(") already exists", from);
    if (to == std::string_view::npos) return "a task id in the batch is already taken";
    const auto start = from + key.size();
    return "task " + in_quotes(what.substr(start, to - start)) + " already exists";
  }

  /// The task rows of insert_tasks in one INSERT (dependencies row by row).
  void insert_tasks_many(connection& c, std::vector<task_row>& rows) {
    std::array<pg_array, 24> col;
    auto opt = [](pg_array& a, long long v, soci::indicator ind) {
      if (ind == soci::i_ok) {
        a.add(v);
      } else {
        a.add_null();
      }
    };
    auto opt_text = [](pg_array& a, const std::string& v, soci::indicator ind) {
      if (ind == soci::i_ok) {
        a.add(v);
      } else {
        a.add_null();
      }
    };
    for (const task_row& r : rows) {
      col[0].add(r.id);
      col[1].add(r.project);
      col[2].add(r.kind);
      col[3].add(r.capability);
      col[4].add(r.effective);
      col[5].add(r.description);
      col[6].add(static_cast<long long>(r.priority));
      col[7].add(r.payload);
      col[8].add(r.depends_on);
      col[9].add(static_cast<long long>(r.max_attempts));
      opt(col[10], r.timeout, r.timeout_ind);
      opt(col[11], r.deadline, r.deadline_ind);
      col[12].add(static_cast<long long>(r.requires_approval));
      col[13].add(static_cast<long long>(r.policy));
      col[14].add(r.parent);
      col[15].add(r.state);
      col[16].add(static_cast<long long>(r.attempt));
      col[17].add(r.agent);
      opt_text(col[18], r.result, r.result_ind);
      opt_text(col[19], r.error, r.error_ind);
      col[20].add(r.created_at);
      col[21].add(r.updated_at);
      col[22].add(r.not_before);
      col[23].add(r.version);
    }
    static constexpr std::array<const char*, 24> types = {
        "text", "text", "text",   "text",   "text",   "text",   "int",    "text",
        "text", "int",  "bigint", "bigint", "int",    "int",    "text",   "text",
        "int",  "text", "text",   "text",   "bigint", "bigint", "bigint", "bigint"};
    std::string sql = std::string("INSERT INTO tasks (") + task_columns + ") SELECT * FROM unnest(";
    std::array<std::string, 24> values;
    for (std::size_t i = 0; i < col.size(); ++i) {
      values[i] = col[i].done();
      sql += fmt::format("{}CAST(:c{} AS {}[])", i == 0 ? "" : ", ", i, types[i]);
    }
    sql += ")";
    soci::statement st = (c.session.prepare << sql);
    for (auto& v : values) st.exchange(soci::use(v));
    st.define_and_bind();
    st.execute(true);
    for (task_row& r : rows) insert_dependencies(c, r);
  }

  /// Every compare-and-set of a batch in one UPDATE. When fewer rows than
  /// tasks change, the first task that is missing or was changed elsewhere
  /// is named (the caller's transaction then rolls everything back).
  result<void> compare_and_set_many(connection& c, std::span<const folded_change> folded) {
    pg_array id, expected, steps, state, attempt, agent, updated, not_before, set_result, result_,
        error_mode, error_;
    for (const folded_change& f : folded) {
      const task_update& u = *f.last;
      id.add(u.id);
      expected.add(static_cast<long long>(f.expected));
      steps.add(f.steps);
      state.add(to_string(u.state));
      attempt.add(static_cast<long long>(u.attempt));
      agent.add(u.agent);
      updated.add(f.last_values->updated);
      not_before.add(to_ns(u.not_before));
      set_result.add(f.result != nullptr ? 1LL : 0LL);
      if (f.result != nullptr) {
        result_.add(*f.result);
      } else {
        result_.add_null();
      }
      error_mode.add(static_cast<long long>(f.error_mode));
      if (f.error != nullptr) {
        error_.add(*f.error);
      } else {
        error_.add_null();
      }
    }
    const std::string a1 = id.done(), a2 = expected.done(), a3 = steps.done(), a4 = state.done(),
                      a5 = attempt.done(), a6 = agent.done(), a7 = updated.done(),
                      a8 = not_before.done(), a9 = set_result.done(), a10 = result_.done(),
                      a11 = error_mode.done(), a12 = error_.done();
    soci::statement st =
        (c.session.prepare
             << "UPDATE tasks AS t SET state = v.state, attempt = v.attempt, agent = v.agent, "
                "updated_at = v.updated_at, not_before = v.not_before, version = t.version + "
                "v.steps, result = CASE WHEN v.set_result = 1 THEN v.result ELSE t.result END, "
                "error = CASE WHEN v.error_mode = 1 THEN v.error WHEN v.error_mode = 2 THEN NULL "
                "ELSE t.error END FROM unnest(CAST(:a1 AS text[]), CAST(:a2 AS bigint[]), "
                "CAST(:a3 AS bigint[]), CAST(:a4 AS text[]), CAST(:a5 AS int[]), "
                "CAST(:a6 AS text[]), CAST(:a7 AS bigint[]), CAST(:a8 AS bigint[]), "
                "CAST(:a9 AS int[]), CAST(:a10 AS text[]), CAST(:a11 AS int[]), "
                "CAST(:a12 AS text[])) AS v(id, expected, steps, state, attempt, agent, "
                "updated_at, not_before, set_result, result, error_mode, error) "
                "WHERE t.id = v.id AND t.version = v.expected",
         soci::use(a1), soci::use(a2), soci::use(a3), soci::use(a4), soci::use(a5), soci::use(a6),
         soci::use(a7), soci::use(a8), soci::use(a9), soci::use(a10), soci::use(a11),
         soci::use(a12));
    st.execute(true);
    if (static_cast<std::size_t>(st.get_affected_rows()) == folded.size()) return {};
    for (const folded_change& f : folded) {
      long long stored = 0;
      c.session << "SELECT version FROM tasks WHERE id = :id", soci::use(f.last->id),
          soci::into(stored);
      if (!c.session.got_data())
        return error(errc::not_found, "task " + in_quotes(f.last->id) + " not found");
      const auto applied = static_cast<long long>(f.expected) + f.steps;
      if (stored != applied) {
        return error(errc::conflict, "task " + in_quotes(f.last->id) + ": expected version " +
                                         std::to_string(f.expected) +
                                         " but the stored version is " + std::to_string(stored));
      }
    }
    return error(errc::conflict, "a batch of task changes was refused");
  }

  /// The compare-and-set of one task's (folded) changes.
  result<void> compare_and_set(connection& c, const folded_change& f) {
    const task_update& u = *f.last;
    // The compare-and-set, prepared once per connection.
    detail::hot_values& v = c.values;
    v.state = to_string(u.state);
    v.attempt = u.attempt;
    v.agent = u.agent;
    v.updated = f.last_values->updated;
    v.not_before = to_ns(u.not_before);
    v.set_result = f.result != nullptr ? 1 : 0;
    v.result = f.result != nullptr ? *f.result : std::string();
    v.error_mode = f.error_mode;
    v.error_mode2 = f.error_mode;
    v.error = f.error != nullptr ? *f.error : std::string();
    v.id = u.id;
    v.expected = static_cast<long long>(f.expected);
    v.steps = f.steps;
    if (!c.update_task) {
      c.update_task = std::make_unique<soci::statement>(
          (c.session.prepare
               << "UPDATE tasks SET state = :s, attempt = :a, agent = :g, updated_at = :u, "
                  "not_before = :nb, version = version + :k, "
                  "result = CASE WHEN :rs = 1 THEN :r ELSE result END, "
                  "error = CASE WHEN :em = 1 THEN :e WHEN :em2 = 2 THEN NULL ELSE error END "
                  "WHERE id = :id AND version = :v",
           soci::use(v.state), soci::use(v.attempt), soci::use(v.agent), soci::use(v.updated),
           soci::use(v.not_before), soci::use(v.steps), soci::use(v.set_result),
           soci::use(v.result), soci::use(v.error_mode), soci::use(v.error),
           soci::use(v.error_mode2), soci::use(v.id), soci::use(v.expected)));
    }
    soci::statement& st = *c.update_task;
    st.execute(true);
    if (st.get_affected_rows() != 1) {
      long long stored = 0;
      c.session << "SELECT version FROM tasks WHERE id = :id", soci::use(u.id), soci::into(stored);
      if (!c.session.got_data())
        return error(errc::not_found, "task " + in_quotes(u.id) + " not found");
      return error(errc::conflict, "task " + in_quotes(u.id) + ": expected version " +
                                       std::to_string(f.expected) + " but the stored version is " +
                                       std::to_string(stored));
    }
    return {};
  }

  [[nodiscard]] dialect kind() const noexcept { return pool_->kind(); }

  /// Leases a connection and runs `body` on it; every exception becomes an
  /// error value (and marks a lost connection for reopening).
  template <class T, class Body>
  result<T> run(std::string_view op, Body&& body) noexcept {
    try {
      auto lease = pool_->acquire();
      if (!lease) return lease.error();
      connection& c = **lease;
      try {
        return body(c);
      } catch (...) {
        return detail::to_error(op, &c, kind());
      }
    } catch (...) {
      return detail::to_error(op, nullptr, kind());
    }
  }

  /// Serializes the transactions that take `key` (PostgreSQL: a transaction
  /// advisory lock on its hash; SQLite: writers are serialized already), so
  /// writers of one "next version" do not race for it.
  void lock_key(connection& c, const std::string& key) {
    if (kind() != dialect::postgresql) return;
    int n = 0;
    c.session << "SELECT COUNT(*) FROM pg_advisory_xact_lock(hashtext(:k))", soci::use(key),
        soci::into(n);
  }

  /// Bumps the project's counter and writes the event; returns its sequence.
  /// One event with the next sequence of its project.
  std::uint64_t append(connection& c, const event_draft& e) {
    const std::uint64_t sequence = reserve_sequences(c, e.project, 1);
    insert_event(c, e, sequence, to_ns(e.at));
    return sequence;
  }

  /// Takes the next `n` sequences of `project` (its counter row stays
  /// locked until the transaction ends); returns the first.
  std::uint64_t reserve_sequences(connection& c, const std::string& project, long long n) {
    struct values {
      std::string project;
      long long n = 0, n2 = 0, last = 0;
    };
    auto [v, st] = cached<values>(c, cached_id::reserve_sequences, [](values& v, connection& c) {
      return std::make_unique<soci::statement>(
          (c.session.prepare << "INSERT INTO event_counters (project, last_sequence) VALUES (:p, "
                                ":n) ON CONFLICT (project) DO UPDATE SET last_sequence = "
                                "event_counters.last_sequence + :n2 RETURNING last_sequence",
           soci::use(v.project), soci::use(v.n), soci::use(v.n2), soci::into(v.last)));
    });
    v.project = project;
    v.n = n;
    v.n2 = n;
    st.execute(true);
    // Step past the one row RETURNING gives: SQLite keeps a statement that
    // still has a row to give "in progress", and refuses to commit then.
    const long long last = v.last;
    while (st.fetch()) {
    }
    return static_cast<std::uint64_t>(last - n + 1);
  }

  void insert_event(connection& c, const event_draft& e, std::uint64_t sequence, long long at) {
    detail::hot_values& v = c.values;
    v.event_project = e.project;
    v.event_sequence = static_cast<long long>(sequence);
    v.event_type = e.type;
    v.event_subject = e.subject;
    v.event_at = at;
    v.event_data = dump(e.data);
    if (!c.insert_event) {
      c.insert_event = std::make_unique<soci::statement>(
          (c.session.prepare << "INSERT INTO events (project, sequence, type, subject, at, data) "
                                "VALUES (:p, :s, :t, :j, :a, :d)",
           soci::use(v.event_project), soci::use(v.event_sequence), soci::use(v.event_type),
           soci::use(v.event_subject), soci::use(v.event_at), soci::use(v.event_data)));
    }
    c.insert_event->execute(true);
  }

  /// Slots of connection::cached.
  enum class cached_id : std::size_t {
    reserve_sequences,
    upsert_attempt,
    insert_task,
    renew_leases_pg
  };

  /// The statement in slot `id` of `c`, prepared by `make(values, c)` on
  /// first use, with the variables it binds.
  template <class Values, class Make>
  static std::pair<Values&, soci::statement&> cached(connection& c, cached_id id, Make make) {
    detail::cached_statement& slot = c.cached.at(static_cast<std::size_t>(id));
    if (!slot.statement) {
      auto values = std::make_shared<Values>();
      slot.statement = make(*values, c);
      slot.values = std::move(values);
    }
    return {*static_cast<Values*>(slot.values.get()), *slot.statement};
  }

  void insert_project(connection& c, const project& p) {
    const std::string metadata = dump(p.metadata);
    const int archived = p.archived ? 1 : 0;
    const long long created = to_ns(p.created_at);
    const long long updated = to_ns(p.updated_at);
    c.session << "INSERT INTO projects (id, name, description, metadata, archived, created_at, "
                 "updated_at) VALUES (:id, :n, :d, :m, :a, :c, :u)",
        soci::use(p.id), soci::use(p.name), soci::use(p.description), soci::use(metadata),
        soci::use(archived), soci::use(created), soci::use(updated);
  }

  std::vector<project> select_projects(connection& c, const std::string& where,
                                       const std::string& arg, std::size_t limit) {
    std::vector<project> out;
    std::string id, name, description, metadata;
    int archived = 0;
    long long created = 0, updated = 0;
    const long long n = static_cast<long long>(limit);
    soci::statement st =
        (c.session.prepare << "SELECT id, name, description, metadata, archived, created_at, "
                              "updated_at FROM projects " +
                                  where + " ORDER BY id LIMIT :n",
         soci::use(arg), soci::use(n), soci::into(id), soci::into(name), soci::into(description),
         soci::into(metadata), soci::into(archived), soci::into(created), soci::into(updated));
    st.execute();
    while (st.fetch()) {
      project p;
      p.id = id;
      p.name = name;
      p.description = description;
      p.metadata = parse_json(metadata);
      p.archived = archived != 0;
      p.created_at = from_ns(created);
      p.updated_at = from_ns(updated);
      out.push_back(std::move(p));
    }
    return out;
  }

  /// Agents matching `where` (parameters :p0, :p1, … bound from `params`), by id.
  std::vector<agent_record> select_agents(connection& c, const std::string& where,
                                          const std::vector<std::string>& params) {
    std::vector<agent_record> out;
    std::string id, project_id, kind_name, caps, status;
    int restarts = 0;
    long long heartbeat = 0, created = 0;
    soci::statement st(c.session);
    for (std::size_t i = 0; i < params.size(); ++i)
      st.exchange(soci::use(params[i], "p" + std::to_string(i)));
    st.exchange(soci::into(id));
    st.exchange(soci::into(project_id));
    st.exchange(soci::into(kind_name));
    st.exchange(soci::into(caps));
    st.exchange(soci::into(status));
    st.exchange(soci::into(restarts));
    st.exchange(soci::into(heartbeat));
    st.exchange(soci::into(created));
    st.alloc();
    st.prepare(
        "SELECT id, project, kind, capabilities, status, restarts, last_heartbeat, "
        "created_at FROM agents " +
        where + " ORDER BY id");
    st.define_and_bind();
    st.execute();
    while (st.fetch()) {
      agent_record a;
      a.id = id;
      a.project = project_id;
      a.kind = kind_name;
      a.capabilities = parse_json(caps).get<std::vector<std::string>>();
      a.status = status;
      a.restarts = restarts;
      a.last_heartbeat = from_ns(heartbeat);
      a.created_at = from_ns(created);
      out.push_back(std::move(a));
    }
    return out;
  }

  void insert_task(connection& c, task_row& r) {
    auto [v, st] = cached<task_row>(c, cached_id::insert_task, [](task_row& v, connection& c) {
      return std::make_unique<soci::statement>(
          (c.session.prepare
               << std::string("INSERT INTO tasks (") + task_columns +
                      ") VALUES (:id, :project, :kind, :capability, :effective, :description, "
                      ":priority, :payload, :depends_on, :max_attempts, :timeout, :deadline, "
                      ":requires_approval, :policy, :parent, :state, :attempt, :agent, :result, "
                      ":error, :created_at, :updated_at, :not_before, :version)",
           soci::use(v.id), soci::use(v.project), soci::use(v.kind), soci::use(v.capability),
           soci::use(v.effective), soci::use(v.description), soci::use(v.priority),
           soci::use(v.payload), soci::use(v.depends_on), soci::use(v.max_attempts),
           soci::use(v.timeout, v.timeout_ind), soci::use(v.deadline, v.deadline_ind),
           soci::use(v.requires_approval), soci::use(v.policy), soci::use(v.parent),
           soci::use(v.state), soci::use(v.attempt), soci::use(v.agent),
           soci::use(v.result, v.result_ind), soci::use(v.error, v.error_ind),
           soci::use(v.created_at), soci::use(v.updated_at), soci::use(v.not_before),
           soci::use(v.version)));
    });
    v = r;
    st.execute(true);
    insert_dependencies(c, r);
  }

  void insert_dependencies(connection& c, const task_row& r) {
    if (r.depends_on == "[]") return;
    const auto deps = parse_json(r.depends_on).get<std::vector<std::string>>();
    for (std::size_t i = 0; i < deps.size(); ++i) {
      const int position = static_cast<int>(i);
      c.session << "INSERT INTO task_dependencies (task_id, position, depends_on) VALUES (:t, "
                   ":p, :d)",
          soci::use(r.id), soci::use(position), soci::use(deps[i]);
    }
  }

  std::vector<task> select_tasks(connection& c, const std::string& where,
                                 const std::vector<std::string>& params, std::size_t limit) {
    std::vector<task> out;
    task_row r;
    const long long n = static_cast<long long>(limit);
    soci::statement st(c.session);
    for (std::size_t i = 0; i < params.size(); ++i) {
      st.exchange(soci::use(params[i], "p" + std::to_string(i)));
    }
    st.exchange(soci::use(n, "lim"));
    bind_task_into(st, r);
    st.alloc();
    st.prepare(std::string("SELECT ") + task_columns + " FROM tasks " + where +
               " ORDER BY id LIMIT :lim");
    st.define_and_bind();
    st.execute();
    while (st.fetch()) out.push_back(r.to_task());
    return out;
  }

  void upsert_attempt(connection& c, const std::string& task_id, const task_attempt& a) {
    struct values {
      std::string task_id, agent, outcome, error;
      int number = 0;
      long long started = 0, finished = 0;
      soci::indicator finished_ind = soci::i_null, error_ind = soci::i_null;
    };
    auto [v, st] = cached<values>(c, cached_id::upsert_attempt, [](values& v, connection& c) {
      return std::make_unique<soci::statement>(
          (c.session.prepare
               << "INSERT INTO task_attempts (task_id, number, agent, started_at, finished_at, "
                  "outcome, error) VALUES (:t, :n, :a, :s, :f, :o, :e) ON CONFLICT (task_id, "
                  "number) DO UPDATE SET agent = excluded.agent, started_at = excluded.started_at, "
                  "finished_at = excluded.finished_at, outcome = excluded.outcome, error = "
                  "excluded.error",
           soci::use(v.task_id), soci::use(v.number), soci::use(v.agent), soci::use(v.started),
           soci::use(v.finished, v.finished_ind), soci::use(v.outcome),
           soci::use(v.error, v.error_ind)));
    });
    v.task_id = task_id;
    v.number = a.number;
    v.agent = a.agent;
    v.started = to_ns(a.started_at);
    v.finished = a.finished_at ? to_ns(*a.finished_at) : 0;
    v.finished_ind = a.finished_at ? soci::i_ok : soci::i_null;
    v.outcome = to_string(a.outcome);
    v.error = a.error ? error_text(*a.error) : std::string();
    v.error_ind = a.error ? soci::i_ok : soci::i_null;
    st.execute(true);
  }

  std::vector<artifact_meta> select_artifacts(connection& c, const std::string& where,
                                              const std::string& a, const std::string& b) {
    std::vector<artifact_meta> out;
    artifact_row r;
    soci::statement st(c.session);
    st.exchange(soci::use(a, "a"));
    if (where.find(":b") != std::string::npos) st.exchange(soci::use(b, "b"));
    bind_artifact_into(st, r);
    st.alloc();
    st.prepare(std::string("SELECT ") + artifact_columns + " FROM artifacts " + where);
    st.define_and_bind();
    st.execute();
    while (st.fetch()) out.push_back(r.to_meta());
    return out;
  }

  /// Counts task changes; runs the configured retention every compact_every.
  void note_change() noexcept {
    const auto& r = options_.retention;
    if (r.max_events_per_project == 0 && r.max_event_age.count() == 0 &&
        r.max_finished_tasks == 0 && r.max_finished_task_age.count() == 0)
      return;
    if (changes_.fetch_add(1) + 1 < std::max<std::size_t>(1, options_.compact_every)) return;
    changes_.store(0);
    (void)compact(r);  // a failure is retried after the next compact_every changes
  }

  std::unique_ptr<detail::pool> pool_;
  std::shared_ptr<aise::clock> clock_;
  store_options options_;
  std::atomic<std::size_t> changes_{0};

 public:
  [[nodiscard]] pool_stats stats() const { return pool_->stats(); }
};

struct opened {
  detail::target where;
  std::unique_ptr<connection> first;
};

result<opened> open_first(const store_options& options) {
  auto where = detail::parse_url(options);
  if (!where) return where.error();
  auto first = detail::connect(*where, options, options.connect_attempts);
  if (!first) return first.error();
  return opened{std::move(*where), std::move(*first)};
}

}  // namespace

result<std::shared_ptr<store>> open_store(const store_options& options) {
  auto o = open_first(options);
  if (!o) return o.error();
  if (options.migrate) {
    auto s = detail::apply_migrations(*o->first, o->where.kind);
    if (!s) return s.error();
  } else {
    auto s = detail::read_status(*o->first, o->where.kind);
    if (!s) return s.error();
    if (!s->problem.empty()) return error(errc::invalid_argument, "sql: " + s->problem);
    if (s->database_version < s->library_version)
      return error(errc::invalid_argument,
                   fmt::format("sql: the database schema is at version {}, this libaise needs {}: "
                               "run `aise-admin migrate --db <url>` (or open with migrate on)",
                               s->database_version, s->library_version));
  }
  std::vector<std::unique_ptr<connection>> conns;
  conns.push_back(std::move(o->first));
  for (std::size_t i = 1; i < std::max<std::size_t>(1, options.pool_size); ++i) {
    auto c = detail::connect(o->where, options, 1);
    if (!c) return c.error();
    conns.push_back(std::move(*c));
  }
  auto clock = options.clock ? options.clock : make_system_clock();
  auto p = std::make_unique<detail::pool>(o->where, options, std::move(conns));
  return std::shared_ptr<store>(
      std::make_shared<sql_store>(std::move(p), std::move(clock), options));
}

std::optional<pool_stats> get_pool_stats(const store& s) {
  if (const auto* sql = dynamic_cast<const sql_store*>(&s)) return sql->stats();
  return std::nullopt;
}

result<schema_status> migrate(const store_options& options) {
  auto o = open_first(options);
  if (!o) return o.error();
  return detail::apply_migrations(*o->first, o->where.kind);
}

result<schema_status> status(const store_options& options) {
  auto o = open_first(options);
  if (!o) return o.error();
  return detail::read_status(*o->first, o->where.kind);
}

}  // namespace aise::sql
