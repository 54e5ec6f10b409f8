// The in-memory store: every table is an ordered container behind one mutex.
//
// Why it looks the way it does:
// - Ordered maps keyed by id give the id-ordered listings and the "after"
//   cursors of the store contract for free; `std::less<>` allows lookups by
//   string_view without building a std::string. Tasks, the one table that
//   grows fast, are a hash map plus an id order sorted lazily (see order_).
// - Each write has a prepare phase (validation and every copy or allocation
//   that may throw) and a commit phase made only of operations that cannot
//   throw (moves of nothrow-movable values, node splices, pops). So a
//   `std::bad_alloc` in the middle of a write leaves the store as it was:
//   the all-or-nothing rule of the contract holds even then. The
//   static_asserts below guard the nothrow-move assumptions.
// - update_task is on the orchestrator's hot path (about four calls per
//   task): it does one map lookup, moves what the by-value update carries
//   (the event included: it returns only the sequence), and appends to a
//   per-project deque (no reallocation of the whole event log as it grows).
//
// Choices store.hpp leaves open, made here (SQL stores should match):
// - A timestamp left at `time_point{}` is filled from the options' clock:
//   project created_at/updated_at, agent created_at (a replacement keeps the
//   first one), snapshot taken_at, task created_at (updated_at = created_at),
//   update_task `at`, event `at`, artifact created_at.
// - update_task applies `clear_error` before `error`: both set replaces it.
// - An attempt row is stored under the updated task's id, whatever its
//   `task_id` says (the key is (task id, number)).
// - list_attempts of an unknown task is `not_found`; read_events and
//   last_sequence of a project without events are empty and 0.
// - Only the latest `snapshots_kept` snapshots of an agent are kept (only
//   the latest is readable); everything else is kept until the store dies.
// - Leases: a lease row belongs to its task (retention drops them
//   together), so end_lease of an unknown task is `not_found` rather than
//   an ended row without a task; an empty task id or an attempt < 1 is
//   `invalid_argument` in every lease call; get_leases returns each task's
//   rows once, in byte order of the ids.

#include <aise/store.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace aise {
namespace {

static_assert(std::is_nothrow_move_constructible_v<task> &&
              std::is_nothrow_move_assignable_v<task>);
static_assert(std::is_nothrow_move_constructible_v<task_attempt> &&
              std::is_nothrow_move_assignable_v<task_attempt>);
static_assert(std::is_nothrow_move_constructible_v<event> &&
              std::is_nothrow_move_assignable_v<event>);
static_assert(std::is_nothrow_move_constructible_v<artifact_meta>);
static_assert(std::is_nothrow_move_constructible_v<task_lease> &&
              std::is_nothrow_move_assignable_v<task_lease>);
static_assert(std::is_nothrow_move_assignable_v<nlohmann::json> &&
              std::is_nothrow_move_assignable_v<std::optional<nlohmann::json>> &&
              std::is_nothrow_move_assignable_v<std::optional<aise::error>>);

constexpr std::size_t max_page = 1000;
/// Snapshots kept per agent. Only the latest is readable through the store
/// interface; a few older ones are kept for debugging, and the bound keeps
/// an agent that snapshots after every message from growing without limit.
constexpr std::size_t snapshots_kept = 16;

std::size_t clamp_limit(std::size_t limit) noexcept {
  return std::clamp<std::size_t>(limit, 1, max_page);
}

std::string in_quotes(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '\'';
  out += s;
  out += '\'';
  return out;
}

/// Builds the `internal` error for an exception caught at the boundary;
/// never throws (it falls back to an empty message when even that fails).
aise::error internal_error(std::string_view op, const char* what) noexcept {
  try {
    std::string message = "memory store: ";
    message += op;
    message += ": ";
    message += what;
    return {errc::internal, std::move(message)};
  } catch (...) {
    return {errc::internal, std::string()};
  }
}

/// Runs `body`, turning any exception into an `internal` error so that none
/// escapes a store member (the contract promises errors as values).
template <class Body>
auto guarded(std::string_view op, Body&& body) noexcept -> decltype(body()) {
  try {
    return std::forward<Body>(body)();
  } catch (const std::bad_alloc&) {
    return internal_error(op, "out of memory");
  } catch (const std::exception& e) {
    return internal_error(op, e.what());
  } catch (...) {
    return internal_error(op, "unknown exception");
  }
}

/// `invalid_argument` describing the first problem of an event draft, if any.
std::optional<aise::error> check_draft(std::string_view op, const event_draft& e) {
  if (e.project.empty())
    return fail(errc::invalid_argument, std::string(op) + ": event without a project");
  if (e.type.empty())
    return fail(errc::invalid_argument, std::string(op) + ": event without a type");
  return std::nullopt;
}

const std::string& effective_capability(const task& t) noexcept {
  return t.capability.empty() ? t.kind : t.capability;
}

bool matches(const task& t, const task_filter& f) {
  if (!f.project.empty() && t.project != f.project) return false;
  if (!f.parent.empty() && t.parent != f.parent) return false;
  if (!f.capability.empty() && effective_capability(t) != f.capability) return false;
  if (!f.states.empty() && std::find(f.states.begin(), f.states.end(), t.state) == f.states.end())
    return false;
  return true;
}

class memory_store final : public store {
 public:
  using store::insert_tasks;  // the copying overloads
  using store::update_task;
  memory_store(std::shared_ptr<aise::clock> clock, retention_policy retention)
      : clock_(std::move(clock)), retention_(retention) {}

  [[nodiscard]] std::string_view backend() const noexcept override { return "memory"; }
  [[nodiscard]] bool blocking() const noexcept override { return false; }

  // ---- projects ----

