// auth_store over SOCI (SQLite and PostgreSQL): the tables of migration
// 0004_auth, the connection pool and error mapping of sql_store.cpp
// (connection.hpp). Every call leases one connection; every write is one
// transaction, rolled back on any exception.

#include <aise/sql.hpp>

#include <algorithm>
#include <fmt/format.h>
#include <utility>

#include "connection.hpp"
#include "migrations.hpp"

namespace aise::sql {
namespace {

using detail::connection;
using detail::dialect;
using detail::from_ns;
using detail::to_ns;

constexpr const char* user_columns =
    "id, username, password_hash, global_admin, disabled, created_at, updated_at";

struct user_row {
  std::string id, username, password_hash;
  int global_admin = 0, disabled = 0;
  long long created_at = 0, updated_at = 0;

  void bind_into(soci::statement& st) {
    st.exchange(soci::into(id));
    st.exchange(soci::into(username));
    st.exchange(soci::into(password_hash));
    st.exchange(soci::into(global_admin));
    st.exchange(soci::into(disabled));
    st.exchange(soci::into(created_at));
    st.exchange(soci::into(updated_at));
  }

  [[nodiscard]] auth_user to_user() const {
    auth_user u;
    u.id = id;
    u.username = username;
    u.password_hash = password_hash;
    u.global_admin = global_admin != 0;
    u.disabled = disabled != 0;
    u.created_at = from_ns(created_at);
    u.updated_at = from_ns(updated_at);
    return u;
  }
};

struct token_row {
  std::string token_hash, user_id, replaced_by;
  long long created_at = 0, expires_at = 0;
  int revoked = 0;

  [[nodiscard]] refresh_token_record to_record() const {
    return {token_hash,          user_id,      from_ns(created_at),
            from_ns(expires_at), revoked != 0, replaced_by};
  }
};

std::string dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

class sql_auth_store final : public auth_store {
 public:
  sql_auth_store(std::unique_ptr<detail::pool> pool, std::shared_ptr<aise::clock> clock)
      : pool_(std::move(pool)), clock_(std::move(clock)) {}

  [[nodiscard]] std::string_view backend() const noexcept override {
    return pool_->kind() == dialect::sqlite ? "sqlite" : "postgresql";
  }

  result<auth_user> create_user(auth_user u) override {
    if (u.id.empty() || u.username.empty()) {
      return error(errc::invalid_argument, "create_user: empty id or user name");
    }
    auto now = clock_->now();
    if (u.created_at == time_point{}) u.created_at = now;
    u.updated_at = now;
    return run<auth_user>("create_user", [&](connection& c) -> result<auth_user> {
      detail::transaction tx(c, kind());
      int taken = 0;
      c.session << "SELECT COUNT(*) FROM auth_users WHERE id = :id OR username = :name",
          soci::use(u.id, "id"), soci::use(u.username, "name"), soci::into(taken);
      if (taken != 0) {
        return error(errc::already_exists,
                     "create_user: user id '" + u.id + "' or name '" + u.username + "' is taken");
      }
      int admin = u.global_admin ? 1 : 0;
      int disabled = u.disabled ? 1 : 0;
      long long created = to_ns(u.created_at);
      long long updated = to_ns(u.updated_at);
      try {
        c.session << "INSERT INTO auth_users (" << user_columns
                  << ") VALUES (:id, :name, :hash, :admin, :disabled, :created, :updated)",
            soci::use(u.id), soci::use(u.username), soci::use(u.password_hash), soci::use(admin),
            soci::use(disabled), soci::use(created), soci::use(updated);
      } catch (...) {
        if (detail::is_unique_violation(kind())) {
          return error(errc::already_exists, "create_user: user '" + u.username + "' is taken");
        }
        throw;
      }
      tx.commit();
      return u;
    });
  }

  result<auth_user> get_user(std::string_view id) override {
    return select_user("get_user", "id", std::string(id));
  }

  result<auth_user> find_user(std::string_view username) override {
    return select_user("find_user", "username", std::string(username));
  }

  result<std::vector<auth_user>> list_users(std::string_view after, std::size_t limit) override {
    return run<std::vector<auth_user>>(
        "list_users", [&](connection& c) -> result<std::vector<auth_user>> {
          std::vector<auth_user> out;
          std::string from(after);
          long long n = static_cast<long long>(std::clamp<std::size_t>(limit, 1, 1000));
          user_row r;
          soci::statement st(c.session);
          st.exchange(soci::use(from, "after"));
          st.exchange(soci::use(n, "n"));
          r.bind_into(st);
          st.alloc();
          st.prepare(std::string("SELECT ") + user_columns +
                     " FROM auth_users WHERE id > :after ORDER BY id LIMIT :n");
          st.define_and_bind();
          st.execute();
          while (st.fetch()) out.push_back(r.to_user());
          return out;
        });
  }

