#pragma once
/// @file
/// aise-server's configuration: command-line flags over environment
/// variables over defaults (server/README.md, "Configuration").
#include <aise/error.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace aise::server {

/// How log lines look (`--log-format`).
enum class log_format {
  text,  ///< spdlog's default pattern: for people at a terminal.
  json,  ///< One JSON object per line: {"ts", "level", "logger", "msg", …}.
};

/// Everything aise-server can be told; the defaults are the embedded setup.
struct config {
  std::string host = "127.0.0.1";      ///< Address to listen on.
  std::uint16_t port = 8080;           ///< 0 picks a free port.
  std::string data_dir = "aise-data";  ///< Holds the default SQLite file.
  std::string db;  ///< `sqlite:<path>` or a PostgreSQL URL; empty: sqlite:<data_dir>/aise.db.
  std::size_t body_limit = 1024 * 1024;       ///< Request bodies above it get a 413.
  std::chrono::seconds read_timeout{30};      ///< To read one request (idle wait included).
  std::chrono::seconds shutdown_timeout{30};  ///< In-flight requests get this long at stop.
  std::size_t io_threads = 1;                 ///< Threads running the sockets.
  std::size_t handler_threads = 4;            ///< Threads running the (blocking) handlers.
  std::size_t db_pool = 4;                    ///< SQL connections.
  log_format log = log_format::text;          ///< Format of every log line.
  bool help = false;
  bool version = false;

  /// The database URL to open: `db`, or the SQLite file under `data_dir`.
  [[nodiscard]] std::string database_url() const;
};

/// Reads the environment variables (through `getenv`, injectable for tests)
/// and then the flags `args` (without the program name). `invalid_argument`
/// naming the flag or variable on a malformed or unknown one.
result<config> parse_config(const std::vector<std::string>& args,
                            const std::function<std::optional<std::string>(const char*)>& getenv);

/// The `--help` text.
std::string usage();

}  // namespace aise::server