  result<project> create_project(project p) override {
    return guarded("create_project", [&]() -> result<project> {
      if (p.id.empty()) return fail(errc::invalid_argument, "create_project: empty project id");
      const time_point now = clock_->now();
      if (p.created_at == time_point{}) p.created_at = now;
      if (p.updated_at == time_point{}) p.updated_at = now;
      project copy = p;  // the return value, made before the commit
      std::lock_guard lock(mutex_);
      auto [it, inserted] = projects_.try_emplace(p.id, std::move(p));
      if (!inserted)
        return fail(errc::already_exists, "project " + in_quotes(it->first) + " already exists");
      return copy;
    });
  }

  result<project> get_project(std::string_view id) override {
    return guarded("get_project", [&]() -> result<project> {
      std::lock_guard lock(mutex_);
      auto it = projects_.find(id);
      if (it == projects_.end())
        return fail(errc::not_found, "project " + in_quotes(id) + " not found");
      return it->second;
    });
  }

  result<page<project>> list_projects(std::string_view after, std::size_t limit) override {
    return guarded("list_projects", [&]() -> result<page<project>> {
      limit = clamp_limit(limit);
      page<project> out;
      std::lock_guard lock(mutex_);
      auto it = after.empty() ? projects_.begin() : projects_.upper_bound(after);
      for (; it != projects_.end() && out.items.size() < limit; ++it)
        out.items.push_back(it->second);
      if (it != projects_.end()) out.next_cursor = out.items.back().id;
      return out;
    });
  }

  result<project> update_project(project p) override {
    return guarded("update_project", [&]() -> result<project> {
      if (p.id.empty()) return fail(errc::invalid_argument, "update_project: empty project id");
      if (p.updated_at == time_point{}) p.updated_at = clock_->now();
      std::lock_guard lock(mutex_);
      auto it = projects_.find(p.id);
      if (it == projects_.end())
        return fail(errc::not_found, "project " + in_quotes(p.id) + " not found");
      p.created_at = it->second.created_at;
      project copy = p;
      it->second = std::move(p);
      return copy;
    });
  }

  // ---- agents ----

  result<void> put_agent(agent_record a) override {
    return guarded("put_agent", [&]() -> result<void> {
      if (a.id.empty()) return fail(errc::invalid_argument, "put_agent: empty agent id");
      if (a.project.empty())
        return fail(errc::invalid_argument,
                    "put_agent: agent " + in_quotes(a.id) + " without a project");
      const time_point now = clock_->now();
      std::lock_guard lock(mutex_);
      auto it = agents_.find(a.id);
      if (it == agents_.end()) {
        if (a.created_at == time_point{}) a.created_at = now;
        agents_.try_emplace(a.id, std::move(a));
      } else {
        // A replacement keeps the first registration time unless given one.
        if (a.created_at == time_point{}) a.created_at = it->second.created_at;
        it->second = std::move(a);
      }
      return ok();
    });
  }

  result<agent_record> get_agent(std::string_view id) override {
    return guarded("get_agent", [&]() -> result<agent_record> {
      std::lock_guard lock(mutex_);
      auto it = agents_.find(id);
      if (it == agents_.end())
        return fail(errc::not_found, "agent " + in_quotes(id) + " not found");
      return it->second;
    });
  }

  result<std::vector<agent_record>> list_agents(std::string_view project) override {
    return guarded("list_agents", [&]() -> result<std::vector<agent_record>> {
      std::vector<agent_record> out;
      std::lock_guard lock(mutex_);
      for (const auto& [id, a] : agents_)
        if (project.empty() || a.project == project) out.push_back(a);
      return out;
    });
  }

  result<agent_snapshot> save_snapshot(agent_snapshot s) override {
    return guarded("save_snapshot", [&]() -> result<agent_snapshot> {
      if (s.agent_id.empty()) return fail(errc::invalid_argument, "save_snapshot: empty agent id");
      if (s.taken_at == time_point{}) s.taken_at = clock_->now();
      std::lock_guard lock(mutex_);
      snapshot_history& h = snapshots_[s.agent_id];
      s.version = h.last_version + 1;
      agent_snapshot copy = s;
      h.kept.push_back(std::move(s));  // strong guarantee: nothing changed if it throws
      ++h.last_version;
      if (h.kept.size() > snapshots_kept) h.kept.pop_front();
      return copy;
    });
  }

  result<agent_snapshot> load_snapshot(std::string_view agent_id) override {
    return guarded("load_snapshot", [&]() -> result<agent_snapshot> {
      std::lock_guard lock(mutex_);
      auto it = snapshots_.find(agent_id);
      if (it == snapshots_.end() || it->second.kept.empty())
        return fail(errc::not_found, "agent " + in_quotes(agent_id) + " has no snapshot");
      return it->second.kept.back();
    });
  }

  // ---- tasks ----

