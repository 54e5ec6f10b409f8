// The authenticator: logins, token rotation, users, roles and the audit
// trail over an auth_store (docs/auth.md).
#include <aise/auth.hpp>
#include <aise/sha256.hpp>

#include <algorithm>
#include <utility>

namespace aise {

namespace {

using json = nlohmann::json;

constexpr std::size_t max_cached_users = 10000;
constexpr std::size_t max_cached_tokens = 10000;
constexpr std::size_t max_username = 64;
constexpr std::size_t max_password = 1024;

error not_authenticated(std::string why) {
  return error(errc::rejected, std::move(why));
}

bool username_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-' || c == '@';
}

time_point whole_seconds(time_point t) {
  return std::chrono::time_point_cast<std::chrono::seconds>(t);
}

}  // namespace

project_role principal::role_in(std::string_view project) const {
  if (user.global_admin) return project_role::admin;
  auto it = roles.find(std::string(project));
  return it == roles.end() ? project_role::none : it->second;
}

result<std::unique_ptr<authenticator>> authenticator::make(std::shared_ptr<auth_store> store,
                                                           auth_options options) {
  if (!store) return error(errc::invalid_argument, "auth: no store");
  if (options.jwt_secret.size() < 32) {
    return error(errc::invalid_argument, "auth: the JWT secret must be at least 32 bytes");
  }
  if (options.issuer.empty() || options.audience.empty()) {
    return error(errc::invalid_argument, "auth: empty issuer or audience");
  }
  if (options.access_ttl.count() <= 0 || options.refresh_ttl.count() <= 0 ||
      options.leeway.count() < 0) {
    return error(errc::invalid_argument, "auth: token lifetimes must be positive");
  }
  if (!options.clock) options.clock = make_system_clock();
  std::unique_ptr<authenticator> a(new authenticator(std::move(store), std::move(options)));
  auto dummy = hash_password(random_token(16), a->options_.password);
  if (!dummy) return dummy.error();
  a->dummy_hash_ = std::move(*dummy);
  return a;
}

authenticator::authenticator(std::shared_ptr<auth_store> store, auth_options options)
    : store_(std::move(store)), options_(std::move(options)) {}

void authenticator::audit(const actor_info& by, std::string action, std::string subject,
                          json details) {
  audit_entry e;
  e.actor = by.username;
  e.action = std::move(action);
  e.subject = std::move(subject);
  e.ip = by.ip;
  e.details = std::move(details);
  // Best effort: the action itself succeeded or failed already; a store
  // that cannot take the entry is down, and the next call will say so.
  (void)store_->append_audit(std::move(e));
}

void authenticator::forget(std::string_view username) {
  std::lock_guard lock(cache_mutex_);
  cache_.erase(std::string(username));
}

result<token_pair> authenticator::issue_pair(const auth_user& u) {
  auto now = whole_seconds(options_.clock->now());
  jwt_claims claims{u.username, options_.issuer, options_.audience, now, now + options_.access_ttl};
  token_pair out;
  out.access_token = sign_jwt(claims, options_.jwt_secret);
  out.refresh_token = random_token(32);
  out.expires_in = options_.access_ttl;
  return out;
}

result<token_pair> authenticator::login(std::string_view username, std::string_view password,
                                        std::string_view ip) {
  actor_info who{"", std::string(ip)};
  auto u = store_->find_user(username);
  if (!u && u.error().code() != errc::not_found) return u.error();
  const std::string& hash = u ? u->password_hash : dummy_hash_;
  bool ok = verify_password(hash, password) && u.ok();
  if (!ok || u->disabled) {
    audit(who, "login_failed", std::string(username),
          {{"reason", !u ? "unknown user" : (!ok ? "wrong password" : "disabled")}});
    return not_authenticated("wrong user name or password");
  }
  auto pair = issue_pair(*u);
  if (!pair) return pair.error();
  auto now = options_.clock->now();
  refresh_token_record r{sha256_hex(pair->refresh_token), u->id, now,
                         now + options_.refresh_ttl,      false, ""};
  if (auto stored = store_->insert_refresh_token(r); !stored) return stored.error();
  who.username = u->username;
  audit(who, "login", u->username);
  return pair;
}

