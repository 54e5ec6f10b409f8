#pragma once
/// @file
/// aise::auth: user authentication and project roles for hosts that expose
/// libaise to people (aise-server uses it; an embedding application with its
/// own front end can too). libsodium does the cryptography (linked
/// privately: no libsodium type appears here). docs/auth.md has the design.
///
/// - Passwords: Argon2id (`crypto_pwhash_str`), cost from `password_options`.
/// - Access tokens: JWT HS256 (`sign_jwt` / `verify_jwt`), claims sub (the
///   user name), iat, exp, iss, aud; the header's alg must be exactly HS256.
/// - Refresh tokens: 256 random bits; only their SHA-256 is stored; each one
///   is used once (rotated on refresh), revoked on logout, and expires.
/// - Roles: a global admin flag, and per project admin / maintainer / viewer
///   (`project_role`, auth_store.hpp).
/// - Audit: logins (ok and failed), refreshes, logouts and every
///   administrative change are appended to the store's audit trail.
///
/// Errors: `errc::rejected` means "not authenticated" — wrong password,
/// unknown or disabled user, a bad, expired or revoked token. Its message
/// says why, for logs; a front end should answer with something generic.
/// Other codes are as in auth_store.hpp (`invalid_argument` for a bad
/// user name or a short password, `already_exists`, `not_found`, ...).