  result<std::size_t> count_users() override {
    return run<std::size_t>("count_users", [&](connection& c) -> result<std::size_t> {
      long long n = 0;
      c.session << "SELECT COUNT(*) FROM auth_users", soci::into(n);
      return static_cast<std::size_t>(n);
    });
  }

  result<auth_user> update_user(const auth_user& u) override {
    return run<auth_user>("update_user", [&](connection& c) -> result<auth_user> {
      detail::transaction tx(c, kind());
      int admin = u.global_admin ? 1 : 0;
      int disabled = u.disabled ? 1 : 0;
      long long updated = to_ns(clock_->now());
      soci::statement st =
          (c.session.prepare << "UPDATE auth_users SET password_hash = :hash, global_admin = "
                                ":admin, disabled = :disabled, updated_at = :updated WHERE id = "
                                ":id",
           soci::use(u.password_hash), soci::use(admin), soci::use(disabled), soci::use(updated),
           soci::use(u.id));
      st.execute(true);
      if (st.get_affected_rows() == 0) return error(errc::not_found, "no user '" + u.id + "'");
      auto out = select_user_in(c, "id", u.id);
      tx.commit();
      if (!out) return error(errc::not_found, "no user '" + u.id + "'");
      return *out;
    });
  }

  result<void> set_role(std::string_view user_id, std::string_view project,
                        project_role role) override {
    if (project.empty()) return error(errc::invalid_argument, "set_role: empty project");
    return run<void>("set_role", [&](connection& c) -> result<void> {
      detail::transaction tx(c, kind());
      std::string user(user_id);
      std::string proj(project);
      int exists = 0;
      c.session << "SELECT COUNT(*) FROM auth_users WHERE id = :id", soci::use(user),
          soci::into(exists);
      if (exists == 0) return error(errc::not_found, "no user '" + user + "'");
      c.session << "DELETE FROM auth_roles WHERE user_id = :u AND project = :p", soci::use(user),
          soci::use(proj);
      if (role != project_role::none) {
        int r = static_cast<int>(role);
        c.session << "INSERT INTO auth_roles (user_id, project, role) VALUES (:u, :p, :r)",
            soci::use(user), soci::use(proj), soci::use(r);
      }
      tx.commit();
      return {};
    });
  }

  result<std::map<std::string, project_role>> roles_of(std::string_view user_id) override {
    return select_roles("roles_of", "SELECT project, role FROM auth_roles WHERE user_id = :k",
                        std::string(user_id));
  }

  result<std::map<std::string, project_role>> members_of(std::string_view project) override {
    return select_roles("members_of", "SELECT user_id, role FROM auth_roles WHERE project = :k",
                        std::string(project));
  }

  result<void> insert_refresh_token(const refresh_token_record& r) override {
    if (r.token_hash.empty()) return error(errc::invalid_argument, "empty token hash");
    return run<void>("insert_refresh_token", [&](connection& c) -> result<void> {
      detail::transaction tx(c, kind());
      if (auto e = insert_token(c, r)) return *e;
      tx.commit();
      return {};
    });
  }

  result<refresh_token_record> get_refresh_token(std::string_view token_hash) override {
    return run<refresh_token_record>("get_refresh_token",
                                     [&](connection& c) -> result<refresh_token_record> {
                                       auto r = select_token(c, std::string(token_hash));
                                       if (!r)
                                         return error(errc::not_found, "no such refresh token");
                                       return *r;
                                     });
  }

  result<void> rotate_refresh_token(std::string_view old_hash,
                                    const refresh_token_record& next) override {
    if (next.token_hash.empty()) return error(errc::invalid_argument, "empty token hash");
    return run<void>("rotate_refresh_token", [&](connection& c) -> result<void> {
      detail::transaction tx(c, kind());
      std::string old(old_hash);
      // The conditional UPDATE is the compare-and-set: of two concurrent
      // rotations of one token, the second finds revoked = 1 (PostgreSQL
      // waits on the first one's row lock and re-checks the condition).
      soci::statement st = (c.session.prepare << "UPDATE auth_refresh_tokens SET revoked = 1, "
                                                 "replaced_by = :next WHERE token_hash = :old AND "
                                                 "revoked = 0",
                            soci::use(next.token_hash), soci::use(old));
      st.execute(true);
      if (st.get_affected_rows() == 0) {
        if (!select_token(c, old)) return error(errc::not_found, "no such refresh token");
        return error(errc::conflict, "the refresh token was used or revoked");
      }
      if (auto e = insert_token(c, next)) return *e;
      tx.commit();
      return {};
    });
  }

