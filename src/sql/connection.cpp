#include "connection.hpp"

#include <algorithm>
#include <cctype>
#include <exception>
#include <fmt/format.h>
#include <soci/postgresql/soci-postgresql.h>
#include <soci/sqlite3/soci-sqlite3.h>
#include <thread>
#include <utility>

namespace aise::sql::detail {
namespace {

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}
bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// postgresql://user:secret@host/db → postgresql://user:***@host/db
std::string without_password(const std::string& url) {
  const auto scheme = url.find("://");
  if (scheme == std::string::npos) return url;
  const auto at = url.find('@', scheme + 3);
  if (at == std::string::npos) return url;
  const auto colon = url.find(':', scheme + 3);
  if (colon == std::string::npos || colon > at) return url;
  return url.substr(0, colon + 1) + "***" + url.substr(at);
}

void configure(connection& c, dialect d, const store_options& options) {
  if (d == dialect::sqlite) {
    // The busy timeout first: switching to WAL takes a lock, and a second
    // process (or connection) opening the file at that moment must wait
    // for it rather than fail with "database is locked".
    c.session << fmt::format("PRAGMA busy_timeout={}", options.sqlite_busy_timeout.count());
    std::string mode;
    c.session << "PRAGMA journal_mode=WAL", soci::into(mode);
    c.session << "PRAGMA synchronous=" + options.sqlite_synchronous;
    c.session << "PRAGMA foreign_keys=ON";
  } else {
    c.session << "SET client_min_messages = warning";
  }
}

}  // namespace

result<target> parse_url(const store_options& options) {
  const std::string& url = options.url;
  target t;
  t.display = without_password(url);
  if (url.empty()) return error(errc::invalid_argument, "sql: the store URL is empty");
  if (starts_with(url, "postgresql://") || starts_with(url, "postgres://")) {
    t.kind = dialect::postgresql;
    // SOCI re-parses its connect string as space-separated key=value pairs,
    // so libpq parses the URI here and the pairs are handed over.
    char* message = nullptr;
    PQconninfoOption* parsed = PQconninfoParse(url.c_str(), &message);
    if (parsed == nullptr) {
      std::string why = message != nullptr ? message : "out of memory";
      if (message != nullptr) PQfreemem(message);
      while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
      return error(errc::invalid_argument,
                   fmt::format("sql: malformed PostgreSQL URL '{}': {}", t.display, why));
    }
    std::string bad_key;
    for (PQconninfoOption* o = parsed; o->keyword != nullptr; ++o) {
      if (o->val == nullptr || *o->val == '\0') continue;
      const std::string_view value = o->val;
      if (value.find_first_of(" \t\n\"'") != std::string_view::npos) {
        bad_key = o->keyword;
        break;
      }
      if (!t.connect.empty()) t.connect += ' ';
      t.connect += o->keyword;
      t.connect += '=';
      t.connect += value;
    }
    PQconninfoFree(parsed);
    if (!bad_key.empty())
      return error(errc::invalid_argument,
                   fmt::format("sql: the PostgreSQL URL's '{}' contains a space or a quote, "
                               "which SOCI cannot pass on",
                               bad_key));
    return t;
  }
  std::string path;
  if (starts_with(url, "sqlite:")) {
    path = url.substr(7);
    if (starts_with(path, "//")) path = path.substr(2);  // sqlite:///abs/path
  } else if (ends_with(url, ".db") || ends_with(url, ".sqlite") || ends_with(url, ".sqlite3")) {
    path = url;
  } else {
    return error(errc::invalid_argument,
                 fmt::format("sql: cannot tell the database from '{}': use sqlite:<path> or "
                             "postgresql://user@host:port/dbname",
                             t.display));
  }
  if (path.empty()) return error(errc::invalid_argument, "sql: sqlite: URL without a path");
  if (path.find('"') != std::string::npos)
    return error(errc::invalid_argument, "sql: a SQLite path must not contain '\"'");
  if (options.sqlite_synchronous != "FULL" && options.sqlite_synchronous != "NORMAL")
    return error(errc::invalid_argument,
                 fmt::format("sql: sqlite_synchronous must be FULL or NORMAL, not '{}'",
                             options.sqlite_synchronous));
  t.kind = dialect::sqlite;
  t.connect = "db=\"" + path + "\"";
  return t;
}

result<std::unique_ptr<connection>> connect(const target& where, const store_options& options,
                                            int attempts) {
  attempts = std::max(1, attempts);
  auto wait = options.connect_backoff;
  std::string last;
  for (int i = 0; i < attempts; ++i) {
    if (i > 0) {
      std::this_thread::sleep_for(wait);
      wait = std::min<std::chrono::milliseconds>(wait * 2, std::chrono::seconds(5));
    }
    try {
      auto c = std::make_unique<connection>();
      if (where.kind == dialect::sqlite) {
        c->session.open(soci::sqlite3, where.connect);
      } else {
        c->session.open(soci::postgresql, where.connect);
      }
      configure(*c, where.kind, options);
      return c;
    } catch (const std::exception& e) {
      last = e.what();
    }
  }
  // SOCI's message may end with a newline (libpq's do).
  while (!last.empty() && (last.back() == '\n' || last.back() == ' ')) last.pop_back();
  return error(errc::unavailable,
               fmt::format("sql: cannot connect to {} ({} attempt{}): {}", where.display, attempts,
                           attempts == 1 ? "" : "s", last));
}

pool::pool(target where, store_options options, std::vector<std::unique_ptr<connection>> conns)
    : where_(std::move(where)), options_(std::move(options)), all_(std::move(conns)) {
  for (auto& c : all_) free_.push_back(c.get());
}

