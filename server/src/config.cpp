#include "config.hpp"

#include <aise/auth.hpp>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>

namespace aise::server {

namespace {

struct setting {
  const char* flag;
  const char* env;
  const char* help;
  result<void> (*apply)(config&, const std::string&);
};

result<std::uint64_t> number(const std::string& text, std::uint64_t min, std::uint64_t max) {
  std::uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || n < min || n > max) {
    return fail(errc::invalid_argument, "'" + text + "' is not an integer from " +
                                            std::to_string(min) + " to " + std::to_string(max));
  }
  return n;
}

result<void> set_listen(config& c, const std::string& v) {
  auto colon = v.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return fail(errc::invalid_argument, "'" + v + "' is not HOST:PORT");
  }
  auto port = number(v.substr(colon + 1), 0, 65535);
  if (!port) return port.error();
  c.host = v.substr(0, colon);
  if (c.host.size() > 2 && c.host.front() == '[' && c.host.back() == ']') {
    c.host = c.host.substr(1, c.host.size() - 2);  // [::1]:8080
  }
  c.port = static_cast<std::uint16_t>(*port);
  return {};
}

template <class T, T config::*member, std::uint64_t min, std::uint64_t max>
result<void> set_number(config& c, const std::string& v) {
  auto n = number(v, min, max);
  if (!n) return n.error();
  c.*member = T(*n);
  return {};
}

result<void> set_db(config& c, const std::string& v) {
  if (v.empty()) return fail(errc::invalid_argument, "the database URL is empty");
  c.db = v;
  return {};
}

result<void> set_data_dir(config& c, const std::string& v) {
  if (v.empty()) return fail(errc::invalid_argument, "the data directory is empty");
  c.data_dir = v;
  return {};
}

result<void> set_artifact_dir(config& c, const std::string& v) {
  if (v.empty()) return fail(errc::invalid_argument, "the artifact directory is empty");
  c.artifact_dir = v;
  return {};
}

template <std::string config::*member>
result<void> set_path(config& c, const std::string& v) {
  if (v.empty()) return fail(errc::invalid_argument, "the file name is empty");
  c.*member = v;
  return {};
}

template <std::string config::*member>
result<void> set_text(config& c, const std::string& v) {
  if (v.empty()) return fail(errc::invalid_argument, "the value is empty");
  c.*member = v;
  return {};
}

result<void> set_demo(config& c, const std::string& v) {
  if (v == "1" || v == "true" || v == "yes" || v == "on") {
    c.demo = true;
  } else if (v == "0" || v == "false" || v == "no" || v == "off" || v.empty()) {
    c.demo = false;
  } else {
    return fail(errc::invalid_argument, "'" + v + "' is not true or false");
  }
  return {};
}

result<void> set_log_format(config& c, const std::string& v) {
  if (v == "text") {
    c.log = log_format::text;
  } else if (v == "json") {
    c.log = log_format::json;
  } else {
    return fail(errc::invalid_argument, "'" + v + "' is not text or json");
  }
  return {};
}

template <double config::*member>
result<void> set_rate(config& c, const std::string& v) {
  char* end = nullptr;
  errno = 0;
  double d = std::strtod(v.c_str(), &end);
  if (v.empty() || end != v.c_str() + v.size() || errno != 0 || !(d >= 0) || d > 1e9) {
    return fail(errc::invalid_argument, "'" + v + "' is not a number from 0 to 1e9");
  }
  c.*member = d;
  return {};
}

