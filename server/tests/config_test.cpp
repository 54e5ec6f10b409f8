// aise-server's configuration: defaults, environment, flags.
#include "config.hpp"

#include <chrono>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace {

aise::result<aise::server::config> parse(std::vector<std::string> args,
                                         std::map<std::string, std::string> env = {}) {
  return aise::server::parse_config(args, [&env](const char* name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end()) return std::nullopt;
    return it->second;
  });
}

}  // namespace

TEST_CASE("config: defaults are the embedded setup") {
  auto c = parse({});
  REQUIRE(c);
  CHECK(c->host == "127.0.0.1");
  CHECK(c->port == 8080);
  CHECK(c->database_url() == "sqlite:aise-data/aise.db");
  CHECK_FALSE(c->help);
}

TEST_CASE("config: flags win over environment variables") {
  auto c = parse({"--listen", "0.0.0.0:9000", "--body-limit=2048"},
                 {{"AISE_LISTEN", "127.0.0.1:1"},
                  {"AISE_DB", "postgresql://u:p@h:5432/d"},
                  {"AISE_READ_TIMEOUT", "7"}});
  REQUIRE(c);
  CHECK(c->host == "0.0.0.0");
  CHECK(c->port == 9000);
  CHECK(c->body_limit == 2048);
  CHECK(c->read_timeout == std::chrono::seconds(7));
  CHECK(c->database_url() == "postgresql://u:p@h:5432/d");

  auto v6 = parse({"--listen", "[::1]:0", "--data-dir", "d"});
  REQUIRE(v6);
  CHECK(v6->host == "::1");
  CHECK(v6->port == 0);
  CHECK(v6->database_url() == "sqlite:d/aise.db");
}

TEST_CASE("config: bad input is an error naming the option") {
  auto unknown = parse({"--colour"});
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().message().find("--colour") != std::string::npos);
  CHECK_FALSE(parse({"--listen", "localhost"}));
  CHECK_FALSE(parse({"--listen", "h:70000"}));
  CHECK_FALSE(parse({"--io-threads", "0"}));
  CHECK_FALSE(parse({"--db"}));
  auto env = parse({}, {{"AISE_BODY_LIMIT", "lots"}});
  REQUIRE_FALSE(env);
  CHECK(env.error().message().find("AISE_BODY_LIMIT") != std::string::npos);
  auto help = parse({"--help", "--version"});
  REQUIRE(help);
  CHECK(help->help);
  CHECK(help->version);
  CHECK(aise::server::usage().find("--listen") != std::string::npos);
}

namespace {

aise::result<aise::server::config> parse_with_files(std::vector<std::string> args,
                                                    std::map<std::string, std::string> env,
                                                    std::map<std::string, std::string> files) {
  return aise::server::parse_config(
      args,
      [&env](const char* name) -> std::optional<std::string> {
        auto it = env.find(name);
        if (it == env.end()) return std::nullopt;
        return it->second;
      },
      [&files](const std::string& path) -> aise::result<std::string> {
        auto it = files.find(path);
        if (it == files.end()) return aise::fail(aise::errc::invalid_argument, "no file " + path);
        return it->second;
      });
}

}  // namespace

TEST_CASE("config: a config file is read first; variables and flags win over it") {
  std::string text =
      "# aise-server settings\n"
      "listen = 0.0.0.0:9000\n"
      "\n"
      "  db-pool=8  \n"
      "artifact-dir = \"/srv/aise artifacts\"\n"
      "read-timeout = 5\n";
  auto c = parse_with_files({"--config", "aise.conf", "--read-timeout", "9"},
                            {{"AISE_DB_POOL", "3"}}, {{"aise.conf", text}});
  REQUIRE(c);
  CHECK(c->host == "0.0.0.0");
  CHECK(c->port == 9000);
  CHECK(c->db_pool == 3);               // the variable wins over the file
  CHECK(c->read_timeout.count() == 9);  // the flag wins over the file
  CHECK(c->artifact_root() == "/srv/aise artifacts");
  CHECK(c->config_file == "aise.conf");

  auto from_env = parse_with_files({}, {{"AISE_CONFIG", "a.conf"}}, {{"a.conf", "db-pool = 7\n"}});
  REQUIRE(from_env);
  CHECK(from_env->db_pool == 7);
  auto defaults = parse_with_files({}, {}, {});
  REQUIRE(defaults);
  CHECK(defaults->artifact_root() == "aise-data/artifacts");
}