result<token_pair> authenticator::refresh(std::string_view refresh_token, std::string_view ip) {
  actor_info who{"", std::string(ip)};
  if (refresh_token.empty() || refresh_token.size() > 256) {
    return not_authenticated("malformed refresh token");
  }
  const auto hash = sha256_hex(refresh_token);
  auto r = store_->get_refresh_token(hash);
  if (!r) {
    if (r.error().code() != errc::not_found) return r.error();
    audit(who, "refresh_failed", "", {{"reason", "unknown token"}});
    return not_authenticated("unknown refresh token");
  }
  auto u = store_->get_user(r->user_id);
  if (!u) {
    if (u.error().code() != errc::not_found) return u.error();
    return not_authenticated("the token's user is gone");
  }
  who.username = u->username;
  if (r->revoked) {
    if (!r->replaced_by.empty()) {
      // Used twice: whoever holds it now may have stolen it. End every
      // session of the user (RFC 6819 5.2.2.3; OAuth 2.0 security BCP).
      auto n = store_->revoke_user_tokens(u->id);
      audit(who, "refresh_reused", u->username, {{"revoked", n ? *n : 0}});
      return not_authenticated("refresh token already used");
    }
    audit(who, "refresh_failed", u->username, {{"reason", "revoked"}});
    return not_authenticated("refresh token revoked");
  }
  auto now = options_.clock->now();
  if (now >= r->expires_at) {
    audit(who, "refresh_failed", u->username, {{"reason", "expired"}});
    return not_authenticated("refresh token expired");
  }
  if (u->disabled) {
    audit(who, "refresh_failed", u->username, {{"reason", "disabled"}});
    return not_authenticated("user disabled");
  }
  auto pair = issue_pair(*u);
  if (!pair) return pair.error();
  refresh_token_record next{sha256_hex(pair->refresh_token), u->id, now,
                            now + options_.refresh_ttl,      false, ""};
  if (auto rotated = store_->rotate_refresh_token(hash, next); !rotated) {
    if (rotated.error().code() == errc::conflict) {
      audit(who, "refresh_failed", u->username, {{"reason", "used concurrently"}});
      return not_authenticated("refresh token already used");
    }
    return rotated.error();
  }
  audit(who, "refresh", u->username);
  return pair;
}

result<void> authenticator::logout(std::string_view refresh_token, const principal& who,
                                   std::string_view ip) {
  actor_info by{who.user.username, std::string(ip)};
  if (refresh_token.empty() || refresh_token.size() > 256) {
    return not_authenticated("malformed refresh token");
  }
  const auto hash = sha256_hex(refresh_token);
  auto r = store_->get_refresh_token(hash);
  if (!r) {
    if (r.error().code() != errc::not_found) return r.error();
    return not_authenticated("unknown refresh token");
  }
  if (r->user_id != who.user.id && !who.user.global_admin) {
    return not_authenticated("the refresh token belongs to another user");
  }
  auto revoked = store_->revoke_refresh_token(hash);
  if (!revoked) return revoked.error();
  audit(by, "logout", who.user.username, {{"was_active", *revoked}});
  return {};
}

result<principal> authenticator::authenticate(std::string_view access_token) {
  const auto now = options_.clock->now();
  const auto steady_now = std::chrono::steady_clock::now();
  std::string sub;
  {
    // A token verified before is known by its exact text; only its expiry
    // is checked again (the signature and claims cannot have changed).
    std::lock_guard lock(cache_mutex_);
    auto it = verified_.find(access_token);
    if (it != verified_.end()) {
      if (now >= it->second.exp + options_.leeway) {
        verified_.erase(it);
      } else {
        sub = it->second.sub;
      }
    }
  }
  if (sub.empty()) {
    jwt_check check{options_.issuer, options_.audience, now, options_.leeway};
    auto claims = verify_jwt(access_token, options_.jwt_secret, check);
    if (!claims) return claims.error();
    sub = claims->sub;
    std::lock_guard lock(cache_mutex_);
    if (verified_.size() >= max_cached_tokens) verified_.clear();
    verified_.emplace(std::string(access_token), verified_token{sub, claims->exp});
  }
  if (options_.user_cache_ttl.count() > 0) {
    std::lock_guard lock(cache_mutex_);
    auto it = cache_.find(sub);
    if (it != cache_.end() && steady_now - it->second.read_at < options_.user_cache_ttl) {
      if (it->second.who.user.disabled) return not_authenticated("user disabled");
      return it->second.who;
    }
  }
  auto u = store_->find_user(sub);
  if (!u) {
    if (u.error().code() != errc::not_found) return u.error();
    return not_authenticated("unknown user '" + sub + "'");
  }
  auto roles = store_->roles_of(u->id);
  if (!roles) return roles.error();
  principal p;
  p.user = std::move(*u);
  p.user.password_hash.clear();
  p.roles = std::move(*roles);
  if (options_.user_cache_ttl.count() > 0) {
    std::lock_guard lock(cache_mutex_);
    if (cache_.size() >= max_cached_users) cache_.clear();
    cache_[p.user.username] = cached{p, steady_now};
  }
  if (p.user.disabled) return not_authenticated("user disabled");
  return p;
}