  result<std::vector<std::uint64_t>> insert_tasks(const std::vector<task>& tasks,
                                                  std::vector<event_draft>&& events) override {
    return guarded("insert_tasks", [&]() -> result<std::vector<std::uint64_t>> {
      // Prepare: validate and copy into a private map whose nodes are later
      // spliced into tasks_ (no allocation, no throw in the commit).
      task_map staged;
      const time_point now = clock_->now();
      for (std::size_t i = 0; i < tasks.size(); ++i) {
        const task& t = tasks[i];
        // Built only on the error paths: this loop is on the submit hot path.
        auto where = [i] { return "insert_tasks: task #" + std::to_string(i); };
        if (t.id.empty()) return fail(errc::invalid_argument, where() + " has an empty id");
        if (t.project.empty())
          return fail(errc::invalid_argument,
                      where() + " (" + in_quotes(t.id) + ") has an empty project");
        if (t.kind.empty())
          return fail(errc::invalid_argument,
                      where() + " (" + in_quotes(t.id) + ") has an empty kind");
        auto [it, inserted] = staged.try_emplace(t.id, t);
        if (!inserted)
          return fail(errc::already_exists,
                      "insert_tasks: task id " + in_quotes(t.id) + " appears twice in the batch");
        task_row& row = it->second;
        row.t.version = 1;
        if (row.t.created_at == time_point{}) row.t.created_at = now;
        if (row.t.updated_at == time_point{}) row.t.updated_at = row.t.created_at;
      }
      for (std::size_t i = 0; i < events.size(); ++i) {
        if (events[i].project.empty() || events[i].type.empty()) {
          if (auto e = check_draft("insert_tasks: event #" + std::to_string(i), events[i])) {
            return *e;
          }
        }
        if (events[i].at == time_point{}) events[i].at = now;
      }
      std::vector<std::uint64_t> out;
      out.reserve(events.size());

      std::lock_guard lock(mutex_);
      for (const auto& [id, row] : staged)
        if (tasks_.find(std::string_view(id)) != tasks_.end())
          return fail(errc::already_exists, "task " + in_quotes(id) + " already exists");
      // Grow the table and the order ahead of the commit so that neither can
      // reallocate (or throw) there. Only when needed, and geometrically:
      // unordered_map::reserve() rehashes whenever the bucket count it
      // computes differs from the current one (it even shrinks), so calling
      // it on every insert would make each insert O(tasks stored).
      const std::size_t needed = tasks_.size() + staged.size();
      if (static_cast<double>(needed) >
          static_cast<double>(tasks_.bucket_count()) * tasks_.max_load_factor())
        tasks_.reserve(std::max(needed, 2 * tasks_.size()));
      if (order_.capacity() < needed) order_.reserve(std::max(needed, 2 * order_.size()));
      std::size_t finishing = 0;  // inserted already finished (imports, tests)
      for (const auto& [id, row] : staged) finishing += is_terminal(row.t.state) ? 1 : 0;
      reserve_finished(finishing);

      // Events: each push_back has the strong guarantee; on a failure the
      // ones already pushed are popped again, so nothing is left behind.
      std::vector<event_log*> pushed;
      pushed.reserve(events.size());
      try {
        for (event_draft& d : events) {
          event_log& log = log_of(d.project);
          const std::uint64_t sequence = log.next();
          log.events.push_back(event{std::move(d), sequence});
          out.push_back(sequence);  // capacity reserved: cannot throw
          pushed.push_back(&log);
        }
      } catch (...) {
        for (auto it = pushed.rbegin(); it != pushed.rend(); ++it) (*it)->events.pop_back();
        throw;
      }

      // Commit (nothing below throws). Rows keep their addresses when their
      // nodes move into tasks_, so order_ may point at them first; in the
      // caller's order, which keeps ascending ids sorted without a sort.
      for (const task& t : tasks) {
        task_row* row = &staged.find(std::string_view(t.id))->second;
        append_order(row);
        if (is_terminal(row->t.state)) list_finished(*row);  // capacity reserved
      }
      tasks_.merge(staged);  // splices nodes; every key is new (checked above)
      for (event_log* log : pushed) trim_events(*log);
      trim_tasks();
      return out;
    });
  }

  result<std::uint64_t> update_task(task_update&& u) override {
    return guarded("update_task", [&]() -> result<std::uint64_t> {
      if (auto e = check_update("update_task", u)) return *e;
      const time_point now = fill_times(u);
      std::lock_guard lock(mutex_);
      return update_locked(std::move(u), now);
    });
  }

  result<std::vector<std::uint64_t>> update_tasks(const std::vector<task_update>& batch) override {
    return guarded("update_tasks", [&]() -> result<std::vector<std::uint64_t>> {
      std::vector<task_update> work(batch);  // the store moves from its own copies
      for (std::size_t i = 0; i < work.size(); ++i) {
        if (auto e = check_update("update_tasks: change #" + std::to_string(i), work[i])) return *e;
      }
      std::vector<time_point> nows;
      nows.reserve(work.size());
      for (auto& u : work) nows.push_back(fill_times(u));
      std::vector<std::uint64_t> out;
      out.reserve(work.size());

      std::lock_guard lock(mutex_);
      // All or nothing: check every compare-and-set first, each change
      // against the version the earlier changes of the batch leave.
      std::unordered_map<std::string_view, std::uint64_t> versions;
      for (const auto& u : work) {
        auto seen = versions.find(u.id);
        std::uint64_t stored = 0;
        if (seen != versions.end()) {
          stored = seen->second;
        } else {
          auto it = tasks_.find(std::string_view(u.id));
          if (it == tasks_.end())
            return fail(errc::not_found, "task " + in_quotes(u.id) + " not found");
          stored = it->second.t.version;
        }
        if (stored != u.expected_version)
          return fail(errc::conflict, "task " + in_quotes(u.id) + ": expected version " +
                                          std::to_string(u.expected_version) +
                                          " but the stored version is " + std::to_string(stored));
        versions[u.id] = stored + 1;
      }
      for (std::size_t i = 0; i < work.size(); ++i) {
        auto sequence = update_locked(std::move(work[i]), nows[i]);
        if (!sequence) return sequence.error();  // checked above: only out of memory
        out.push_back(sequence.value());
      }
      return out;
    });
  }

  result<task> get_task(std::string_view id) override {
    return guarded("get_task", [&]() -> result<task> {
      std::lock_guard lock(mutex_);
      auto it = tasks_.find(id);
      if (it == tasks_.end()) return fail(errc::not_found, "task " + in_quotes(id) + " not found");
      return it->second.t;
    });
  }

