// The in-memory auth_store: maps under one mutex.
#include <aise/auth_store.hpp>

#include <algorithm>
#include <array>
#include <mutex>
#include <utility>

namespace aise {

namespace {

constexpr std::array<std::string_view, 4> role_names = {"none", "viewer", "maintainer", "admin"};

class memory_auth_store final : public auth_store {
 public:
  explicit memory_auth_store(std::shared_ptr<clock> c)
      : clock_(c ? std::move(c) : make_system_clock()) {}

  [[nodiscard]] std::string_view backend() const noexcept override { return "memory"; }

  result<auth_user> create_user(auth_user u) override {
    if (u.id.empty() || u.username.empty()) {
      return error(errc::invalid_argument, "create_user: empty id or user name");
    }
    std::lock_guard lock(mutex_);
    if (users_.count(u.id) != 0) {
      return error(errc::already_exists, "create_user: user id '" + u.id + "' is taken");
    }
    if (by_name_.count(u.username) != 0) {
      return error(errc::already_exists, "create_user: user name '" + u.username + "' is taken");
    }
    auto now = clock_->now();
    if (u.created_at == time_point{}) u.created_at = now;
    u.updated_at = now;
    by_name_.emplace(u.username, u.id);
    users_.emplace(u.id, u);
    return u;
  }

  result<auth_user> get_user(std::string_view id) override {
    std::lock_guard lock(mutex_);
    auto it = users_.find(id);
    if (it == users_.end()) return error(errc::not_found, "no user '" + std::string(id) + "'");
    return it->second;
  }

  result<auth_user> find_user(std::string_view username) override {
    std::lock_guard lock(mutex_);
    auto it = by_name_.find(username);
    if (it == by_name_.end()) {
      return error(errc::not_found, "no user named '" + std::string(username) + "'");
    }
    return users_.find(it->second)->second;
  }

  result<std::vector<auth_user>> list_users(std::string_view after, std::size_t limit) override {
    std::lock_guard lock(mutex_);
    std::vector<auth_user> out;
    for (auto it = users_.upper_bound(after); it != users_.end() && out.size() < limit; ++it) {
      out.push_back(it->second);
    }
    return out;
  }

  result<std::size_t> count_users() override {
    std::lock_guard lock(mutex_);
    return users_.size();
  }

  result<auth_user> update_user(const auth_user& u) override {
    std::lock_guard lock(mutex_);
    auto it = users_.find(u.id);
    if (it == users_.end()) return error(errc::not_found, "no user '" + u.id + "'");
    it->second.password_hash = u.password_hash;
    it->second.global_admin = u.global_admin;
    it->second.disabled = u.disabled;
    it->second.updated_at = clock_->now();
    return it->second;
  }

  result<void> set_role(std::string_view user_id, std::string_view project,
                        project_role role) override {
    if (project.empty()) return error(errc::invalid_argument, "set_role: empty project");
    std::lock_guard lock(mutex_);
    if (users_.find(user_id) == users_.end()) {
      return error(errc::not_found, "no user '" + std::string(user_id) + "'");
    }
    auto key = std::make_pair(std::string(user_id), std::string(project));
    if (role == project_role::none) {
      roles_.erase(key);
    } else {
      roles_[key] = role;
    }
    return {};
  }

  result<std::map<std::string, project_role>> roles_of(std::string_view user_id) override {
    std::lock_guard lock(mutex_);
    std::map<std::string, project_role> out;
    for (auto it = roles_.lower_bound({std::string(user_id), std::string()});
         it != roles_.end() && it->first.first == user_id; ++it) {
      out.emplace(it->first.second, it->second);
    }
    return out;
  }

  result<std::map<std::string, project_role>> members_of(std::string_view project) override {
    std::lock_guard lock(mutex_);
    std::map<std::string, project_role> out;
    for (const auto& [key, role] : roles_) {
      if (key.second == project) out.emplace(key.first, role);
    }
    return out;
  }

  result<void> insert_refresh_token(const refresh_token_record& r) override {
    if (r.token_hash.empty()) return error(errc::invalid_argument, "empty token hash");
    std::lock_guard lock(mutex_);
    if (!tokens_.emplace(r.token_hash, r).second) {
      return error(errc::already_exists, "refresh token exists");
    }
    return {};
  }

  result<refresh_token_record> get_refresh_token(std::string_view token_hash) override {
    std::lock_guard lock(mutex_);
    auto it = tokens_.find(token_hash);
    if (it == tokens_.end()) return error(errc::not_found, "no such refresh token");
    return it->second;
  }

  result<void> rotate_refresh_token(std::string_view old_hash,
                                    const refresh_token_record& next) override {
    if (next.token_hash.empty()) return error(errc::invalid_argument, "empty token hash");
    std::lock_guard lock(mutex_);
    auto it = tokens_.find(old_hash);
    if (it == tokens_.end()) return error(errc::not_found, "no such refresh token");
    if (it->second.revoked) return error(errc::conflict, "the refresh token was used or revoked");
    if (tokens_.count(next.token_hash) != 0) {
      return error(errc::already_exists, "refresh token exists");
    }
    it->second.revoked = true;
    it->second.replaced_by = next.token_hash;
    tokens_.emplace(next.token_hash, next);
    return {};
  }

  result<bool> revoke_refresh_token(std::string_view token_hash) override {
    std::lock_guard lock(mutex_);
    auto it = tokens_.find(token_hash);
    if (it == tokens_.end()) return error(errc::not_found, "no such refresh token");
    bool was_active = !it->second.revoked;
    it->second.revoked = true;
    return was_active;
  }

  result<std::size_t> revoke_user_tokens(std::string_view user_id) override {
    std::lock_guard lock(mutex_);
    std::size_t n = 0;
    for (auto& [hash, r] : tokens_) {
      if (r.user_id == user_id && !r.revoked) {
        r.revoked = true;
        ++n;
      }
    }
    return n;
  }

  result<audit_entry> append_audit(audit_entry e) override {
    std::lock_guard lock(mutex_);
    e.id = audit_.size() + 1;
    if (e.at == time_point{}) e.at = clock_->now();
    audit_.push_back(e);
    return e;
  }

  result<std::vector<audit_entry>> read_audit(std::uint64_t after, std::size_t limit) override {
    std::lock_guard lock(mutex_);
    std::vector<audit_entry> out;
    for (std::size_t i = static_cast<std::size_t>(std::min<std::uint64_t>(after, audit_.size()));
         i < audit_.size() && out.size() < limit; ++i) {
      out.push_back(audit_[i]);
    }
    return out;
  }

 private:
  std::shared_ptr<clock> clock_;
  std::mutex mutex_;
  std::map<std::string, auth_user, std::less<>> users_;
  std::map<std::string, std::string, std::less<>> by_name_;
  std::map<std::pair<std::string, std::string>, project_role> roles_;
  std::map<std::string, refresh_token_record, std::less<>> tokens_;
  std::vector<audit_entry> audit_;
};

}  // namespace

std::string_view to_string(project_role r) noexcept {
  auto i = static_cast<std::size_t>(r);
  return i < role_names.size() ? role_names[i] : std::string_view("none");
}

std::optional<project_role> parse_project_role(std::string_view name) noexcept {
  for (std::size_t i = 0; i < role_names.size(); ++i) {
    if (role_names[i] == name) return static_cast<project_role>(i);
  }
  return std::nullopt;
}

std::shared_ptr<auth_store> make_memory_auth_store(std::shared_ptr<clock> clock) {
  return std::make_shared<memory_auth_store>(std::move(clock));
}

}  // namespace aise