  result<bool> revoke_refresh_token(std::string_view token_hash) override {
    return run<bool>("revoke_refresh_token", [&](connection& c) -> result<bool> {
      detail::transaction tx(c, kind());
      std::string hash(token_hash);
      soci::statement st = (c.session.prepare << "UPDATE auth_refresh_tokens SET revoked = 1 "
                                                 "WHERE token_hash = :h AND revoked = 0",
                            soci::use(hash));
      st.execute(true);
      bool was_active = st.get_affected_rows() > 0;
      if (!was_active && !select_token(c, hash)) {
        return error(errc::not_found, "no such refresh token");
      }
      tx.commit();
      return was_active;
    });
  }

  result<std::size_t> revoke_user_tokens(std::string_view user_id) override {
    return run<std::size_t>("revoke_user_tokens", [&](connection& c) -> result<std::size_t> {
      detail::transaction tx(c, kind());
      std::string user(user_id);
      soci::statement st = (c.session.prepare << "UPDATE auth_refresh_tokens SET revoked = 1 "
                                                 "WHERE user_id = :u AND revoked = 0",
                            soci::use(user));
      st.execute(true);
      auto n = static_cast<std::size_t>(st.get_affected_rows());
      tx.commit();
      return n;
    });
  }

  result<audit_entry> append_audit(audit_entry e) override {
    if (e.at == time_point{}) e.at = clock_->now();
    return run<audit_entry>("append_audit", [&](connection& c) -> result<audit_entry> {
      detail::transaction tx(c, kind());
      c.session << "UPDATE auth_audit_counter SET last = last + 1 WHERE id = 1";
      long long id = 0;
      c.session << "SELECT last FROM auth_audit_counter WHERE id = 1", soci::into(id);
      long long at = to_ns(e.at);
      std::string details = dump(e.details);
      c.session << "INSERT INTO auth_audit (id, at, actor, action, subject, ip, details) VALUES "
                   "(:id, :at, :actor, :action, :subject, :ip, :details)",
          soci::use(id), soci::use(at), soci::use(e.actor), soci::use(e.action),
          soci::use(e.subject), soci::use(e.ip), soci::use(details);
      tx.commit();
      e.id = static_cast<std::uint64_t>(id);
      return e;
    });
  }

  result<std::vector<audit_entry>> read_audit(std::uint64_t after, std::size_t limit) override {
    return run<std::vector<audit_entry>>(
        "read_audit", [&](connection& c) -> result<std::vector<audit_entry>> {
          std::vector<audit_entry> out;
          long long from = static_cast<long long>(
              std::min<std::uint64_t>(after, static_cast<std::uint64_t>(INT64_MAX)));
          long long n = static_cast<long long>(std::clamp<std::size_t>(limit, 1, 1000));
          long long id = 0, at = 0;
          std::string actor, action, subject, ip, details;
          soci::statement st =
              (c.session.prepare << "SELECT id, at, actor, action, subject, ip, details FROM "
                                    "auth_audit WHERE id > :after ORDER BY id LIMIT :n",
               soci::use(from), soci::use(n), soci::into(id), soci::into(at), soci::into(actor),
               soci::into(action), soci::into(subject), soci::into(ip), soci::into(details));
          st.execute();
          while (st.fetch()) {
            audit_entry e;
            e.id = static_cast<std::uint64_t>(id);
            e.at = from_ns(at);
            e.actor = actor;
            e.action = action;
            e.subject = subject;
            e.ip = ip;
            e.details = nlohmann::json::parse(details, nullptr, false);
            if (e.details.is_discarded()) e.details = nullptr;
            out.push_back(std::move(e));
          }
          return out;
        });
  }

 private:
  [[nodiscard]] dialect kind() const noexcept { return pool_->kind(); }

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