  result<page<task>> list_tasks(const task_filter& f) override {
    return guarded("list_tasks", [&]() -> result<page<task>> {
      const std::size_t limit = clamp_limit(f.limit);
      page<task> out;
      std::lock_guard lock(mutex_);
      sort_order();
      auto it = order_.begin();
      if (!f.after.empty()) {
        it = std::upper_bound(order_.begin(), order_.end(), std::string_view(f.after),
                              [](std::string_view a, const task_row* r) { return a < r->t.id; });
      }
      for (; it != order_.end(); ++it) {
        if (!matches((*it)->t, f)) continue;
        if (out.items.size() == limit) {  // one more match exists: not the last page
          out.next_cursor = out.items.back().id;
          break;
        }
        out.items.push_back((*it)->t);
      }
      return out;
    });
  }

  result<task_counts> count_tasks(std::string_view project) override {
    return guarded("count_tasks", [&]() -> result<task_counts> {
      task_counts out;
      std::lock_guard lock(mutex_);
      for (const auto& [id, row] : tasks_) {
        if (project.empty() || row.t.project == project) ++out[row.t.state];
      }
      return out;
    });
  }

  result<std::vector<task_attempt>> list_attempts(std::string_view task_id) override {
    return guarded("list_attempts", [&]() -> result<std::vector<task_attempt>> {
      std::lock_guard lock(mutex_);
      auto it = tasks_.find(task_id);
      if (it == tasks_.end())
        return fail(errc::not_found, "task " + in_quotes(task_id) + " not found");
      return it->second.attempts;
    });
  }

  // ---- events ----

  result<event> append_event(event_draft d) override {
    return guarded("append_event", [&]() -> result<event> {
      if (auto e = check_draft("append_event", d)) return *e;
      event ev{std::move(d)};
      if (ev.at == time_point{}) ev.at = clock_->now();
      std::lock_guard lock(mutex_);
      event_log& log = log_of(ev.project);
      ev.sequence = log.next();
      log.events.push_back(ev);
      trim_events(log);
      return ev;
    });
  }

  result<std::vector<event>> read_events(std::string_view project, std::uint64_t after_sequence,
                                         std::size_t limit) override {
    return guarded("read_events", [&]() -> result<std::vector<event>> {
      std::vector<event> out;
      std::lock_guard lock(mutex_);
      auto it = events_.find(project);
      if (it == events_.end() || after_sequence + 1 >= it->second.next()) return out;
      // sequence == first + index; events before `first` were compacted away.
      const event_log& log = it->second;
      const std::uint64_t start = std::max(after_sequence + 1, log.first);
      const auto index = static_cast<std::size_t>(start - log.first);
      const std::size_t count = std::min(limit, log.events.size() - index);
      out.reserve(count);
      const auto begin = log.events.begin() + static_cast<std::ptrdiff_t>(index);
      out.assign(begin, begin + static_cast<std::ptrdiff_t>(count));
      return out;
    });
  }

  result<std::uint64_t> last_sequence(std::string_view project) override {
    return guarded("last_sequence", [&]() -> result<std::uint64_t> {
      std::lock_guard lock(mutex_);
      auto it = events_.find(project);
      return it == events_.end() ? std::uint64_t{0} : it->second.next() - 1;
    });
  }

  result<compaction_stats> compact(const retention_policy& policy) override {
    return guarded("compact", [&]() -> result<compaction_stats> {
      compaction_stats out;
      const time_point now = clock_->now();
      std::lock_guard lock(mutex_);
      for (auto& [project, log] : events_) {
        std::size_t n = 0;
        if (policy.max_events_per_project != 0 && log.events.size() > policy.max_events_per_project)
          n = log.events.size() - policy.max_events_per_project;
        if (policy.max_event_age.count() > 0) {
          const time_point cutoff = now - policy.max_event_age;
          while (n < log.events.size() && log.events[n].at < cutoff) ++n;
        }
        drop_events(log, n);
        out.events_removed += n;
      }
      const std::uint64_t max = policy.max_finished_tasks;
      const bool by_age = policy.max_finished_task_age.count() > 0;
      const time_point cutoff = by_age ? now - policy.max_finished_task_age : time_point{};
      if (max != 0 || by_age) {
        out.tasks_removed = evict_finished(
            [&](const task_row& row, std::size_t left) {
              return (max != 0 && left > max) || (by_age && row.t.updated_at < cutoff);
            },
            by_age);
      }
      return out;
    });
  }

  // ---- artifact metadata ----

  result<artifact_meta> put_artifact(artifact_meta a) override {
    return guarded("put_artifact", [&]() -> result<artifact_meta> {
      if (a.id.empty()) return fail(errc::invalid_argument, "put_artifact: empty artifact id");
      if (a.project.empty())
        return fail(errc::invalid_argument,
                    "put_artifact: artifact " + in_quotes(a.id) + " without a project");
      if (a.name.empty())
        return fail(errc::invalid_argument,
                    "put_artifact: artifact " + in_quotes(a.id) + " without a name");
      if (a.created_at == time_point{}) a.created_at = clock_->now();
      std::lock_guard lock(mutex_);
      if (artifact_ids_.find(a.id) != artifact_ids_.end())
        return fail(errc::already_exists, "artifact " + in_quotes(a.id) + " already exists");
      // May leave an empty version list behind if a later step throws;
      // listings skip empty lists.
      artifact_versions_list& versions = artifacts_[a.project][a.name];
      a.version = static_cast<int>(versions.size()) + 1;
      artifact_meta copy = a;
      std::string id = a.id;
      versions.push_back(std::move(a));  // strong guarantee
      try {
        artifact_ids_.try_emplace(std::move(id), artifact_ref{&versions, versions.size() - 1});
      } catch (...) {
        versions.pop_back();
        throw;
      }
      return copy;
    });
  }

  result<bool> artifact_digest_in_use(std::string_view sha256) override {
    return guarded("artifact_digest_in_use", [&]() -> result<bool> {
      std::lock_guard lock(mutex_);
      for (const auto& [id, ref] : artifact_ids_)
        if ((*ref.versions)[ref.index].sha256 == sha256) return true;
      return false;
    });
  }

