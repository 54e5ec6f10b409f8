#include "config.hpp"

#include <charconv>
#include <string_view>

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

result<config> parse_config(const std::vector<std::string>& args,
                            const std::function<std::optional<std::string>(const char*)>& getenv) {
  config c;
  for (const auto& s : settings()) {
    if (auto v = getenv(s.env)) {
      if (auto r = s.apply(c, *v); !r) {
        return fail(errc::invalid_argument, std::string(s.env) + ": " + r.error().message());
      }
    }
  }
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      c.help = true;
      continue;
    }
    if (arg == "--version") {
      c.version = true;
      continue;
    }
    auto eq = arg.find('=');
    std::string name = arg.substr(0, eq);
    const setting* found = nullptr;
    for (const auto& s : settings()) {
      if (name == s.flag) found = &s;
    }
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
  return c;
}

std::string usage() {
  std::string text =
      "usage: aise-server [options]\n"
      "\n"
      "The REST front end of libaise. Options (each also an environment variable;\n"
      "a flag wins over its variable):\n";
  for (const auto& s : settings()) {
    text += "  " + std::string(s.flag) + " VALUE  [" + s.env + "]\n      " + s.help + "\n";
  }
  text +=
      "  --help      this text\n"
      "  --version   the version\n";
  return text;
}

}  // namespace aise::server