  std::optional<auth_user> select_user_in(connection& c, const char* column,
                                          const std::string& key) {
    user_row r;
    soci::statement st(c.session);
    st.exchange(soci::use(key, "k"));
    r.bind_into(st);
    st.alloc();
    st.prepare(fmt::format("SELECT {} FROM auth_users WHERE {} = :k", user_columns, column));
    st.define_and_bind();
    if (!st.execute(true)) return std::nullopt;
    return r.to_user();
  }

  result<auth_user> select_user(std::string_view op, const char* column, const std::string& key) {
    return run<auth_user>(op, [&](connection& c) -> result<auth_user> {
      auto u = select_user_in(c, column, key);
      if (!u) return error(errc::not_found, "no user " + std::string(column) + " '" + key + "'");
      return *u;
    });
  }

  result<std::map<std::string, project_role>> select_roles(std::string_view op, const char* sql,
                                                           const std::string& key) {
    return run<std::map<std::string, project_role>>(
        op, [&](connection& c) -> result<std::map<std::string, project_role>> {
          std::map<std::string, project_role> out;
          std::string name;
          int role = 0;
          soci::statement st =
              (c.session.prepare << sql, soci::use(key), soci::into(name), soci::into(role));
          st.execute();
          while (st.fetch()) {
            if (role >= 1 && role <= 3) out.emplace(name, static_cast<project_role>(role));
          }
          return out;
        });
  }

  std::optional<refresh_token_record> select_token(connection& c, const std::string& hash) {
    token_row r;
    c.session << "SELECT token_hash, user_id, created_at, expires_at, revoked, replaced_by FROM "
                 "auth_refresh_tokens WHERE token_hash = :h",
        soci::use(hash), soci::into(r.token_hash), soci::into(r.user_id), soci::into(r.created_at),
        soci::into(r.expires_at), soci::into(r.revoked), soci::into(r.replaced_by);
    if (!c.session.got_data()) return std::nullopt;
    return r.to_record();
  }

  // nullopt when inserted; the error otherwise (a thrown database error
  // other than a duplicate propagates to `run`).
  std::optional<error> insert_token(connection& c, const refresh_token_record& r) {
    long long created = to_ns(r.created_at);
    long long expires = to_ns(r.expires_at);
    int revoked = r.revoked ? 1 : 0;
    int user_exists = 0;
    c.session << "SELECT COUNT(*) FROM auth_users WHERE id = :u", soci::use(r.user_id),
        soci::into(user_exists);
    if (user_exists == 0) return error(errc::not_found, "no user '" + r.user_id + "'");
    if (select_token(c, r.token_hash)) return error(errc::already_exists, "refresh token exists");
    c.session << "INSERT INTO auth_refresh_tokens (token_hash, user_id, created_at, expires_at, "
                 "revoked, replaced_by) VALUES (:h, :u, :c, :e, :r, :b)",
        soci::use(r.token_hash), soci::use(r.user_id), soci::use(created), soci::use(expires),
        soci::use(revoked), soci::use(r.replaced_by);
    return std::nullopt;
  }

  std::unique_ptr<detail::pool> pool_;
  std::shared_ptr<aise::clock> clock_;
};

}  // namespace

result<std::shared_ptr<auth_store>> open_auth_store(const store_options& options) {
  auto where = detail::parse_url(options);
  if (!where) return where.error();
  auto first = detail::connect(*where, options, options.connect_attempts);
  if (!first) return first.error();
  auto s = options.migrate ? detail::apply_migrations(**first, where->kind)
                           : detail::read_status(**first, where->kind);
  if (!s) return s.error();
  if (!s->problem.empty()) return error(errc::invalid_argument, "sql: " + s->problem);
  if (s->database_version < s->library_version) {
    return error(errc::invalid_argument,
                 fmt::format("sql: the database schema is at version {}, this libaise needs {}: "
                             "run `aise-admin migrate --db <url>` (or open with migrate on)",
                             s->database_version, s->library_version));
  }
  std::vector<std::unique_ptr<connection>> conns;
  conns.push_back(std::move(*first));
  for (std::size_t i = 1; i < std::max<std::size_t>(1, options.pool_size); ++i) {
    auto c = detail::connect(*where, options, 1);
    if (!c) return c.error();
    conns.push_back(std::move(*c));
  }
  auto clock = options.clock ? options.clock : make_system_clock();
  auto p = std::make_unique<detail::pool>(*where, options, std::move(conns));
  return std::shared_ptr<auth_store>(std::make_shared<sql_auth_store>(std::move(p), clock));
}

}  // namespace aise::sql
