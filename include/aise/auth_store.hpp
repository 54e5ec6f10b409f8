#pragma once
/// @file
/// Where aise::auth keeps its state: users, per-project roles, refresh
/// tokens (only their SHA-256) and the audit trail, behind `auth_store`.
///
/// This interface and its in-memory implementation are part of aise::core
/// (no cryptography here), so that aise::sql can implement it without
/// depending on aise::auth; the crypto and the rules (login, token rotation,
/// who may do what) are in aise::auth (auth.hpp, docs/auth.md).
///
/// Contract of every implementation (tests/conformance/auth_store_suite.hpp
/// runs the same cases against memory, SQLite and PostgreSQL):
/// - Thread safety: every member may be called from any thread.
/// - Errors: `not_found` for an unknown id, `already_exists` for a taken
///   user id or user name, `invalid_argument` for empty ids, `unavailable`
///   when the backing database is down. Nothing of a failed call is kept.
/// - User names are compared exactly (case-sensitive).
/// - Blocking: a SQL implementation blocks on its database.

#include <aise/clock.hpp>
#include <aise/core_export.hpp>
#include <aise/error.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aise {

/// A user's role in one project; each includes the rights of the ones below.
enum class project_role : int {
  none = 0,        ///< No role: the project is invisible to the user.
  viewer = 1,      ///< Reads the project, its tasks, events and agents.
  maintainer = 2,  ///< Also creates, cancels, approves and rejects tasks.
  admin = 3,       ///< Also changes and archives the project and sets its members' roles.
};

/// "none", "viewer", "maintainer", "admin".
AISE_CORE_EXPORT std::string_view to_string(project_role r) noexcept;
/// The role named `name` (as `to_string` writes it); nullopt otherwise.
AISE_CORE_EXPORT std::optional<project_role> parse_project_role(std::string_view name) noexcept;

/// A user account.
struct AISE_CORE_EXPORT auth_user {
  std::string id;             ///< Unique, chosen by the caller (aise::auth makes "u-…").
  std::string username;       ///< Unique; the `sub` claim of access tokens.
  std::string password_hash;  ///< A libsodium crypto_pwhash_str string (Argon2id).
  bool global_admin = false;  ///< Every right on every project, plus user administration.
  bool disabled = false;      ///< A disabled user cannot log in and its tokens are refused.
  time_point created_at{};    ///< Set by the store when left unset.
  time_point updated_at{};    ///< Set by the store on every write.
};

/// A refresh token as stored: its SHA-256, never the token itself.
struct AISE_CORE_EXPORT refresh_token_record {
  std::string token_hash;  ///< SHA-256 of the token, lower-case hex. Unique.
  std::string user_id;
  time_point created_at{};
  time_point expires_at{};
  bool revoked = false;     ///< Used (rotated) or logged out.
  std::string replaced_by;  ///< The hash of the token that replaced it on refresh, if any.
};

/// One line of the audit trail.
struct AISE_CORE_EXPORT audit_entry {
  std::uint64_t id = 0;    ///< Assigned by the store, increasing.
  time_point at{};         ///< Set by the store when left unset.
  std::string actor;       ///< Who did it: a user name ("" when unknown, e.g. a failed login).
  std::string action;      ///< e.g. "login", "login_failed", "refresh", "user_created".
  std::string subject;     ///< What it was done to: a user name, "user:project", ...
  std::string ip;          ///< The client's address ("" when not over the network).
  nlohmann::json details;  ///< Anything else (null when nothing).
};

/// The storage interface of aise::auth (see the file comment for the contract).
class AISE_CORE_EXPORT auth_store {
 public:
  virtual ~auth_store() = default;

  /// "memory", "sqlite" or "postgresql".
  [[nodiscard]] virtual std::string_view backend() const noexcept = 0;

  // ---- users ----

  /// Stores a new user; returns it with the timestamps filled in.
  /// `already_exists` when the id or the user name is taken.
  virtual result<auth_user> create_user(auth_user u) = 0;
  /// The user with id `id`; `not_found` otherwise.
  virtual result<auth_user> get_user(std::string_view id) = 0;
  /// The user named `username`; `not_found` otherwise.
  virtual result<auth_user> find_user(std::string_view username) = 0;
  /// Users ordered by id, those after `after` (exclusive), at most `limit`.
  virtual result<std::vector<auth_user>> list_users(std::string_view after, std::size_t limit) = 0;
  /// How many users exist.
  virtual result<std::size_t> count_users() = 0;
  /// Replaces the password hash and the flags of user `u.id` (the user name
  /// and created_at are kept). `not_found` when there is no such user.
  virtual result<auth_user> update_user(const auth_user& u) = 0;

  // ---- roles ----

  /// Sets `user_id`'s role in `project`; `project_role::none` removes it.
  /// `not_found` for an unknown user (the project is not checked: auth
  /// state does not reference the task store).
  virtual result<void> set_role(std::string_view user_id, std::string_view project,
                                project_role role) = 0;
  /// Every project role of the user (projects without a role are absent).
  virtual result<std::map<std::string, project_role>> roles_of(std::string_view user_id) = 0;
  /// Every user with a role in `project`: user id → role.
  virtual result<std::map<std::string, project_role>> members_of(std::string_view project) = 0;

  // ---- refresh tokens ----

  /// Stores a new refresh token. `already_exists` for a hash seen before.
  virtual result<void> insert_refresh_token(const refresh_token_record& r) = 0;
  /// The record of `token_hash`; `not_found` otherwise.
  virtual result<refresh_token_record> get_refresh_token(std::string_view token_hash) = 0;
  /// Atomically revokes `old_hash` (marking it replaced by `next.token_hash`)
  /// and stores `next`. `conflict` when `old_hash` was already revoked (it
  /// was used before: only one of two concurrent refreshes wins),
  /// `not_found` when it does not exist.
  virtual result<void> rotate_refresh_token(std::string_view old_hash,
                                            const refresh_token_record& next) = 0;
  /// Revokes one token; true when it was active before, false when it was
  /// revoked already. `not_found` when it does not exist.
  virtual result<bool> revoke_refresh_token(std::string_view token_hash) = 0;
  /// Revokes every active token of the user; returns how many.
  virtual result<std::size_t> revoke_user_tokens(std::string_view user_id) = 0;

  // ---- audit ----

  /// Appends an entry; returns it with `id` (and `at`, when unset) filled in.
  virtual result<audit_entry> append_audit(audit_entry e) = 0;
  /// Entries with id > `after`, ascending, at most `limit`.
  virtual result<std::vector<audit_entry>> read_audit(std::uint64_t after, std::size_t limit) = 0;
};

/// An `auth_store` in memory (tests, and hosts that keep users elsewhere).
/// `clock` fills the timestamps; default: the system clock.
AISE_CORE_EXPORT std::shared_ptr<auth_store> make_memory_auth_store(
    std::shared_ptr<clock> clock = nullptr);

}  // namespace aise
