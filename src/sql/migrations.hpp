#pragma once
// The migrations shipped with aise::sql (src/sql/migrations/*.sql, embedded
// at build time by src/CMakeLists.txt) and the runner that applies them.

#include <aise/error.hpp>
#include <aise/sql.hpp>

#include <string_view>
#include <vector>

#include "connection.hpp"

namespace aise::sql::detail {

struct shipped_migration {
  int version;
  std::string_view name;
  std::string_view text;
};

/// Every shipped migration, ascending by version (generated file).
const std::vector<shipped_migration>& shipped_migrations();

/// The schema state as seen through `c`.
result<schema_status> read_status(connection& c, dialect d);

/// Applies what is pending (each migration in its own transaction, under a
/// lock so that concurrent openers do not race) and returns the new status.
/// Refuses a newer or edited schema.
result<schema_status> apply_migrations(connection& c, dialect d);

}  // namespace aise::sql::detail
