// Default implementations of the store's optional members.
#include <aise/store.hpp>

namespace aise {

namespace {
error no_budgets() {
  return error(errc::unavailable, "this store keeps no budgets (aise's memory and SQL stores do)");
}
}  // namespace

result<budget_state> store::set_budget_limit(std::string, std::int64_t) {
  return no_budgets();
}

result<budget_state> store::charge_budget(std::string, std::int64_t, bool) {
  return no_budgets();
}

result<budget_state> store::get_budget(std::string_view) {
  return no_budgets();
}

}  // namespace aise
