#pragma once
// Connections of a SQL store: URL parsing, opening with retries, per
// connection settings, a small pool with leases, transactions, and the
// mapping of SOCI exceptions to aise errors. Only src/sql includes this
// (SOCI types never reach a public header).

#include <aise/error.hpp>
#include <aise/sql.hpp>

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <soci/soci.h>
#include <string>
#include <string_view>
#include <vector>

namespace aise::sql::detail {

enum class dialect { sqlite, postgresql };

/// Where a store lives, parsed from store_options::url.
struct target {
  dialect kind = dialect::sqlite;
  std::string connect;  ///< SOCI connect string.
  std::string display;  ///< For messages: the URL without a password.
};

result<target> parse_url(const store_options& options);

/// The bound values of a connection's prepared hot statements (SOCI binds
/// by reference: these must outlive the statements, so they come first).
struct hot_values {
  // update_task
  std::string state, agent, result, error, id;
  int attempt = 0, set_result = 0, error_mode = 0, error_mode2 = 0;
  long long updated = 0, not_before = 0, expected = 0, steps = 1;
  // event insert
  std::string event_project, event_type, event_subject, event_data;
  long long event_sequence = 0, event_at = 0;
};

/// A statement prepared once per connection with the variables it binds
/// (owned here, of a type its user knows). The statement goes first.
struct cached_statement {
  std::shared_ptr<void> values;
  std::unique_ptr<soci::statement> statement;  // declared last: destroyed first
};

/// One open connection, with the statements the hot path reuses (prepared
/// on first use, dropped when the connection is reopened).
struct connection {
  soci::session session;
  bool broken = false;
  hot_values values;
  std::unique_ptr<soci::statement> update_task;
  std::unique_ptr<soci::statement> insert_event;
  std::array<cached_statement, 4> cached;  // slots: sql_store.cpp's `cached_id`
  void forget_statements() noexcept {
    update_task.reset();
    insert_event.reset();
    for (auto& c : cached) {
      c.statement.reset();
      c.values.reset();
    }
  }
};

/// Opens one connection (with the per-connection settings), retrying with
/// backoff as the options say.
result<std::unique_ptr<connection>> connect(const target& where, const store_options& options,
                                            int attempts);

/// A fixed set of connections handed out one caller at a time.
class pool {
 public:
  pool(target where, store_options options, std::vector<std::unique_ptr<connection>> conns);

  /// A leased connection: returned to the pool when destroyed.
  class lease {
   public:
    lease(pool* owner, connection* c) : owner_(owner), conn_(c) {}
    lease(lease&& o) noexcept : owner_(o.owner_), conn_(o.conn_) { o.owner_ = nullptr; }
    lease& operator=(lease&&) = delete;
    lease(const lease&) = delete;
    lease& operator=(const lease&) = delete;
    ~lease();
    connection& operator*() const noexcept { return *conn_; }
    connection* operator->() const noexcept { return conn_; }

   private:
    pool* owner_;
    connection* conn_;
  };

  /// Waits for a free connection; reopens it if it broke. `unavailable`
  /// when a broken connection cannot be reopened.
  result<lease> acquire();

  /// Use of the pool (sql.hpp, `get_pool_stats`).
  [[nodiscard]] pool_stats stats();

  [[nodiscard]] dialect kind() const noexcept { return where_.kind; }
  [[nodiscard]] const target& where() const noexcept { return where_; }

 private:
  void give_back(connection* c) noexcept;

  target where_;
  store_options options_;
  std::vector<std::unique_ptr<connection>> all_;
  std::vector<connection*> free_;
  std::mutex mutex_;
  std::condition_variable freed_;
  // Guarded by mutex_.
  std::size_t waiting_ = 0;
  std::uint64_t acquisitions_ = 0;
  std::uint64_t waits_ = 0;
  std::chrono::steady_clock::duration waited_{};
};

/// A write transaction (BEGIN IMMEDIATE on SQLite, so that writers queue on
/// the busy timeout instead of failing on a lock upgrade); rolled back
/// unless committed.
class transaction {
 public:
  transaction(connection& c, dialect d);
  transaction(const transaction&) = delete;
  transaction& operator=(const transaction&) = delete;
  ~transaction();
  void commit();

 private:
  connection& c_;
  bool open_ = true;
};

/// The aise error for a SOCI (or other) exception thrown by operation `op`;
/// marks the connection broken when the database connection was lost.
aise::error to_error(std::string_view op, connection* c, dialect d);

/// True when the exception in flight is a unique-key violation.
bool is_unique_violation(dialect d);

/// Nanoseconds since the epoch, and back.
long long to_ns(time_point t) noexcept;
time_point from_ns(long long ns) noexcept;

/// Splits a migration script into statements (each ends with ';' at the
/// end of a line; "--" comment lines are dropped).
std::vector<std::string> split_statements(std::string_view script);

}  // namespace aise::sql::detail
