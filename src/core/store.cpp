// Default implementations of the store's optional members.
#include <aise/store.hpp>

namespace aise {

namespace {
error no_budgets() {
  return error(errc::unavailable, "this store keeps no budgets (aise's memory and SQL stores do)");
}
error no_leases() {
  return error(errc::unavailable, "this store keeps no leases (aise's memory and SQL stores do)");
}
}  // namespace

std::string_view to_string(lease_state s) noexcept {
  switch (s) {
    case lease_state::held:
      return "held";
    case lease_state::done:
      return "done";
    case lease_state::lost:
      return "lost";
    case lease_state::revoked:
      return "revoked";
  }
  return "unknown";
}

std::uint64_t task_counts::total() const noexcept {
  std::uint64_t n = 0;
  for (auto c : by_state) n += c;
  return n;
}

result<task_counts> store::count_tasks(std::string_view project) {
  task_counts out;
  task_filter f;
  f.project = std::string(project);
  f.limit = 1000;
  for (;;) {
    auto page = list_tasks(f);
    if (!page) return page.error();
    for (const auto& t : page->items) ++out[t.state];
    if (page->next_cursor.empty()) return out;
    f.after = std::move(page->next_cursor);
  }
}

result<budget_state> store::set_budget_limit(std::string, std::int64_t) {
  return no_budgets();
}

result<budget_state> store::charge_budget(std::string, std::int64_t, bool) {
  return no_budgets();
}

result<budget_state> store::get_budget(std::string_view) {
  return no_budgets();
}

result<task_lease> store::acquire_lease(const lease_key&, std::string_view, time_point, duration) {
  return no_leases();
}

result<std::vector<lease_key>> store::renew_leases(std::string_view, const std::vector<lease_key>&,
                                                   time_point, duration) {
  return no_leases();
}

result<task_lease> store::finish_lease(const lease_key&, std::string_view, nlohmann::json,
                                       time_point) {
  return no_leases();
}

result<task_lease> store::end_lease(const lease_key&, lease_state, time_point, bool) {
  return no_leases();
}

std::vector<result<task_lease>> store::acquire_leases(const std::vector<lease_key>& keys,
                                                      std::string_view worker, time_point now,
                                                      duration ttl) {
  std::vector<result<task_lease>> out;
  out.reserve(keys.size());
  for (const auto& k : keys) out.push_back(acquire_lease(k, worker, now, ttl));
  return out;
}

std::vector<result<task_lease>> store::finish_leases(const std::vector<lease_outcome>& items,
                                                     std::string_view worker, time_point now) {
  std::vector<result<task_lease>> out;
  out.reserve(items.size());
  for (const auto& i : items) out.push_back(finish_lease(i.key, worker, i.outcome, now));
  return out;
}

result<std::vector<task_lease>> store::get_leases(const std::vector<std::string>&) {
  return no_leases();
}

}  // namespace aise