const std::vector<setting>& settings() {
  static const std::vector<setting> table = {
      {"--listen", "AISE_LISTEN", "HOST:PORT to listen on (default 127.0.0.1:8080; port 0: any)",
       set_listen},
      {"--db", "AISE_DB",
       "database: sqlite:PATH or postgresql://user:pass@host:port/db (default "
       "sqlite:DATA_DIR/aise.db)",
       set_db},
      {"--data-dir", "AISE_DATA_DIR", "directory of the default SQLite file (default aise-data)",
       set_data_dir},
      {"--body-limit", "AISE_BODY_LIMIT", "largest request body in bytes (default 1048576)",
       set_number<std::size_t, &config::body_limit, 0, std::uint64_t{1} << 32>},
      {"--read-timeout", "AISE_READ_TIMEOUT",
       "seconds to read one request, idle keep-alive wait included (default 30)",
       set_number<std::chrono::seconds, &config::read_timeout, 1, 86400>},
      {"--shutdown-timeout", "AISE_SHUTDOWN_TIMEOUT",
       "seconds in-flight requests get on SIGTERM/SIGINT (default 30)",
       set_number<std::chrono::seconds, &config::shutdown_timeout, 1, 86400>},
      {"--io-threads", "AISE_IO_THREADS", "socket threads (default 1)",
       set_number<std::size_t, &config::io_threads, 1, 256>},
      {"--handler-threads", "AISE_HANDLER_THREADS", "request handler threads (default 4)",
       set_number<std::size_t, &config::handler_threads, 1, 256>},
      {"--db-pool", "AISE_DB_POOL", "SQL connections (default 4)",
       set_number<std::size_t, &config::db_pool, 1, 256>},
      {"--artifact-dir", "AISE_ARTIFACT_DIR",
       "directory of the artifact store (default DATA_DIR/artifacts)", set_artifact_dir},
      {"--artifact-limit", "AISE_ARTIFACT_LIMIT",
       "largest artifact upload in bytes (default 1073741824; 0: no limit)",
       set_number<std::uint64_t, &config::artifact_limit, 0, std::uint64_t{1} << 50>},
      {"--tls-cert", "AISE_TLS_CERT",
       "PEM certificate chain: serve HTTPS and WSS (needs --tls-key)", set_path<&config::tls_cert>},
      {"--tls-key", "AISE_TLS_KEY", "PEM private key of --tls-cert", set_path<&config::tls_key>},
      {"--demo", "AISE_DEMO",
       "true: run the demo team on a sample project (the flag alone means true)", set_demo},
      {"--jwt-secret-file", "AISE_JWT_SECRET_FILE",
       "file holding the JWT HMAC key, at least 32 bytes (default: AISE_JWT_SECRET, else "
       "DATA_DIR/jwt.key, generated on first start)",
       set_text<&config::jwt_secret_file>},
      {"--jwt-issuer", "AISE_JWT_ISSUER", "iss of access tokens (default aise)",
       set_text<&config::jwt_issuer>},
      {"--jwt-audience", "AISE_JWT_AUDIENCE", "aud of access tokens (default aise-api)",
       set_text<&config::jwt_audience>},
      {"--access-token-ttl", "AISE_ACCESS_TOKEN_TTL",
       "seconds an access token is valid (default 900)",
       set_number<std::chrono::seconds, &config::access_token_ttl, 1, 86400>},
      {"--refresh-token-ttl", "AISE_REFRESH_TOKEN_TTL",
       "seconds a refresh token is valid (default 2592000: 30 days)",
       set_number<std::chrono::seconds, &config::refresh_token_ttl, 60, 31536000>},
      {"--admin-user", "AISE_ADMIN_USER",
       "first admin, created at start when there is no user (password: AISE_ADMIN_PASSWORD or "
       "--admin-password-file)",
       set_text<&config::admin_user>},
      {"--admin-password-file", "AISE_ADMIN_PASSWORD_FILE",
       "file holding the first admin's password", set_text<&config::admin_password_file>},
      {"--ip-rate", "AISE_IP_RATE", "requests per second per client address (default 1000; 0: off)",
       set_rate<&config::ip_rate>},
      {"--ip-burst", "AISE_IP_BURST", "burst per client address (default 2000)",
       set_rate<&config::ip_burst>},
      {"--user-rate", "AISE_USER_RATE", "requests per second per user (default 1000; 0: off)",
       set_rate<&config::user_rate>},
      {"--user-burst", "AISE_USER_BURST", "burst per user (default 2000)",
       set_rate<&config::user_burst>},
      {"--login-rate", "AISE_LOGIN_RATE",
       "login attempts per second per client address (default 1; 0: off)",
       set_rate<&config::login_rate>},
      {"--login-burst", "AISE_LOGIN_BURST", "login burst per client address (default 10)",
       set_rate<&config::login_burst>},
      {"--log-format", "AISE_LOG_FORMAT",
       "log lines as text (default) or json (one object per line, with request ids)",
       set_log_format},
  };
  return table;
}

}  // namespace

