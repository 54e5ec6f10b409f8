// aise::auth: password hashing, JWT HS256 (alg confusion, tampering,
// expiry, iss/aud), refresh token rotation and revocation, disabled users,
// the audit trail; and the auth_store conformance suite on the memory store
// (SQLite: sql_auth_store_test.cpp, PostgreSQL: sql_postgres_test.cpp).
#include <aise/auth.hpp>
#include <aise/clock.hpp>

#include <chrono>
#include <doctest/doctest.h>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "conformance/auth_store_suite.hpp"

AISE_AUTH_STORE_CONFORMANCE_SUITE(memory, "memory", [] { return aise::make_memory_auth_store(); })

namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

const std::string secret = "0123456789abcdef0123456789abcdef";

aise::time_point at_seconds(long long s) {
  return aise::time_point{std::chrono::seconds(s)};
}

aise::jwt_check check_at(long long now) {
  return {"aise", "aise-api", at_seconds(now), 30s};
}

std::string b64(const std::string& s) {
  return aise::base64url_encode(s);
}

// A token with any header and payload and an empty signature.
std::string forge(const json& header, const json& payload) {
  return b64(header.dump()) + "." + b64(payload.dump()) + ".";
}

std::vector<std::string> split(const std::string& token) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (;;) {
    auto dot = token.find('.', start);
    parts.push_back(token.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return parts;
}

aise::jwt_claims claims(long long iat, long long exp) {
  return {"ann", "aise", "aise-api", at_seconds(iat), at_seconds(exp)};
}

struct auth_fixture {
  auth_fixture() {
    aise::auth_options o;
    o.jwt_secret = secret;
    o.password = aise::password_options::cheapest();
    o.clock = clock;
    o.access_ttl = 60s;
    o.refresh_ttl = 3600s;
    o.leeway = 5s;
    auto a = aise::authenticator::make(store, o);
    REQUIRE(a);
    auth = std::move(*a);
    REQUIRE(auth->create_first_admin("root", "root-password", {}).value());
  }

  std::vector<std::string> actions() const {
    std::vector<std::string> out;
    auto entries = store->read_audit(0, 1000).value();
    for (const auto& e : entries) out.push_back(e.action);
    return out;
  }

  std::shared_ptr<aise::manual_clock> clock = std::make_shared<aise::manual_clock>();
  std::shared_ptr<aise::auth_store> store = aise::make_memory_auth_store(clock);
  std::unique_ptr<aise::authenticator> auth;
};

}  // namespace

TEST_CASE("auth: passwords are Argon2id hashes that verify") {
  auto h = aise::hash_password("correct horse", aise::password_options::cheapest());
  REQUIRE(h);
  CHECK(h->rfind("$argon2id$", 0) == 0);
  CHECK(aise::verify_password(*h, "correct horse"));
  CHECK_FALSE(aise::verify_password(*h, "correct hors"));
  CHECK_FALSE(aise::verify_password(*h, ""));
  CHECK_FALSE(aise::verify_password("not a hash", "x"));
  CHECK_FALSE(aise::verify_password("", "x"));
  auto again = aise::hash_password("correct horse", aise::password_options::cheapest());
  CHECK(*again != *h);  // salted
  CHECK_FALSE(aise::hash_password("x", {0, 0}));
}

TEST_CASE("auth: base64url and constant-time comparison") {
  CHECK(aise::base64url_encode("\xfb\xff") == "-_8");
  CHECK(aise::base64url_decode("-_8").value() == "\xfb\xff");
  CHECK_FALSE(aise::base64url_decode("a+b/"));
  CHECK_FALSE(aise::base64url_decode("ab=="));
  CHECK(aise::random_token().size() == 43);
  CHECK(aise::random_token() != aise::random_token());
  CHECK(aise::constant_time_equal("abc", "abc"));
  CHECK_FALSE(aise::constant_time_equal("abc", "abd"));
  CHECK_FALSE(aise::constant_time_equal("abc", "ab"));
}

TEST_CASE("auth: jwt round trip and a token made like PyJWT makes it") {
  auto token = aise::sign_jwt(claims(1000, 1060), secret);
  auto c = aise::verify_jwt(token, secret, check_at(1010));
  REQUIRE(c);
  CHECK(c->sub == "ann");
  CHECK(c->exp == at_seconds(1060));
  // HS256 over {"sub":"bench","iat":1764000000,"exp":4102444800,"iss":"aise",
  // "aud":"aise-api"} with `secret`, as the FastAPI peer (PyJWT) writes it.
  const std::string peer =
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
      "eyJzdWIiOiJiZW5jaCIsImlhdCI6MTc2NDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwLCJpc3MiOiJhaXNlIiwiYXVkIjoi"
      "YWlzZS1hcGkifQ.RGFdtcpuYXl3G57VuPCx30PhVZcQxy-XkQiXor4Xeu4";
  auto p = aise::verify_jwt(peer, secret, check_at(1764000100));
  REQUIRE(p);
  CHECK(p->sub == "bench");
}