  // ---- budgets ----

  result<budget_state> set_budget_limit(std::string key, std::int64_t limit) override {
    if (key.empty()) return fail(errc::invalid_argument, "set_budget_limit: empty key");
    if (limit < 0) return fail(errc::invalid_argument, "set_budget_limit: negative limit");
    return guarded("set_budget_limit", [&]() -> result<budget_state> {
      std::lock_guard lock(mutex_);
      budget_state& b = budgets_[key];
      b.key = key;
      b.limit = limit;
      return b;
    });
  }

  result<budget_state> charge_budget(std::string key, std::int64_t amount,
                                     bool within_limit) override {
    if (key.empty()) return fail(errc::invalid_argument, "charge_budget: empty key");
    return guarded("charge_budget", [&]() -> result<budget_state> {
      std::lock_guard lock(mutex_);
      budget_state& b = budgets_[key];
      b.key = key;
      if (within_limit && b.limit > 0 && amount > 0 && b.spent + amount > b.limit) {
        return fail(errc::limit_exceeded, "budget " + in_quotes(key) + ": " +
                                              std::to_string(b.spent) + " + " +
                                              std::to_string(amount) + " would pass its limit " +
                                              std::to_string(b.limit));
      }
      b.spent += amount;
      return b;
    });
  }

  result<budget_state> get_budget(std::string_view key) override {
    return guarded("get_budget", [&]() -> result<budget_state> {
      std::lock_guard lock(mutex_);
      auto it = budgets_.find(key);
      if (it == budgets_.end())
        return fail(errc::not_found, "budget " + in_quotes(key) + " not found");
      return it->second;
    });
  }

  // ---- leases ----
  // The rows live in their task's row: retention drops them with it. Each
  // call decides under the mutex, so of racing calls exactly one changes a
  // held lease.

  result<task_lease> acquire_lease(const lease_key& key, std::string_view worker, time_point now,
                                   duration ttl) override {
    if (auto e = check_lease_key("acquire_lease", key)) return *e;
    if (worker.empty()) return fail(errc::invalid_argument, "acquire_lease: empty worker");
    if (ttl <= duration::zero())
      return fail(errc::invalid_argument, "acquire_lease: the ttl must be positive");
    return guarded("acquire_lease", [&]() -> result<task_lease> {
      task_lease fresh{.task_id = key.task_id,
                       .attempt = key.attempt,
                       .worker = std::string(worker),
                       .state = lease_state::held,
                       .acquired_at = now,
                       .expires_at = now + ttl,
                       .ended_at = {},
                       .outcome = std::nullopt};
      std::lock_guard lock(mutex_);
      auto it = tasks_.find(std::string_view(key.task_id));
      if (it == tasks_.end())
        return fail(errc::not_found,
                    "acquire_lease: task " + in_quotes(key.task_id) + " not found");
      task_row& row = it->second;
      if (row.t.state != task_state::running || row.t.attempt != key.attempt)
        return fail(errc::conflict, "acquire_lease: task " + in_quotes(key.task_id) + " is " +
                                        std::string(to_string(row.t.state)) + " at attempt " +
                                        std::to_string(row.t.attempt) + ", not running attempt " +
                                        std::to_string(key.attempt));
      auto slot = lease_slot(row, key.attempt);
      if (slot != row.leases.end() && slot->attempt == key.attempt) {
        if (slot->state != lease_state::held || slot->worker != worker)
          return fail(errc::conflict, "acquire_lease: " + describe_lease(*slot));
        task_lease renewed = *slot;  // the return value, made before the commit
        renewed.expires_at = now + ttl;
        slot->expires_at = renewed.expires_at;  // delivered again to its holder: a renewal
        return renewed;
      }
      task_lease copy = fresh;                    // the return value, made before the commit
      row.leases.insert(slot, std::move(fresh));  // strong guarantee (nothrow moves)
      return copy;
    });
  }

  result<std::vector<lease_key>> renew_leases(std::string_view worker,
                                              const std::vector<lease_key>& keys, time_point now,
                                              duration ttl) override {
    if (worker.empty()) return fail(errc::invalid_argument, "renew_leases: empty worker");
    if (ttl <= duration::zero())
      return fail(errc::invalid_argument, "renew_leases: the ttl must be positive");
    return guarded("renew_leases", [&]() -> result<std::vector<lease_key>> {
      std::vector<const lease_key*> gone;  // the keys not held, found before anything changes
      gone.reserve(keys.size());
      std::vector<task_lease*> renewed;
      renewed.reserve(keys.size());
      std::lock_guard lock(mutex_);
      for (const lease_key& key : keys) {
        task_lease* l = find_lease(key);
        if (l != nullptr && l->state == lease_state::held && l->worker == worker) {
          renewed.push_back(l);
        } else {
          gone.push_back(&key);
        }
      }
      std::vector<lease_key> out;
      out.reserve(gone.size());
      for (const lease_key* key : gone) out.push_back(*key);
      for (task_lease* l : renewed) l->expires_at = now + ttl;  // cannot throw
      return out;
    });
  }

  result<task_lease> finish_lease(const lease_key& key, std::string_view worker,
                                  nlohmann::json outcome, time_point now) override {
    if (auto e = check_lease_key("finish_lease", key)) return *e;
    if (worker.empty()) return fail(errc::invalid_argument, "finish_lease: empty worker");
    return guarded("finish_lease", [&]() -> result<task_lease> {
      std::lock_guard lock(mutex_);
      task_lease* l = find_lease(key);
      if (l == nullptr) return fail(errc::not_found, "finish_lease: no lease " + lease_name(key));
      if (l->worker == worker && l->state == lease_state::done)
        return *l;  // the first outcome stays
      if (l->worker != worker || l->state != lease_state::held)
        return fail(errc::conflict, "finish_lease: " + describe_lease(*l));
      task_lease after = *l;
      after.state = lease_state::done;
      after.ended_at = now;
      after.outcome = std::move(outcome);
      task_lease copy = after;  // the return value, made before the commit
      *l = std::move(after);
      return copy;
    });
  }