result<std::string> authenticator::issue_access_token(std::string_view username) {
  auto u = store_->find_user(username);
  if (!u) return u.error();
  auto pair = issue_pair(*u);
  if (!pair) return pair.error();
  return pair->access_token;
}

result<auth_user> authenticator::create_user(const new_user& nu, const actor_info& by) {
  if (nu.username.empty() || nu.username.size() > max_username ||
      !std::all_of(nu.username.begin(), nu.username.end(), username_char)) {
    return error(errc::invalid_argument, "user names are 1 to 64 characters of [A-Za-z0-9._@-]");
  }
  if (nu.password.size() < options_.min_password_length || nu.password.size() > max_password) {
    return error(errc::invalid_argument, "passwords are " +
                                             std::to_string(options_.min_password_length) + " to " +
                                             std::to_string(max_password) + " bytes");
  }
  auto hash = hash_password(nu.password, options_.password);
  if (!hash) return hash.error();
  auth_user u;
  u.id = "u-" + random_token(12);
  u.username = nu.username;
  u.password_hash = std::move(*hash);
  u.global_admin = nu.global_admin;
  auto created = store_->create_user(std::move(u));
  if (!created) return created.error();
  audit(by, "user_created", created->username, {{"global_admin", created->global_admin}});
  return created;
}

result<bool> authenticator::create_first_admin(std::string_view username, std::string_view password,
                                               const actor_info& by) {
  auto n = store_->count_users();
  if (!n) return n.error();
  if (*n > 0) return false;
  auto u = create_user({std::string(username), std::string(password), true}, by);
  if (!u) return u.error();
  return true;
}

result<void> authenticator::set_role(std::string_view user_id, std::string_view project,
                                     project_role role, const actor_info& by) {
  auto u = store_->get_user(user_id);
  if (!u) return u.error();
  if (auto r = store_->set_role(user_id, project, role); !r) return r;
  forget(u->username);
  audit(by, "role_set", u->username + ":" + std::string(project),
        {{"project", project}, {"role", to_string(role)}});
  return {};
}

result<auth_user> authenticator::set_global_admin(std::string_view user_id, bool on,
                                                  const actor_info& by) {
  auto u = store_->get_user(user_id);
  if (!u) return u.error();
  u->global_admin = on;
  auto updated = store_->update_user(*u);
  if (!updated) return updated.error();
  forget(u->username);
  audit(by, "global_admin_set", u->username, {{"global_admin", on}});
  return updated;
}

result<auth_user> authenticator::set_disabled(std::string_view user_id, bool disabled,
                                              const actor_info& by) {
  auto u = store_->get_user(user_id);
  if (!u) return u.error();
  u->disabled = disabled;
  auto updated = store_->update_user(*u);
  if (!updated) return updated.error();
  forget(u->username);
  json details = nullptr;
  if (disabled) {
    auto n = store_->revoke_user_tokens(u->id);
    if (!n) return n.error();
    details = {{"refresh_tokens_revoked", *n}};
  }
  audit(by, disabled ? "user_disabled" : "user_enabled", u->username, std::move(details));
  return updated;
}

result<auth_user> authenticator::set_password(std::string_view user_id, std::string_view password,
                                              const actor_info& by) {
  if (password.size() < options_.min_password_length || password.size() > max_password) {
    return error(errc::invalid_argument, "passwords are " +
                                             std::to_string(options_.min_password_length) + " to " +
                                             std::to_string(max_password) + " bytes");
  }
  auto u = store_->get_user(user_id);
  if (!u) return u.error();
  auto hash = hash_password(password, options_.password);
  if (!hash) return hash.error();
  u->password_hash = std::move(*hash);
  auto updated = store_->update_user(*u);
  if (!updated) return updated.error();
  auto n = store_->revoke_user_tokens(u->id);
  if (!n) return n.error();
  forget(u->username);
  audit(by, "password_set", u->username);
  return updated;
}

nlohmann::json authenticator::user_json(const auth_user& u) {
  return {{"id", u.id},
          {"username", u.username},
          {"global_admin", u.global_admin},
          {"disabled", u.disabled},
          {"created_at", format_time(u.created_at)}};
}

}  // namespace aise