TEST_CASE("auth: jwt with a wrong alg is rejected") {
  auto good = split(aise::sign_jwt(claims(1000, 1060), secret));
  const json payload = json::parse(aise::base64url_decode(good[1]).value());
  for (const char* alg : {"none", "None", "HS512", "RS256", "hs256", ""}) {
    CAPTURE(alg);
    // The original signature kept: only the header changes.
    auto token = b64(json{{"alg", alg}, {"typ", "JWT"}}.dump()) + "." + good[1] + "." + good[2];
    auto r = aise::verify_jwt(token, secret, check_at(1010));
    REQUIRE_FALSE(r);
    CHECK(r.error().code() == aise::errc::rejected);
    CHECK_FALSE(aise::verify_jwt(forge({{"alg", alg}}, payload), secret, check_at(1010)));
  }
  auto no_alg = b64(R"({"typ":"JWT"})") + "." + good[1] + "." + good[2];
  CHECK_FALSE(aise::verify_jwt(no_alg, secret, check_at(1010)));
  auto wrong_typ = b64(R"({"alg":"HS256","typ":"JWS"})") + "." + good[1] + "." + good[2];
  CHECK_FALSE(aise::verify_jwt(wrong_typ, secret, check_at(1010)));
}

TEST_CASE("auth: tampered, malformed and foreign jwt are rejected") {
  auto token = aise::sign_jwt(claims(1000, 1060), secret);
  auto parts = split(token);
  json payload = json::parse(aise::base64url_decode(parts[1]).value());
  payload["sub"] = "root";
  auto tampered = parts[0] + "." + b64(payload.dump()) + "." + parts[2];
  CHECK(aise::verify_jwt(tampered, secret, check_at(1010)).error().message().find("signature") !=
        std::string::npos);
  auto sig = parts[2];
  sig[0] = sig[0] == 'A' ? 'B' : 'A';
  CHECK_FALSE(aise::verify_jwt(parts[0] + "." + parts[1] + "." + sig, secret, check_at(1010)));
  CHECK_FALSE(aise::verify_jwt(parts[0] + "." + parts[1] + ".", secret, check_at(1010)));
  CHECK_FALSE(aise::verify_jwt(token, "another secret of at least 32 bytes!", check_at(1010)));
  for (const char* bad : {"", "a", "a.b", "a.b.c.d", "!!.??.**", "..", "e30.e30.e30"}) {
    CAPTURE(bad);
    CHECK_FALSE(aise::verify_jwt(bad, secret, check_at(1010)));
  }
  CHECK_FALSE(aise::verify_jwt(std::string(10000, 'a'), secret, check_at(1010)));
}

TEST_CASE("auth: jwt exp, iat, iss and aud are checked with the leeway") {
  auto token = aise::sign_jwt(claims(1000, 1060), secret);
  CHECK(aise::verify_jwt(token, secret, check_at(1089)));  // exp + leeway not reached
  auto expired = aise::verify_jwt(token, secret, check_at(1090));
  REQUIRE_FALSE(expired);
  CHECK(expired.error().message().find("expired") != std::string::npos);
  CHECK(aise::verify_jwt(token, secret, check_at(970)));  // iat 30 s ahead: within the leeway
  auto future = aise::verify_jwt(token, secret, check_at(969));
  REQUIRE_FALSE(future);
  CHECK(future.error().message().find("future") != std::string::npos);

  auto c = claims(1000, 1060);
  c.iss = "someone";
  CHECK(aise::verify_jwt(aise::sign_jwt(c, secret), secret, check_at(1010))
            .error()
            .message()
            .find("iss") != std::string::npos);
  c = claims(1000, 1060);
  c.aud = "other-api";
  CHECK(aise::verify_jwt(aise::sign_jwt(c, secret), secret, check_at(1010))
            .error()
            .message()
            .find("aud") != std::string::npos);
}