  result<task_lease> end_lease(const lease_key& key, lease_state to, time_point now,
                               bool only_if_expired) override {
    if (auto e = check_lease_key("end_lease", key)) return *e;
    if (to != lease_state::lost && to != lease_state::revoked)
      return fail(errc::invalid_argument,
                  "end_lease: a lease ends lost or revoked, not " + std::string(to_string(to)));
    return guarded("end_lease", [&]() -> result<task_lease> {
      task_lease ended{.task_id = key.task_id,
                       .attempt = key.attempt,
                       .worker = {},
                       .state = to,
                       .acquired_at = {},
                       .expires_at = {},
                       .ended_at = now,
                       .outcome = std::nullopt};
      std::lock_guard lock(mutex_);
      auto it = tasks_.find(std::string_view(key.task_id));
      if (it == tasks_.end())
        return fail(errc::not_found, "end_lease: task " + in_quotes(key.task_id) + " not found");
      task_row& row = it->second;
      auto slot = lease_slot(row, key.attempt);
      if (slot == row.leases.end() || slot->attempt != key.attempt) {
        // Nobody took it yet: an ended row, so that no delivery can take it later.
        task_lease copy = ended;
        row.leases.insert(slot, std::move(ended));
        return copy;
      }
      task_lease after = *slot;  // the return value, made before the commit
      if (after.state == lease_state::held && (!only_if_expired || after.expires_at < now)) {
        after.state = slot->state = to;
        after.ended_at = slot->ended_at = now;
      }
      return after;
    });
  }

  result<std::vector<task_lease>> get_leases(const std::vector<std::string>& task_ids) override {
    if (task_ids.size() > max_page)
      return fail(errc::invalid_argument, "get_leases: " + std::to_string(task_ids.size()) +
                                              " task ids, at most " + std::to_string(max_page) +
                                              " per call");
    return guarded("get_leases", [&]() -> result<std::vector<task_lease>> {
      std::vector<std::string_view> ids(task_ids.begin(), task_ids.end());
      std::sort(ids.begin(), ids.end());
      ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
      std::vector<task_lease> out;
      std::lock_guard lock(mutex_);
      for (std::string_view id : ids) {
        auto it = tasks_.find(id);
        if (it == tasks_.end()) continue;
        out.insert(out.end(), it->second.leases.begin(), it->second.leases.end());
      }
      return out;
    });
  }

  result<artifact_meta> get_artifact(std::string_view id) override {
    return guarded("get_artifact", [&]() -> result<artifact_meta> {
      std::lock_guard lock(mutex_);
      auto it = artifact_ids_.find(id);
      if (it == artifact_ids_.end())
        return fail(errc::not_found, "artifact " + in_quotes(id) + " not found");
      return (*it->second.versions)[it->second.index];
    });
  }

  result<std::vector<artifact_meta>> list_artifacts(std::string_view project) override {
    return guarded("list_artifacts", [&]() -> result<std::vector<artifact_meta>> {
      std::vector<artifact_meta> out;
      std::lock_guard lock(mutex_);
      auto it = artifacts_.find(project);
      if (it == artifacts_.end()) return out;
      out.reserve(it->second.size());
      for (const auto& [name, versions] : it->second)
        if (!versions.empty()) out.push_back(versions.back());
      return out;
    });
  }

  result<std::vector<artifact_meta>> artifact_versions(std::string_view project,
                                                       std::string_view name) override {
    return guarded("artifact_versions", [&]() -> result<std::vector<artifact_meta>> {
      std::lock_guard lock(mutex_);
      auto p = artifacts_.find(project);
      if (p == artifacts_.end()) return std::vector<artifact_meta>{};
      auto n = p->second.find(name);
      if (n == p->second.end()) return std::vector<artifact_meta>{};
      return n->second;
    });
  }

 private:
  /// `invalid_argument` for a lease key no task attempt can have.
  static std::optional<aise::error> check_lease_key(std::string_view op, const lease_key& key) {
    if (key.task_id.empty())
      return fail(errc::invalid_argument, std::string(op) + ": empty task id");
    if (key.attempt < 1)
      return fail(
          errc::invalid_argument,
          std::string(op) + ": attempt " + std::to_string(key.attempt) + " (attempts start at 1)");
    return std::nullopt;
  }

  static std::string lease_name(const lease_key& key) {
    return "of task " + in_quotes(key.task_id) + " attempt " + std::to_string(key.attempt);
  }

  /// "the lease of task 'x' attempt 2 is revoked (worker 'w')": why a call lost.
  static std::string describe_lease(const task_lease& l) {
    std::string out = "the lease " + lease_name({l.task_id, l.attempt}) + " is " +
                      std::string(to_string(l.state));
    if (l.worker.empty()) return out + " (ended before a worker took it)";
    return out + " (worker " + in_quotes(l.worker) + ")";
  }

  /// `invalid_argument` for a change that no store state could accept.
  static std::optional<aise::error> check_update(const std::string& op, const task_update& u) {
    if (u.id.empty()) return fail(errc::invalid_argument, op + ": empty task id");
    if (auto e = check_draft(op, u.event)) return *e;
    if (u.via_event) {
      if (auto e = check_draft(op + ": via_event", *u.via_event)) return *e;
      if (u.via_event->project != u.event.project)
        return fail(errc::invalid_argument, op + ": via_event names project " +
                                                in_quotes(u.via_event->project) + ", the event " +
                                                in_quotes(u.event.project));
    }
    return std::nullopt;
  }

