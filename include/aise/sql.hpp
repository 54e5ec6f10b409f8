#pragma once
/// @file
/// aise::sql: the store interface (store.hpp) over SQL databases through
/// SOCI: SQLite (a file: the embedded default) and PostgreSQL (a URL, for
/// teams and for several processes sharing one state). No SOCI type appears
/// here; link `aise::sql` and call `sql::open_store`.
///
/// Contract (in addition to store.hpp's, which every SQL store passes: the
/// conformance suite runs against both databases):
/// - Durability: a call that returned ok is committed. SQLite runs in WAL
///   mode with `synchronous=FULL` by default (every commit survives power
///   loss; `NORMAL` survives process crashes only, and is faster).
/// - Schema: versioned migrations shipped inside the library are applied in
///   order at open (unless `migrate` is false), each in its own transaction,
///   and recorded with their SHA-256 in `schema_migrations`. Opening refuses,
///   with `errc::invalid_argument` and a message saying what to do, a
///   database whose schema is newer than this library or whose applied
///   migration differs from the shipped one (it was edited).
/// - Connections: a pool of `pool_size` connections; each store call leases
///   one for its duration (calls beyond the pool wait). A connection that
///   breaks (the server restarted, the network dropped) fails the call in
///   progress with `unavailable` and is reopened on its next lease; nothing
///   of a failed call is committed.
/// - Thread safety: every member of the store may be called from any thread.
/// - Blocking: calls block on the database. Do not call them on a runtime's
///   executor threads in latency-sensitive code (see docs/sql.md).

#include <aise/auth_store.hpp>
#include <aise/clock.hpp>
#include <aise/error.hpp>
#include <aise/sql_export.hpp>
#include <aise/store.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace aise::sql {

/// How to reach and run a SQL store.
struct AISE_SQL_EXPORT store_options {
  /// Which database:
  /// - `sqlite:<path>` or a path ending in `.db`/`.sqlite`: a SQLite file,
  ///   created when missing (its directory must exist);
  /// - `postgresql://user:password@host:port/dbname?...` (or `postgres://`):
  ///   a libpq connection URI.
  std::string url;
  /// Connections kept open (at least 1).
  std::size_t pool_size = 4;
  /// Fills the timestamps a caller left unset; default: the system clock.
  std::shared_ptr<aise::clock> clock;
  /// Apply pending migrations at open; when false, a database that lacks
  /// any shipped migration is refused (run `aise-admin migrate` first).
  bool migrate = true;
  /// Tries to connect at open before giving up with `unavailable`; the
  /// waits between tries start at `connect_backoff` and double (at most 5 s).
  int connect_attempts = 5;
  std::chrono::milliseconds connect_backoff{200};
  /// How long a SQLite writer waits for the database lock.
  std::chrono::milliseconds sqlite_busy_timeout{10000};
  /// SQLite `PRAGMA synchronous`: "FULL" (default) or "NORMAL".
  std::string sqlite_synchronous = "FULL";
  /// Applied by `compact()` calls, and after every `compact_every` task
  /// changes when any limit is set. Default: keep everything.
  retention_policy retention;
  std::size_t compact_every = 10000;
};

/// Opens (and by default migrates) the database in `options.url`.
/// Errors: `invalid_argument` (a malformed URL, a schema newer than this
/// library, an edited migration, `migrate` false with migrations pending),
/// `unavailable` (the database cannot be reached after the retries).
AISE_SQL_EXPORT result<std::shared_ptr<store>> open_store(const store_options& options);

/// Opens an `auth_store` (auth_store.hpp: users, roles, refresh tokens,
/// audit) on the database in `options.url`, with a pool of its own of
/// `options.pool_size` connections; migrations as `open_store` (the auth
/// tables come with migration 0004). Same errors and contract as
/// `open_store`. A host usually opens both on the same URL.
AISE_SQL_EXPORT result<std::shared_ptr<auth_store>> open_auth_store(const store_options& options);

/// Use of a SQL store's connection pool (for metrics): a snapshot, read
/// without blocking the pool's users for more than a lock.
struct AISE_SQL_EXPORT pool_stats {
  std::size_t size = 0;            ///< Connections in the pool.
  std::size_t in_use = 0;          ///< Leased by a store call right now.
  std::size_t waiting = 0;         ///< Store calls waiting for a free connection now.
  std::uint64_t acquisitions = 0;  ///< Leases handed out since open.
  std::uint64_t waits = 0;         ///< Of those, how many had to wait (the pool was empty).
  double wait_seconds = 0;         ///< Total time spent waiting, in seconds.
};

/// The pool use of a store returned by `open_store`; nullopt for any other
/// store (the in-memory one, a user's). Thread-safe; never blocks on the
/// database.
AISE_SQL_EXPORT std::optional<pool_stats> get_pool_stats(const store& s);

/// One migration shipped with this library and, when applied, its record.
struct AISE_SQL_EXPORT migration_info {
  int version = 0;
  std::string name;              ///< e.g. "0001_initial".
  std::string checksum;          ///< SHA-256 of the shipped text.
  bool applied = false;          ///< Recorded in the database.
  std::string applied_checksum;  ///< What the database recorded (when applied).
  time_point applied_at{};
};

/// The schema state of a database.
struct AISE_SQL_EXPORT schema_status {
  std::string backend;                     ///< "sqlite" or "postgresql".
  int library_version = 0;                 ///< Highest migration shipped.
  int database_version = 0;                ///< Highest migration applied.
  std::vector<migration_info> migrations;  ///< Shipped ones, then unknown applied ones.
  /// Empty when the database can be used by this library; otherwise why not.
  std::string problem;
};

/// Applies the pending migrations (each in a transaction) and returns the
/// status afterwards. Refuses a newer or edited schema like `open_store`.
AISE_SQL_EXPORT result<schema_status> migrate(const store_options& options);

/// Reads the schema status without changing anything.
AISE_SQL_EXPORT result<schema_status> status(const store_options& options);

}  // namespace aise::sql
