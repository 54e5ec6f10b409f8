// aise-server's configuration: defaults, environment, flags.
#include "config.hpp"

#include <doctest/doctest.h>
#include <map>
#include <optional>
#include <string>
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