std::string config::database_url() const {
  if (!db.empty()) return db;
  return "sqlite:" + data_dir + "/aise.db";
}

std::string config::artifact_root() const {
  if (!artifact_dir.empty()) return artifact_dir;
  return data_dir + "/artifacts";
}

result<std::string> read_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return fail(errc::invalid_argument,
                "cannot read config file '" + path + "': " + std::strerror(errno));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

namespace {

const setting* find_setting(std::string_view flag) {
  for (const auto& s : settings()) {
    if (flag == s.flag) return &s;
  }
  return nullptr;
}

std::string_view trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t' || v.front() == '\r')) {
    v.remove_prefix(1);
  }
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t' || v.back() == '\r')) {
    v.remove_suffix(1);
  }
  return v;
}

// `key = value` lines; keys are the flags without their dashes; `#` starts
// a comment line; a value may be in double quotes.
result<void> apply_config_file(config& c, const std::string& path, const std::string& text) {
  std::istringstream lines(text);
  std::string line;
  for (int number = 1; std::getline(lines, line); ++number) {
    auto where = [&] { return "config file '" + path + "' line " + std::to_string(number) + ": "; };
    auto content = trim(line);
    if (content.empty() || content.front() == '#') continue;
    auto eq = content.find('=');
    if (eq == std::string_view::npos) {
      return fail(errc::invalid_argument, where() + "expected key = value");
    }
    std::string key(trim(content.substr(0, eq)));
    auto value = trim(content.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    const setting* s = key == "config" ? nullptr : find_setting("--" + key);
    if (s == nullptr) return fail(errc::invalid_argument, where() + "unknown key '" + key + "'");
    if (auto r = s->apply(c, std::string(value)); !r) {
      return fail(errc::invalid_argument, where() + key + ": " + r.error().message());
    }
  }
  return {};
}

}  // namespace

result<config> parse_config(
    const std::vector<std::string>& args,
    const std::function<std::optional<std::string>(const char*)>& getenv,
    const std::function<result<std::string>(const std::string&)>& read_file) {
  config c;
  // The file first (flags and variables override it); where it is comes
  // from --config or AISE_CONFIG.
  std::optional<std::string> file = getenv("AISE_CONFIG");
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) file = args[i + 1];
    if (args[i].rfind("--config=", 0) == 0) file = args[i].substr(9);
  }
  if (file) {
    if (file->empty()) return fail(errc::invalid_argument, "--config: the file name is empty");
    auto text = read_file(*file);
    if (!text) return text.error();
    if (auto r = apply_config_file(c, *file, *text); !r) return r.error();
    c.config_file = *file;
  }
  if (auto v = getenv("AISE_JWT_SECRET")) c.jwt_secret = *v;
  if (auto v = getenv("AISE_ADMIN_PASSWORD")) c.admin_password = *v;
  for (const auto& s : settings()) {
    if (auto v = getenv(s.env)) {
      if (auto r = s.apply(c, *v); !r) {
        return fail(errc::invalid_argument, std::string(s.env) + ": " + r.error().message());
      }
    }
  }
  std::size_t first = 0;
  if (!args.empty() && args[0] == "create-admin") {
    c.command = "create-admin";
    first = 1;
  }
  for (std::size_t i = first; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (!c.command.empty() && (arg == "--user" || arg.rfind("--user=", 0) == 0)) {
      if (arg != "--user") {
        c.create_admin_user = arg.substr(7);
      } else if (i + 1 < args.size()) {
        c.create_admin_user = args[++i];
      } else {
        return fail(errc::invalid_argument, "--user needs a value");
      }
      continue;
    }
    if (arg == "--help" || arg == "-h") {
      c.help = true;
      continue;
    }
    if (arg == "--version") {
      c.version = true;
      continue;
    }
    if (arg == "--demo") {  // a switch; --demo=false also works
      c.demo = true;
      continue;
    }
    auto eq = arg.find('=');
    std::string name = arg.substr(0, eq);
    if (name == "--config") {  // read above
      if (eq == std::string::npos) ++i;
      if (i >= args.size()) return fail(errc::invalid_argument, "--config needs a value");
      continue;
    }
    const setting* found = find_setting(name);
    if (!found) return fail(errc::invalid_argument, "unknown option '" + name + "' (see --help)");
    std::string value;
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return fail(errc::invalid_argument, name + " needs a value");
    }
    if (auto r = found->apply(c, value); !r) {
      return fail(errc::invalid_argument, name + ": " + r.error().message());
    }
  }
  if (c.command == "create-admin" && c.create_admin_user.empty() && !c.help) {
    return fail(errc::invalid_argument, "create-admin needs --user NAME");
  }
  return c;
}