#include <aise/auth_export.hpp>
#include <aise/auth_store.hpp>
#include <aise/clock.hpp>
#include <aise/error.hpp>

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace aise {

// ---------------------------------------------------------------------------
// Passwords
// ---------------------------------------------------------------------------

/// The cost of Argon2id. The defaults are libsodium's "interactive" limits
/// (2 passes over 64 MiB: about 50-100 ms on one core, and 64 MiB of memory
/// per hash being computed). `cheapest()` is for tests only.
struct AISE_AUTH_EXPORT password_options {
  unsigned long long opslimit = 2;             ///< crypto_pwhash_OPSLIMIT_INTERACTIVE
  std::size_t memlimit = 64U * 1024U * 1024U;  ///< crypto_pwhash_MEMLIMIT_INTERACTIVE (bytes)
  /// libsodium's minimum cost (1 pass over 8 KiB): fast, and weak.
  static password_options cheapest() noexcept { return {1, 8192}; }
};

/// The Argon2id hash of `password` as a self-describing string (algorithm,
/// cost and salt included). `internal` when libsodium fails (out of memory).
AISE_AUTH_EXPORT result<std::string> hash_password(std::string_view password,
                                                   const password_options& options = {});

/// True when `password` matches `hash` (from `hash_password`, any cost).
/// Never throws; a malformed hash is simply false.
AISE_AUTH_EXPORT bool verify_password(std::string_view hash, std::string_view password) noexcept;

// ---------------------------------------------------------------------------
// JWT (HS256)
// ---------------------------------------------------------------------------

/// The claims aise::auth issues and checks.
struct AISE_AUTH_EXPORT jwt_claims {
  std::string sub;   ///< Subject: the user name.
  std::string iss;   ///< Issuer.
  std::string aud;   ///< Audience (a token whose aud is an array must contain it).
  time_point iat{};  ///< Issued at (whole seconds in the token).
  time_point exp{};  ///< Expires at (whole seconds in the token).
};

/// What `verify_jwt` requires.
struct AISE_AUTH_EXPORT jwt_check {
  std::string issuer;    ///< iss must equal it.
  std::string audience;  ///< aud must equal it (or, as an array, contain it).
  time_point now{};      ///< The current time.
  /// Clock skew tolerated: a token is still valid until exp + leeway, and
  /// may have been issued up to leeway in the future.
  std::chrono::seconds leeway{30};
};

/// `header.payload.signature`, base64url without padding; header
/// `{"alg":"HS256","typ":"JWT"}`, HMAC-SHA-256 with `key`.
AISE_AUTH_EXPORT std::string sign_jwt(const jwt_claims& claims, std::string_view key);

/// Checks a token: three base64url parts, a header whose alg is exactly
/// "HS256" (so "none", "HS512", "RS256", ... are refused), the signature
/// (compared in constant time), then the claims: sub, iat, exp, iss and aud
/// all present, iss and aud as `check` says, exp not passed and iat not in
/// the future (both with the leeway). `rejected` naming the first failure.
AISE_AUTH_EXPORT result<jwt_claims> verify_jwt(std::string_view token, std::string_view key,
                                               const jwt_check& check);

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// `n` bytes from libsodium's CSPRNG, base64url without padding.
AISE_AUTH_EXPORT std::string random_token(std::size_t n = 32);
/// Base64url without padding, and back (nullopt on a malformed input).
AISE_AUTH_EXPORT std::string base64url_encode(std::string_view bytes);
AISE_AUTH_EXPORT std::optional<std::string> base64url_decode(std::string_view text);
/// Compares two strings in time that depends only on their lengths.
AISE_AUTH_EXPORT bool constant_time_equal(std::string_view a, std::string_view b) noexcept;

// ---------------------------------------------------------------------------
// The authenticator
// ---------------------------------------------------------------------------

/// Options of an `authenticator`.
struct AISE_AUTH_EXPORT auth_options {
  /// The HMAC key of access tokens: at least 32 bytes. Never logged.
  std::string jwt_secret;
  std::string issuer = "aise";               ///< iss of issued tokens, required of presented ones.
  std::string audience = "aise-api";         ///< aud, likewise.
  std::chrono::seconds access_ttl{15 * 60};  ///< Lifetime of an access token.
  std::chrono::seconds refresh_ttl{30 * 24 * 3600};  ///< Lifetime of a refresh token.
  std::chrono::seconds leeway{30};                   ///< Clock skew tolerated (jwt_check).
  password_options password;                         ///< Cost of new password hashes.
  std::size_t min_password_length = 8;               ///< Shorter passwords are refused.
  /// How long `authenticate` may reuse what it read of a user (account and
  /// roles) before reading it again. Changes made through this
  /// authenticator take effect at once; changes made by another process
  /// sharing the store within this time. 0: read on every call.
  std::chrono::milliseconds user_cache_ttl{1000};
  /// Fills times; default: the system clock.
  std::shared_ptr<aise::clock> clock;
};

/// Who is calling: the user (without its password hash) and its roles.
struct AISE_AUTH_EXPORT principal {
  auth_user user;
  std::map<std::string, project_role> roles;  ///< Project id → role.

  /// The role in `project`: admin for a global admin, else the stored role.
  [[nodiscard]] project_role role_in(std::string_view project) const;
  /// True when the role in `project` is at least `needed`.
  [[nodiscard]] bool can(std::string_view project, project_role needed) const {
    return role_in(project) >= needed;
  }
};

/// What `login` and `refresh` return.
struct AISE_AUTH_EXPORT token_pair {
  std::string access_token;            ///< JWT for `Authorization: Bearer`.
  std::string refresh_token;           ///< Opaque; for `refresh` and `logout`.
  std::chrono::seconds expires_in{0};  ///< Lifetime of the access token.
};

/// Fields of a new user.
struct AISE_AUTH_EXPORT new_user {
  std::string username;  ///< 1-64 characters of [A-Za-z0-9._@-].
  std::string password;  ///< At least `min_password_length` bytes.
  bool global_admin = false;
};

/// Who does something, for the audit trail.
struct AISE_AUTH_EXPORT actor_info {
  std::string username;  ///< "" for the system (configuration, setup command).
  std::string ip;        ///< "" when not over the network.
};

/// Logins, tokens, users, roles and the audit trail over an `auth_store`.
///
/// Thread safety: every member may be called from any thread. Blocking: it
/// blocks on the store, and `login`, `create_user` and password changes
/// spend the Argon2id cost on the calling thread.
class AISE_AUTH_EXPORT authenticator {
 public:
  /// `invalid_argument` when the secret is shorter than 32 bytes, the
  /// issuer or audience is empty, or a lifetime is not positive.
  static result<std::unique_ptr<authenticator>> make(std::shared_ptr<auth_store> store,
                                                     auth_options options);

  /// Checks user name and password; on success issues a token pair and
  /// audits "login", else audits "login_failed" and returns `rejected`
  /// (the same for an unknown user, a wrong password and a disabled user;
  /// an unknown user costs a password check too, so timing does not tell).
  result<token_pair> login(std::string_view username, std::string_view password,
                           std::string_view ip);

  /// Trades a refresh token for a new pair; the old one is revoked
  /// (rotation). A token used a second time is `rejected` and, as it was
  /// probably stolen, every refresh token of its user is revoked.
  result<token_pair> refresh(std::string_view refresh_token, std::string_view ip);

  /// Revokes `refresh_token` (idempotent for a token already revoked);
  /// `rejected` for an unknown token or one of another user than `who`.
  result<void> logout(std::string_view refresh_token, const principal& who, std::string_view ip);

  /// The caller behind an access token: verified (verify_jwt) and its user
  /// known and not disabled; `rejected` otherwise. A token verified before
  /// is remembered by its exact text (at most 10,000) until it expires, so
  /// that a client sending the same token again costs a hash lookup, not a
  /// signature check and two JSON parses.
  result<principal> authenticate(std::string_view access_token);

  /// An access token for `username` without a password (setup tools and
  /// tests); `not_found` for an unknown user.
  result<std::string> issue_access_token(std::string_view username);

  // ---- administration (the caller checks the actor's rights) ----

  /// Creates a user (id "u-" + random); audits "user_created".
  result<auth_user> create_user(const new_user& u, const actor_info& by);
  /// Creates the first user, a global admin, only when there is no user at
  /// all; returns false (and changes nothing) when there is one already.
  result<bool> create_first_admin(std::string_view username, std::string_view password,
                                  const actor_info& by);
  /// Sets a user's role in a project (none removes it); audits "role_set".
  result<void> set_role(std::string_view user_id, std::string_view project, project_role role,
                        const actor_info& by);
  /// Grants or takes the global admin flag; audits "global_admin_set".
  result<auth_user> set_global_admin(std::string_view user_id, bool on, const actor_info& by);
  /// Disables (or enables) a user; disabling revokes its refresh tokens and
  /// its access tokens are refused from then on. Audits "user_disabled" /
  /// "user_enabled".
  result<auth_user> set_disabled(std::string_view user_id, bool disabled, const actor_info& by);
  /// Changes a user's password (revokes its refresh tokens); audits
  /// "password_set".
  result<auth_user> set_password(std::string_view user_id, std::string_view password,
                                 const actor_info& by);

  /// The store (reads: users, members, audit).
  [[nodiscard]] auth_store& store() noexcept { return *store_; }
  [[nodiscard]] const auth_options& options() const noexcept { return options_; }

  /// The user as a client may see it (no password hash).
  [[nodiscard]] static nlohmann::json user_json(const auth_user& u);

 private:
  authenticator(std::shared_ptr<auth_store> store, auth_options options);
  result<token_pair> issue_pair(const auth_user& u);
  void audit(const actor_info& by, std::string action, std::string subject,
             nlohmann::json details = nullptr);
  void forget(std::string_view username);

  std::shared_ptr<auth_store> store_;
  auth_options options_;
  std::string dummy_hash_;  // checked for unknown users, so that timing does not tell

  struct cached {
    principal who;
    std::chrono::steady_clock::time_point read_at;
  };
  struct verified_token {
    std::string sub;
    time_point exp;
  };
  struct text_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  std::mutex cache_mutex_;
  std::unordered_map<std::string, cached> cache_;  // by user name; bounded (see .cpp)
  // Access tokens verified before, by their text; bounded (see .cpp).
  std::unordered_map<std::string, verified_token, text_hash, std::equal_to<>> verified_;
};

}  // namespace aise
