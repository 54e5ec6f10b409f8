#include "migrations.hpp"

#include <aise/sha256.hpp>

#include <algorithm>
#include <fmt/format.h>
#include <map>
#include <string>

namespace aise::sql::detail {
namespace {

struct applied_row {
  std::string name;
  std::string checksum;
  long long applied_at = 0;
};

void ensure_table(connection& c) {
  c.session << "CREATE TABLE IF NOT EXISTS schema_migrations ("
               "version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, "
               "applied_at BIGINT NOT NULL)";
}

std::map<int, applied_row> read_applied(connection& c) {
  std::map<int, applied_row> out;
  int version = 0;
  applied_row row;
  soci::statement st = (c.session.prepare << "SELECT version, name, checksum, applied_at FROM "
                                             "schema_migrations ORDER BY version",
                        soci::into(version), soci::into(row.name), soci::into(row.checksum),
                        soci::into(row.applied_at));
  st.execute();
  while (st.fetch()) out[version] = row;
  return out;
}

bool table_exists(connection& c, dialect d) {
  int n = 0;
  if (d == dialect::sqlite) {
    c.session << "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = "
                 "'schema_migrations'",
        soci::into(n);
  } else {
    c.session << "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = "
                 "current_schema() AND table_name = 'schema_migrations'",
        soci::into(n);
  }
  return n > 0;
}

schema_status build_status(const std::map<int, applied_row>& applied, dialect d) {
  schema_status s;
  s.backend = d == dialect::sqlite ? "sqlite" : "postgresql";
  const auto& shipped = shipped_migrations();
  s.library_version = shipped.empty() ? 0 : shipped.back().version;
  for (const auto& m : shipped) {
    migration_info info;
    info.version = m.version;
    info.name = std::string(m.name);
    info.checksum = sha256_hex(m.text);
    if (auto a = applied.find(m.version); a != applied.end()) {
      info.applied = true;
      info.applied_checksum = a->second.checksum;
      info.applied_at = from_ns(a->second.applied_at);
      if (s.problem.empty() && a->second.checksum != info.checksum) {
        s.problem = fmt::format(
            "migration {} ({}) was changed after it was applied: the database recorded "
            "checksum {}, this libaise ships {}. Released migrations must never be edited; "
            "restore the original file or use a database made by this version",
            m.version, m.name, a->second.checksum, info.checksum);
      }
    }
    s.migrations.push_back(std::move(info));
  }
  for (const auto& [version, row] : applied) {
    s.database_version = std::max(s.database_version, version);
    if (version > s.library_version) {
      migration_info info;
      info.version = version;
      info.name = row.name;
      info.applied = true;
      info.applied_checksum = row.checksum;
      info.applied_at = from_ns(row.applied_at);
      s.migrations.push_back(std::move(info));
    }
  }
  if (s.database_version > s.library_version) {
    s.problem = fmt::format(
        "the database schema is at version {}, newer than this libaise knows ({}): it was "
        "migrated by a newer libaise; upgrade libaise (downgrading a schema is not supported)",
        s.database_version, s.library_version);
  }
  return s;
}

}  // namespace

result<schema_status> read_status(connection& c, dialect d) {
  try {
    std::map<int, applied_row> applied;
    if (table_exists(c, d)) applied = read_applied(c);
    return build_status(applied, d);
  } catch (...) {
    return to_error("schema status", &c, d);
  }
}

result<schema_status> apply_migrations(connection& c, dialect d) {
  try {
    ensure_table(c);
    for (const auto& m : shipped_migrations()) {
      transaction tx(c, d);
      if (d == dialect::postgresql) {
        // Concurrent openers queue here; the loser then sees the version applied.
        c.session << "SELECT pg_advisory_xact_lock(7218394501)";
      }
      const auto applied = read_applied(c);
      const auto s = build_status(applied, d);
      if (!s.problem.empty()) return error(errc::invalid_argument, "sql: " + s.problem);
      if (applied.count(m.version) != 0) continue;  // rolled back: nothing written
      for (const auto& statement : split_statements(m.text)) c.session << statement;
      const std::string name(m.name);
      const std::string checksum = sha256_hex(m.text);
      const long long now = to_ns(std::chrono::system_clock::now());
      c.session << "INSERT INTO schema_migrations (version, name, checksum, applied_at) "
                   "VALUES (:v, :n, :c, :a)",
          soci::use(m.version), soci::use(name), soci::use(checksum), soci::use(now);
      tx.commit();
    }
    auto s = read_status(c, d);
    if (s && !s->problem.empty()) return error(errc::invalid_argument, "sql: " + s->problem);
    return s;
  } catch (...) {
    return to_error("migrate", &c, d);
  }
}

}  // namespace aise::sql::detail