  /// Fills the times left at the epoch; returns the now it used (the epoch
  /// when none was needed). Before the lock: it may allocate.
  time_point fill_times(task_update& u) const {
    const bool needs_now = u.event.at == time_point{} || u.at == time_point{} ||
                           (u.via_event && u.via_event->at == time_point{});
    const time_point now = needs_now ? clock_->now() : time_point{};
    if (u.event.at == time_point{}) u.event.at = now;
    if (u.via_event && u.via_event->at == time_point{}) u.via_event->at = now;
    // The key of an attempt row is (this task, number), whatever it says.
    if (u.attempt_row) u.attempt_row->task_id = u.id;
    return now;
  }

  /// The compare-and-set and its writes; mutex_ held.
  result<std::uint64_t> update_locked(task_update&& u, time_point now) {
    auto it = tasks_.find(std::string_view(u.id));
    if (it == tasks_.end()) return fail(errc::not_found, "task " + in_quotes(u.id) + " not found");
    task_row& row = it->second;
    if (row.t.version != u.expected_version)
      return fail(errc::conflict, "task " + in_quotes(u.id) + ": expected version " +
                                      std::to_string(u.expected_version) +
                                      " but the stored version is " +
                                      std::to_string(row.t.version));

    // Prepare the attempt slot (may allocate), then the events (strong
    // guarantee, built in place from the caller's drafts); everything
    // after that cannot throw and only moves what the caller handed over.
    auto slot = row.attempts.end();
    if (u.attempt_row) {
      const int number = u.attempt_row->number;
      slot = std::lower_bound(row.attempts.begin(), row.attempts.end(), number,
                              [](const task_attempt& a, int n) { return a.number < n; });
      if (slot == row.attempts.end() || slot->number != number) {
        const auto index = slot - row.attempts.begin();
        if (row.attempts.size() == row.attempts.capacity())
          row.attempts.reserve(std::max<std::size_t>(1, row.attempts.size() * 2));
        slot = row.attempts.begin() + index;
      }
    }
    const bool finishes = is_terminal(u.state) && !row.listed_finished;
    if (finishes) reserve_finished(1);
    event_log& log = log_of(u.event.project);
    if (u.via_event) log.events.push_back(event{std::move(*u.via_event), log.next()});
    const std::uint64_t sequence = log.next();
    try {
      log.events.push_back(event{std::move(u.event), sequence});
    } catch (...) {
      if (u.via_event) log.events.pop_back();  // all or nothing
      throw;
    }

    // Commit.
    if (u.attempt_row) {
      task_attempt& a = *u.attempt_row;
      if (slot != row.attempts.end() && slot->number == a.number)
        *slot = std::move(a);
      else
        row.attempts.insert(slot, std::move(a));  // capacity reserved, nothrow moves
    }
    task& t = row.t;
    t.state = u.state;
    t.attempt = u.attempt;
    t.agent = std::move(u.agent);
    if (u.result) t.result = std::move(u.result);
    if (u.clear_error) t.error.reset();  // before the new error: both set = replace
    if (u.error) t.error = std::move(u.error);
    t.updated_at = u.at == time_point{} ? now : u.at;
    t.not_before = u.not_before;
    ++t.version;
    if (finishes) list_finished(row);  // capacity reserved
    trim_events(log);
    trim_tasks();
    return sequence;
  }

  struct task_row {
    explicit task_row(const task& source) : t(source) {}
    task t;
    std::vector<task_attempt> attempts;  ///< Sorted by number.
    std::vector<task_lease> leases;      ///< Sorted by attempt; dropped with the task.
    bool listed_finished = false;        ///< In finished_ (at most once).
    bool evicted = false;                ///< Being dropped by retention.
  };
  /// Where attempt `attempt` is or would go in `row.leases` (sorted by attempt).
  static std::vector<task_lease>::iterator lease_slot(task_row& row, int attempt) {
    return std::lower_bound(row.leases.begin(), row.leases.end(), attempt,
                            [](const task_lease& l, int a) { return l.attempt < a; });
  }

  /// The lease row of `key`, or null; mutex_ held.
  task_lease* find_lease(const lease_key& key) {
    auto it = tasks_.find(std::string_view(key.task_id));
    if (it == tasks_.end()) return nullptr;
    auto slot = lease_slot(it->second, key.attempt);
    if (slot == it->second.leases.end() || slot->attempt != key.attempt) return nullptr;
    return &*slot;
  }
  struct snapshot_history {
    std::uint64_t last_version = 0;
    std::deque<agent_snapshot> kept;  ///< The latest `snapshots_kept`, oldest first.
  };
  /// Events of one project: events[i] has sequence first + i (retention
  /// drops from the front). A deque grows without moving what it holds, so
  /// a long log never stalls a writer on a copy.
  struct event_log {
    std::uint64_t first = 1;
    std::deque<event> events;
    [[nodiscard]] std::uint64_t next() const noexcept { return first + events.size(); }
  };
  /// Hashes std::string and std::string_view alike (lookups by string_view
  /// without building a std::string). Deliberately not noexcept: libstdc++
  /// stores each node's hash only for hashers that may throw (or are known
  /// to be slow); without it every lookup re-hashes the keys it walks past
  /// and every rehash re-hashes every key.
  struct id_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const {  // NOLINT(performance-noexcept-*)
      return std::hash<std::string_view>{}(s);
    }
  };
  /// Rows by id. A node-based hash map: rows keep their addresses, so
  /// order_ can point at them, and a lookup costs the same with a million
  /// tasks as with ten (an ordered map walked ~20 cold nodes per insert).
  using task_map = std::unordered_map<std::string, task_row, id_hash, std::equal_to<>>;

  static bool id_less(const task_row* a, const task_row* b) noexcept { return a->t.id < b->t.id; }