TEST_CASE("auth: login, refresh rotation, logout and reuse detection") {
  auth_fixture f;
  CHECK(f.auth->login("root", "wrong", "10.0.0.1").error().code() == aise::errc::rejected);
  CHECK(f.auth->login("nobody", "root-password", "10.0.0.1").error().code() ==
        aise::errc::rejected);
  auto pair = f.auth->login("root", "root-password", "10.0.0.1");
  REQUIRE(pair);
  CHECK(pair->expires_in == 60s);
  auto who = f.auth->authenticate(pair->access_token);
  REQUIRE(who);
  CHECK(who->user.username == "root");
  CHECK(who->user.global_admin);
  CHECK(who->user.password_hash.empty());
  CHECK(who->role_in("any") == aise::project_role::admin);

  auto second = f.auth->refresh(pair->refresh_token, "10.0.0.1");
  REQUIRE(second);
  CHECK(second->refresh_token != pair->refresh_token);
  CHECK(f.auth->authenticate(second->access_token));
  // The first refresh token was used: refusing it revokes the whole family.
  CHECK(f.auth->refresh(pair->refresh_token, "10.0.0.2").error().code() == aise::errc::rejected);
  CHECK(f.auth->refresh(second->refresh_token, "10.0.0.1").error().code() == aise::errc::rejected);

  auto third = f.auth->login("root", "root-password", "10.0.0.1");
  REQUIRE(third);
  REQUIRE(f.auth->logout(third->refresh_token, *who, "10.0.0.1"));
  CHECK(f.auth->refresh(third->refresh_token, "10.0.0.1").error().code() == aise::errc::rejected);
  CHECK(f.auth->refresh("garbage", "10.0.0.1").error().code() == aise::errc::rejected);
  CHECK(f.auth->refresh("", "10.0.0.1").error().code() == aise::errc::rejected);

  auto fourth = f.auth->login("root", "root-password", "10.0.0.1");
  REQUIRE(fourth);
  f.clock->advance(3601s);
  CHECK(f.auth->refresh(fourth->refresh_token, "10.0.0.1").error().code() == aise::errc::rejected);
  CHECK(f.auth->authenticate(fourth->access_token).error().code() == aise::errc::rejected);
  // One verified (and so remembered) before expires all the same.
  CHECK(f.auth->authenticate(pair->access_token).error().code() == aise::errc::rejected);

  auto log = f.actions();
  std::vector<std::string> expected = {"user_created",  "login_failed",   "login_failed",   "login",
                                       "refresh",       "refresh_reused", "refresh_failed", "login",
                                       "logout",        "refresh_failed", "refresh_failed", "login",
                                       "refresh_failed"};
  CHECK(log == expected);
  auto entries = f.store->read_audit(0, 100).value();
  CHECK(entries[1].subject == "root");
  CHECK(entries[1].ip == "10.0.0.1");
  CHECK(entries[1].details["reason"] == "wrong password");
  CHECK(entries[3].actor == "root");
}

TEST_CASE("auth: users, roles, disabling and the first admin") {
  auth_fixture f;
  CHECK_FALSE(f.auth->create_first_admin("other", "other-password", {}).value());
  aise::actor_info by{"root", "127.0.0.1"};
  CHECK(f.auth->create_user({"bad name", "long enough"}, by).error().code() ==
        aise::errc::invalid_argument);
  CHECK(f.auth->create_user({"ann", "short"}, by).error().code() == aise::errc::invalid_argument);
  auto ann = f.auth->create_user({"ann", "ann-password"}, by);
  REQUIRE(ann);
  CHECK(ann->id.rfind("u-", 0) == 0);
  CHECK(f.auth->create_user({"ann", "ann-password"}, by).error().code() ==
        aise::errc::already_exists);

  auto pair = f.auth->login("ann", "ann-password", "127.0.0.1");
  REQUIRE(pair);
  auto who = f.auth->authenticate(pair->access_token);
  REQUIRE(who);
  CHECK(who->role_in("p") == aise::project_role::none);
  REQUIRE(f.auth->set_role(ann->id, "p", aise::project_role::maintainer, by));
  who = f.auth->authenticate(pair->access_token);  // the cache forgot ann
  REQUIRE(who);
  CHECK(who->role_in("p") == aise::project_role::maintainer);
  CHECK(who->can("p", aise::project_role::viewer));
  CHECK_FALSE(who->can("p", aise::project_role::admin));
  CHECK_FALSE(who->can("q", aise::project_role::viewer));

  REQUIRE(f.auth->set_disabled(ann->id, true, by));
  CHECK(f.auth->authenticate(pair->access_token).error().code() == aise::errc::rejected);
  CHECK(f.auth->refresh(pair->refresh_token, "127.0.0.1").error().code() == aise::errc::rejected);
  CHECK(f.auth->login("ann", "ann-password", "127.0.0.1").error().code() == aise::errc::rejected);
  REQUIRE(f.auth->set_disabled(ann->id, false, by));
  CHECK(f.auth->authenticate(pair->access_token));
  CHECK(f.auth->refresh(pair->refresh_token, "127.0.0.1").error().code() ==
        aise::errc::rejected);  // revoked when disabled

  REQUIRE(f.auth->set_password(ann->id, "new-password", by));
  CHECK_FALSE(f.auth->login("ann", "ann-password", ""));
  CHECK(f.auth->login("ann", "new-password", ""));
  REQUIRE(f.auth->set_global_admin(ann->id, true, by));
  CHECK(f.auth->authenticate(pair->access_token)->role_in("q") == aise::project_role::admin);

  auto entries = f.store->read_audit(0, 100).value();
  bool saw_role = false;
  for (const auto& e : entries) {
    if (e.action == "role_set") {
      saw_role = true;
      CHECK(e.actor == "root");
      CHECK(e.subject == "ann:p");
      CHECK(e.details["role"] == "maintainer");
    }
  }
  CHECK(saw_role);

  aise::auth_options weak;
  weak.jwt_secret = "short";
  CHECK(aise::authenticator::make(f.store, weak).error().code() == aise::errc::invalid_argument);
}