TEST_CASE("config: a bad config file names the file, line and key") {
  auto unknown =
      parse_with_files({"--config=x.conf"}, {}, {{"x.conf", "listen = 1.2.3.4:1\nnope = 1\n"}});
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().message().find("x.conf") != std::string::npos);
  CHECK(unknown.error().message().find("line 2") != std::string::npos);
  CHECK(unknown.error().message().find("nope") != std::string::npos);

  auto bad_value = parse_with_files({"--config", "x.conf"}, {}, {{"x.conf", "db-pool = many\n"}});
  REQUIRE_FALSE(bad_value);
  CHECK(bad_value.error().message().find("db-pool") != std::string::npos);

  auto no_equals = parse_with_files({"--config", "x.conf"}, {}, {{"x.conf", "listen\n"}});
  REQUIRE_FALSE(no_equals);
  CHECK(no_equals.error().message().find("key = value") != std::string::npos);

  auto missing = parse_with_files({"--config", "missing.conf"}, {}, {});
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message().find("missing.conf") != std::string::npos);

  CHECK_FALSE(parse_with_files({"--config"}, {}, {}));
  // The real reader: a file that does not exist.
  auto real = parse({"--config", "/nonexistent/aise.conf"});
  REQUIRE_FALSE(real);
  CHECK(real.error().message().find("cannot read") != std::string::npos);
}

TEST_CASE("config: authentication settings, create-admin and environment-only secrets") {
  auto c = parse({"--jwt-issuer", "me", "--ip-rate", "2.5", "--login-burst=3"},
                 {{"AISE_JWT_SECRET", "s3cret"},
                  {"AISE_ADMIN_USER", "root"},
                  {"AISE_ADMIN_PASSWORD", "pw"},
                  {"AISE_USER_RATE", "0"}});
  REQUIRE(c);
  CHECK(c->jwt_secret == "s3cret");
  CHECK(c->jwt_issuer == "me");
  CHECK(c->jwt_audience == "aise-api");
  CHECK(c->ip_rate == 2.5);
  CHECK(c->user_rate == 0);
  CHECK(c->login_burst == 3);
  CHECK(c->admin_user == "root");
  CHECK(c->admin_password == "pw");
  CHECK(c->command.empty());
  // Secrets are not flags: they would show in the process list.
  CHECK_FALSE(parse({"--jwt-secret", "x"}));
  CHECK_FALSE(parse({"--admin-password", "x"}));
  CHECK_FALSE(parse({"--ip-rate", "-1"}));
  CHECK_FALSE(parse({"--ip-rate", "fast"}));
  CHECK_FALSE(parse({"--user", "x"}));  // only for create-admin

  auto admin = parse({"create-admin", "--user", "boss", "--data-dir", "d"});
  REQUIRE(admin);
  CHECK(admin->command == "create-admin");
  CHECK(admin->create_admin_user == "boss");
  CHECK(admin->data_dir == "d");
  CHECK(parse({"create-admin", "--user=boss"})->create_admin_user == "boss");
  CHECK_FALSE(parse({"create-admin"}));
}

TEST_CASE("config: the JWT secret from the environment, a file, or a generated key file") {
  namespace fs = std::filesystem;
  auto dir = fs::temp_directory_path() /
             ("aise_config_" +
              std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  aise::server::config c;
  c.data_dir = (dir / "data").string();

  auto generated = aise::server::load_jwt_secret(c);
  REQUIRE(generated);
  CHECK(generated->size() >= 32);
  struct stat st {};
  REQUIRE(::stat((dir / "data" / "jwt.key").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(aise::server::load_jwt_secret(c).value() == *generated);  // read back, not replaced

  c.jwt_secret_file = (dir / "secret").string();
  CHECK_FALSE(aise::server::load_jwt_secret(c));  // missing file
  {
    std::ofstream out(c.jwt_secret_file);
    out << "short\n";
  }
  auto short_secret = aise::server::load_jwt_secret(c);
  REQUIRE_FALSE(short_secret);
  CHECK(short_secret.error().message().find("shorter than 32") != std::string::npos);
  CHECK(short_secret.error().message().find("short\n") == std::string::npos);
  {
    std::ofstream out(c.jwt_secret_file);
    out << std::string(40, 'k') << "\n";
  }
  CHECK(aise::server::load_jwt_secret(c).value() == std::string(40, 'k'));
  c.jwt_secret = std::string(33, 'e');
  CHECK(aise::server::load_jwt_secret(c).value() == std::string(33, 'e'));

  CHECK(aise::server::load_admin_password(c).value().empty());
  c.admin_password_file = (dir / "pw").string();
  {
    std::ofstream out(c.admin_password_file);
    out << "pass word\n";
  }
  CHECK(aise::server::load_admin_password(c).value() == "pass word");
  std::error_code ec;
  fs::remove_all(dir, ec);
}

TEST_CASE("config: log format") {
  CHECK(parse({})->log == aise::server::log_format::text);
  CHECK(parse({}, {{"AISE_LOG_FORMAT", "json"}})->log == aise::server::log_format::json);
  CHECK(parse({"--log-format", "text"}, {{"AISE_LOG_FORMAT", "json"}})->log ==
        aise::server::log_format::text);
  auto bad = parse({"--log-format=xml"});
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message().find("--log-format") != std::string::npos);
}