pool::lease::~lease() {
  if (owner_ != nullptr) owner_->give_back(conn_);
}

void pool::give_back(connection* c) noexcept {
  {
    std::lock_guard lock(mutex_);
    free_.push_back(c);
  }
  freed_.notify_one();
}

pool_stats pool::stats() {
  std::lock_guard lock(mutex_);
  pool_stats s;
  s.size = all_.size();
  s.in_use = all_.size() - free_.size();
  s.waiting = waiting_;
  s.acquisitions = acquisitions_;
  s.waits = waits_;
  s.wait_seconds = std::chrono::duration<double>(waited_).count();
  return s;
}

result<pool::lease> pool::acquire() {
  connection* c = nullptr;
  {
    std::unique_lock lock(mutex_);
    ++acquisitions_;
    if (free_.empty()) {
      ++waits_;
      ++waiting_;
      const auto since = std::chrono::steady_clock::now();
      freed_.wait(lock, [&] { return !free_.empty(); });
      waited_ += std::chrono::steady_clock::now() - since;
      --waiting_;
    }
    c = free_.back();
    free_.pop_back();
  }
  lease l(this, c);
  if (c->broken) {
    try {
      c->forget_statements();  // prepared on the old connection
      c->session.reconnect();
      configure(*c, where_.kind, options_);
      c->broken = false;
    } catch (const std::exception& e) {
      std::string what = e.what();
      while (!what.empty() && (what.back() == '\n' || what.back() == ' ')) what.pop_back();
      return error(errc::unavailable,
                   fmt::format("sql: reconnecting to {} failed: {}", where_.display, what));
    }
  }
  return l;
}

transaction::transaction(connection& c, dialect d) : c_(c) {
  if (d == dialect::sqlite) {
    c_.session << "BEGIN IMMEDIATE";
  } else {
    c_.session.begin();
  }
}

transaction::~transaction() {
  if (!open_) return;
  try {
    c_.session.rollback();
  } catch (...) {  // NOLINT(bugprone-empty-catch): the connection is marked by to_error
    c_.broken = true;
  }
}

void transaction::commit() {
  c_.session.commit();
  open_ = false;
}

aise::error to_error(std::string_view op, connection* c, dialect d) {
  std::string what = "unknown exception";
  bool lost = false;
  errc code = errc::internal;
  try {
    throw;
  } catch (const soci::postgresql_soci_error& e) {
    what = e.get_error_message();
    const std::string state = e.sqlstate();
    if (state.rfind("08", 0) == 0 || state == "57P01" || state == "57P02" || state == "57P03") {
      lost = true;
    }
    code = (state == "40001" || state == "40P01") ? errc::conflict : errc::unavailable;
  } catch (const soci::sqlite3_soci_error& e) {
    what = e.what();
    code = (e.result() == 5 || e.result() == 6) ? errc::unavailable : errc::internal;
  } catch (const soci::soci_error& e) {
    what = e.get_error_message();
    code = errc::unavailable;
    // libpq reports a dead server or socket as a plain soci_error.
    lost = d == dialect::postgresql;
  } catch (const std::bad_alloc&) {
    what = "out of memory";
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {  // NOLINT(bugprone-empty-catch): described as unknown
  }
  if (c != nullptr && d == dialect::postgresql) {
    // The dialect says which backend this is (SOCI exports no typeinfo for dynamic_cast).
    auto* backend = static_cast<soci::postgresql_session_backend*>(c->session.get_backend());
    if (backend != nullptr && backend->conn_ != nullptr &&
        PQstatus(backend->conn_) != CONNECTION_OK)
      lost = true;
    if (lost) c->broken = true;
  }
  if (lost) code = errc::unavailable;
  while (!what.empty() && (what.back() == '\n' || what.back() == ' ')) what.pop_back();
  return {code, fmt::format("sql: {}: {}{}", op, lost ? "connection lost: " : "", what)};
}

bool is_unique_violation(dialect d) {
  try {
    throw;
  } catch (const soci::postgresql_soci_error& e) {
    return d == dialect::postgresql && e.sqlstate() == "23505";
  } catch (const soci::sqlite3_soci_error& e) {
    return d == dialect::sqlite && e.result() == 19;  // SQLITE_CONSTRAINT
  } catch (...) {
    return false;
  }
}

long long to_ns(time_point t) noexcept {
  return static_cast<long long>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
}

time_point from_ns(long long ns) noexcept {
  return time_point(std::chrono::duration_cast<time_point::duration>(std::chrono::nanoseconds(ns)));
}

std::vector<std::string> split_statements(std::string_view script) {
  std::vector<std::string> out;
  std::string current;
  std::size_t pos = 0;
  while (pos <= script.size()) {
    auto end = script.find('\n', pos);
    if (end == std::string_view::npos) end = script.size();
    std::string_view line = script.substr(pos, end - pos);
    pos = end + 1;
    std::string_view trimmed = line;
    while (!trimmed.empty() && std::isspace(static_cast<unsigned char>(trimmed.front())))
      trimmed.remove_prefix(1);
    while (!trimmed.empty() && std::isspace(static_cast<unsigned char>(trimmed.back())))
      trimmed.remove_suffix(1);
    if (trimmed.empty() || starts_with(trimmed, "--")) continue;
    current += line;
    current += '\n';
    if (trimmed.back() == ';') {
      current.erase(current.find_last_of(';'));
      out.push_back(std::move(current));
      current.clear();
    }
    if (end == script.size()) break;
  }
  auto blank = current.find_first_not_of(" \t\r\n");
  if (blank != std::string::npos) out.push_back(std::move(current));
  return out;
}

}  // namespace aise::sql::detail