  /// Appends a new row to the id order; order_ has the capacity (reserved).
  void append_order(task_row* row) noexcept {
    const bool in_order =
        sorted_ == order_.size() && (order_.empty() || id_less(order_.back(), row));
    order_.push_back(row);
    if (in_order) sorted_ = order_.size();
  }
  /// Sorts the rows appended out of order into the sorted prefix. Ids made by
  /// a runtime ascend, so usually nothing is left to do.
  void sort_order() {
    if (sorted_ == order_.size()) return;
    const auto middle = order_.begin() + static_cast<std::ptrdiff_t>(sorted_);
    std::sort(middle, order_.end(), id_less);
    std::inplace_merge(order_.begin(), middle, order_.end(), id_less);
    sorted_ = order_.size();
  }
  using artifact_versions_list = std::vector<artifact_meta>;  ///< Index == version - 1.
  struct artifact_ref {
    const artifact_versions_list* versions;  ///< Stable: a node of artifacts_.
    std::size_t index;
  };

  /// The log of `project`, created empty when absent (an empty log is
  /// indistinguishable from none, so a later failure may leave it behind).
  event_log& log_of(const std::string& project) {
    auto it = events_.find(project);
    if (it != events_.end()) return it->second;
    return events_.try_emplace(project).first->second;
  }

  const std::shared_ptr<aise::clock> clock_;
  std::mutex mutex_;  // guards everything below
  std::map<std::string, project, std::less<>> projects_;
  std::map<std::string, agent_record, std::less<>> agents_;
  std::map<std::string, snapshot_history, std::less<>> snapshots_;
  task_map tasks_;
  /// Every row ordered by id for listings and cursors: order_[0, sorted_)
  /// is sorted, the rest was appended out of order and is sorted on demand.
  std::vector<task_row*> order_;
  std::size_t sorted_ = 0;
  /// Retention: the rows that reached a terminal state, in the order they
  /// did (oldest first): the ones retention drops first.
  retention_policy retention_;
  std::vector<task_row*> finished_;

  /// Makes room for `n` more entries in finished_ (the only allocation of
  /// the bookkeeping, done before a write commits).
  void reserve_finished(std::size_t n) {
    if (finished_.size() + n > finished_.capacity())
      finished_.reserve(std::max(finished_.size() + n, 2 * finished_.size()));
  }
  void list_finished(task_row& row) noexcept {  // capacity reserved by the caller
    if (row.listed_finished) return;
    row.listed_finished = true;
    finished_.push_back(&row);
  }

  /// Drops finished tasks (with their attempts), oldest first, for which
  /// `drop(row, listed_from_here)` says so: all of them when `full_scan`,
  /// else up to the first it keeps. Returns how many were dropped. A listed
  /// row that is no longer terminal (a store allows any compare-and-set)
  /// leaves the list, not the store.
  template <class Drop>
  std::uint64_t evict_finished(Drop&& drop, bool full_scan) noexcept {
    // Pass 1: decide (finished_[0, end) is examined).
    std::uint64_t dropped = 0;
    std::size_t end = 0;
    for (; end < finished_.size(); ++end) {
      task_row* row = finished_[end];
      if (!is_terminal(row->t.state)) {
        row->listed_finished = false;
        continue;
      }
      if (drop(*row, finished_.size() - end)) {
        row->evicted = true;
        ++dropped;
      } else if (!full_scan) {
        break;
      }
    }
    if (dropped > 0) {
      // order_ without the dropped rows, in order; the sorted prefix shrinks
      // by the dropped rows it held.
      std::size_t kept = 0;
      std::size_t still_sorted = 0;
      for (std::size_t i = 0; i < order_.size(); ++i) {
        task_row* row = order_[i];
        if (row->evicted) continue;
        if (i < sorted_) ++still_sorted;
        order_[kept++] = row;
      }
      order_.erase(order_.begin() + static_cast<std::ptrdiff_t>(kept), order_.end());
      sorted_ = still_sorted;
    }
    // Pass 2: drop the rows, keep the rest of the examined part in order.
    std::size_t write = 0;
    for (std::size_t i = 0; i < end; ++i) {
      task_row* row = finished_[i];
      if (row->evicted) {
        tasks_.erase(tasks_.find(std::string_view(row->t.id)));  // `row` is gone
      } else if (row->listed_finished) {
        finished_[write++] = row;
      }
    }
    finished_.erase(finished_.begin() + static_cast<std::ptrdiff_t>(write),
                    finished_.begin() + static_cast<std::ptrdiff_t>(end));
    return dropped;
  }
  /// Automatic count-based retention after a write: lets the finished
  /// tasks overshoot by an eighth, then drops back to the limit (amortized).
  void trim_tasks() noexcept {
    const std::uint64_t max = retention_.max_finished_tasks;
    if (max == 0 || finished_.size() <= max + max / 8) return;
    evict_finished([max](const task_row&, std::size_t left) { return left > max; }, false);
  }
  void trim_events(event_log& log) noexcept {
    const std::uint64_t max = retention_.max_events_per_project;
    if (max == 0 || log.events.size() <= max + max / 8) return;
    drop_events(log, log.events.size() - max);
  }
  static void drop_events(event_log& log, std::size_t n) noexcept {
    n = std::min(n, log.events.size());
    log.events.erase(log.events.begin(), log.events.begin() + static_cast<std::ptrdiff_t>(n));
    log.first += n;
  }
  std::map<std::string, event_log, std::less<>> events_;
  std::map<std::string, std::map<std::string, artifact_versions_list, std::less<>>, std::less<>>
      artifacts_;
  std::map<std::string, artifact_ref, std::less<>> artifact_ids_;
  std::map<std::string, budget_state, std::less<>> budgets_;
};

}  // namespace

std::shared_ptr<store> make_memory_store(memory_store_options options) {
  auto clock = options.clock ? std::move(options.clock) : make_system_clock();
  return std::make_shared<memory_store>(std::move(clock), options.retention);
}

}  // namespace aise
