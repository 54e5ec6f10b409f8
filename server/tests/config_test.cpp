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

TEST_CASE("config: log format") {
  CHECK(parse({})->log == aise::server::log_format::text);
  CHECK(parse({}, {{"AISE_LOG_FORMAT", "json"}})->log == aise::server::log_format::json);
  CHECK(parse({"--log-format", "text"}, {{"AISE_LOG_FORMAT", "json"}})->log ==
        aise::server::log_format::text);
  auto bad = parse({"--log-format=xml"});
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message().find("--log-format") != std::string::npos);
}
