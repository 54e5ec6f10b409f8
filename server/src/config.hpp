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
  std::string artifact_dir;                   ///< Artifact store root; empty: <data_dir>/artifacts.
  std::uint64_t artifact_limit = std::uint64_t{1} << 30;  ///< Largest upload; 0 = none.
  std::string config_file;                                ///< The config file read, if any.
  std::string tls_cert;  ///< PEM certificate chain; with `tls_key`: HTTPS and WSS.
  std::string tls_key;   ///< PEM private key.
  bool demo = false;     ///< Run the demo team on a sample project (server/src/demo.hpp).

  // Authentication (server/README.md, "Authentication and roles").
  /// The JWT HMAC key: AISE_JWT_SECRET (environment only, so that it never
  /// shows in a process list), else the file `jwt_secret_file`, else
  /// <data_dir>/jwt.key (generated on first start). Never logged.
  std::string jwt_secret;
  std::string jwt_secret_file;  ///< --jwt-secret-file / AISE_JWT_SECRET_FILE.
  std::string jwt_issuer = "aise";
  std::string jwt_audience = "aise-api";
  std::chrono::seconds access_token_ttl{900};
  std::chrono::seconds refresh_token_ttl{30 * 24 * 3600};
  /// The first admin, created at start when the database has no user yet.
  std::string admin_user;           ///< --admin-user / AISE_ADMIN_USER.
  std::string admin_password;       ///< AISE_ADMIN_PASSWORD (environment only).
  std::string admin_password_file;  ///< --admin-password-file / AISE_ADMIN_PASSWORD_FILE.
  /// Token buckets: requests per second and burst; a rate of 0 is off.
  double ip_rate = 1000, ip_burst = 2000;
  double user_rate = 1000, user_burst = 2000;
  double login_rate = 1, login_burst = 10;

  /// "" to serve, or "create-admin" (`aise-server create-admin --user NAME`:
  /// creates the first global admin with a password read from stdin).
  std::string command;
  std::string create_admin_user;  ///< create-admin's --user.

  log_format log = log_format::text;  ///< Format of every log line.
  bool help = false;
  bool version = false;

  /// The database URL to open: `db`, or the SQLite file under `data_dir`.
  [[nodiscard]] std::string database_url() const;
  /// The artifact store's root: `artifact_dir`, or `<data_dir>/artifacts`.
  [[nodiscard]] std::string artifact_root() const;
};

/// Reads a whole file (the default `read_file` of `parse_config`).
result<std::string> read_config_file(const std::string& path);

/// Reads the config file named by `--config` or `AISE_CONFIG` (through
/// `read_file`), then the environment variables (through `getenv`; both
/// injectable for tests), then the flags `args` (without the program name):
/// later sources win. `invalid_argument` naming the flag, variable or file
/// line on a malformed or unknown setting, or an unreadable file.
result<config> parse_config(
    const std::vector<std::string>& args,
    const std::function<std::optional<std::string>(const char*)>& getenv,
    const std::function<result<std::string>(const std::string&)>& read_file = read_config_file);

/// The `--help` text.
std::string usage();

/// The JWT secret as `cfg` says (see config::jwt_secret): the variable, the
/// file (its content without trailing white space), or <data_dir>/jwt.key,
/// created with 32 random bytes (base64url) and mode 0600 when missing.
/// `invalid_argument` for a secret shorter than 32 bytes or a file that
/// cannot be read or written; the message names the file, never the secret.
result<std::string> load_jwt_secret(const config& cfg);

/// The first admin's password: AISE_ADMIN_PASSWORD, else the content of
/// `admin_password_file` (without trailing white space); "" when neither.
result<std::string> load_admin_password(const config& cfg);

}  // namespace aise::server
