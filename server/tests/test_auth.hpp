#pragma once
// An authenticator for server tests: in memory, cheap password hashing, and
// a global admin "root" whose bearer header `admin` the tests send. Routes
// are never served without authentication, tests included.
#include <aise/auth.hpp>

#include <doctest/doctest.h>
#include <memory>
#include <string>

#include "api.hpp"

namespace aise::server::test {

inline const std::string jwt_secret = "test-secret-test-secret-test-secret!";

struct test_auth {
  test_auth() {
    aise::auth_options o;
    o.jwt_secret = jwt_secret;
    o.password = aise::password_options::cheapest();
    auto a = aise::authenticator::make(store, o);
    REQUIRE(a);
    auth = std::move(*a);
    REQUIRE(auth->create_first_admin("root", "root-password", {}).value());
    admin = bearer("root");
  }

  /// "Bearer <access token of username>".
  [[nodiscard]] std::string bearer(const std::string& username) const {
    auto token = auth->issue_access_token(username);
    REQUIRE(token);
    return "Bearer " + *token;
  }

  /// Creates a user (not an admin) and returns its id.
  std::string add_user(const std::string& username) const {
    auto u = auth->create_user({username, username + "-password"}, {"root", ""});
    REQUIRE(u);
    return u->id;
  }

  std::shared_ptr<aise::auth_store> store = aise::make_memory_auth_store();
  std::unique_ptr<aise::authenticator> auth;
  std::string admin;
};

/// API options for tests: no rate limits unless a test sets them.
inline api_options unlimited() {
  api_options o;
  o.ip_limit.rate = 0;
  o.user_limit.rate = 0;
  o.login_limit.rate = 0;
  return o;
}

}  // namespace aise::server::test