std::string usage() {
  std::string text =
      "usage: aise-server [options]\n"
      "       aise-server create-admin --user NAME [options]   (password on stdin)\n"
      "\n"
      "The REST front end of libaise. Options (each also an environment variable;\n"
      "a flag wins over its variable):\n";
  for (const auto& s : settings()) {
    text += "  " + std::string(s.flag) + " VALUE  [" + s.env + "]\n      " + s.help + "\n";
  }
  text +=
      "  --config FILE  [AISE_CONFIG]\n"
      "      read settings from FILE first: `key = value` lines, keys are the flags\n"
      "      without their dashes (listen = 0.0.0.0:8080); flags and variables win\n"
      "  --help      this text\n"
      "  --version   the version\n"
      "Environment only: AISE_JWT_SECRET (the JWT HMAC key), AISE_ADMIN_PASSWORD.\n";
  return text;
}

namespace {

std::string trimmed(std::string s) {
  while (!s.empty() &&
         (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t')) {
    s.pop_back();
  }
  return s;
}

result<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(errc::invalid_argument, "cannot read " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return trimmed(text.str());
}

result<std::string> checked(std::string secret, const std::string& where) {
  if (secret.size() < 32) {
    return fail(errc::invalid_argument,
                "the JWT secret from " + where + " is shorter than 32 bytes");
  }
  return secret;
}

}  // namespace

result<std::string> load_jwt_secret(const config& cfg) {
  if (!cfg.jwt_secret.empty()) return checked(cfg.jwt_secret, "AISE_JWT_SECRET");
  if (!cfg.jwt_secret_file.empty()) {
    auto text = read_file(cfg.jwt_secret_file);
    if (!text) return text.error();
    return checked(std::move(*text), cfg.jwt_secret_file);
  }
  const std::string path = (std::filesystem::path(cfg.data_dir) / "jwt.key").string();
  std::error_code ec;
  std::filesystem::create_directories(cfg.data_dir, ec);
  // O_EXCL: of two servers starting on one data directory, one writes the
  // key and the other reads it.
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) {
    std::string key = random_token(32) + "\n";
    bool ok = ::write(fd, key.data(), key.size()) == static_cast<ssize_t>(key.size());
    ok = ::fsync(fd) == 0 && ok;
    ::close(fd);
    if (!ok) return fail(errc::invalid_argument, "cannot write " + path);
  } else if (errno != EEXIST) {
    return fail(errc::invalid_argument,
                "cannot create " + path + ": " + std::string(std::strerror(errno)));
  }
  auto text = read_file(path);
  if (!text) return text.error();
  return checked(std::move(*text), path);
}

result<std::string> load_admin_password(const config& cfg) {
  if (!cfg.admin_password.empty()) return cfg.admin_password;
  if (!cfg.admin_password_file.empty()) return read_file(cfg.admin_password_file);
  return std::string();
}

}  // namespace aise::server
