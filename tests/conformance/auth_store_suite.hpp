#pragma once
/// @file
/// The auth_store conformance suite: the doctest cases every
/// `aise::auth_store` passes unchanged (memory, SQLite, PostgreSQL).
///
///     AISE_AUTH_STORE_CONFORMANCE_SUITE(memory, "memory", [] { return
///     aise::make_memory_auth_store(); })
///
/// `id` is a C++ identifier unique within the executable, `label` a string
/// literal prefixing the test names, and the rest a factory returning a
/// fresh, empty `std::shared_ptr<aise::auth_store>` for each case.

#include <aise/auth_store.hpp>
#include <aise/error.hpp>

#include <chrono>
#include <cstddef>
#include <doctest/doctest.h>
#include <latch>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace aise::conformance::auth_store_suite {

using factory = std::shared_ptr<auth_store> (*)();

template <class T>
T must(result<T> r) {
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? std::string() : r.error().describe()));
  return std::move(r).value();
}

inline void must(const result<void>& r) {
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? std::string() : r.error().describe()));
}

inline auth_user user(const std::string& id, const std::string& name) {
  auth_user u;
  u.id = id;
  u.username = name;
  u.password_hash = "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA";
  return u;
}

inline time_point at(int seconds) {
  using namespace std::chrono;
  return time_point{sys_days{year{2026} / 3 / 1}} + std::chrono::seconds{seconds};
}

inline refresh_token_record token(const std::string& hash, const std::string& user_id) {
  return {hash, user_id, at(0), at(3600), false, ""};
}

inline void users(factory make) {
  auto s = make();
  CHECK(must(s->count_users()) == 0);
  auto a = user("u-a", "ann");
  a.created_at = at(5);
  auto created = must(s->create_user(a));
  CHECK(created.created_at == at(5));
  CHECK(created.updated_at != time_point{});
  must(s->create_user(user("u-b", "bob")));
  CHECK(must(s->count_users()) == 2);

  auto got = must(s->get_user("u-a"));
  CHECK(got.username == "ann");
  CHECK(got.password_hash == a.password_hash);
  CHECK_FALSE(got.global_admin);
  CHECK_FALSE(got.disabled);
  CHECK(got.created_at == at(5));
  CHECK(must(s->find_user("bob")).id == "u-b");
  CHECK(s->find_user("Bob").error().code() == errc::not_found);  // case-sensitive
  CHECK(s->get_user("u-x").error().code() == errc::not_found);

  CHECK(s->create_user(user("u-a", "other")).error().code() == errc::already_exists);
  CHECK(s->create_user(user("u-c", "ann")).error().code() == errc::already_exists);
  CHECK(s->create_user(user("", "x")).error().code() == errc::invalid_argument);

  got.global_admin = true;
  got.disabled = true;
  got.password_hash = "new";
  got.username = "renamed";  // ignored
  auto updated = must(s->update_user(got));
  CHECK(updated.global_admin);
  CHECK(updated.disabled);
  CHECK(updated.password_hash == "new");
  CHECK(updated.username == "ann");
  CHECK(must(s->find_user("ann")).disabled);
  CHECK(s->update_user(user("u-x", "x")).error().code() == errc::not_found);

  auto page = must(s->list_users("", 1));
  REQUIRE(page.size() == 1);
  CHECK(page[0].id == "u-a");
  page = must(s->list_users("u-a", 10));
  REQUIRE(page.size() == 1);
  CHECK(page[0].id == "u-b");
}

inline void roles(factory make) {
  auto s = make();
  must(s->create_user(user("u-a", "ann")));
  must(s->create_user(user("u-b", "bob")));
  must(s->set_role("u-a", "p1", project_role::admin));
  must(s->set_role("u-a", "p2", project_role::viewer));
  must(s->set_role("u-b", "p1", project_role::maintainer));
  auto ann = must(s->roles_of("u-a"));
  CHECK(ann.size() == 2);
  CHECK(ann["p1"] == project_role::admin);
  CHECK(ann["p2"] == project_role::viewer);
  auto members = must(s->members_of("p1"));
  CHECK(members.size() == 2);
  CHECK(members["u-b"] == project_role::maintainer);

  must(s->set_role("u-a", "p2", project_role::maintainer));  // replaces
  CHECK(must(s->roles_of("u-a"))["p2"] == project_role::maintainer);
  must(s->set_role("u-a", "p2", project_role::none));  // removes
  CHECK(must(s->roles_of("u-a")).count("p2") == 0);
  must(s->set_role("u-a", "p3", project_role::none));  // removing nothing is fine
  CHECK(must(s->roles_of("u-x")).empty());
  CHECK(s->set_role("u-x", "p1", project_role::viewer).error().code() == errc::not_found);
  CHECK(s->set_role("u-a", "", project_role::viewer).error().code() == errc::invalid_argument);
}

inline void refresh_tokens(factory make) {
  auto s = make();
  must(s->create_user(user("u-a", "ann")));
  must(s->insert_refresh_token(token("h1", "u-a")));
  CHECK(s->insert_refresh_token(token("h1", "u-a")).error().code() == errc::already_exists);
  auto r = must(s->get_refresh_token("h1"));
  CHECK(r.user_id == "u-a");
  CHECK(r.created_at == at(0));
  CHECK(r.expires_at == at(3600));
  CHECK_FALSE(r.revoked);
  CHECK(s->get_refresh_token("nope").error().code() == errc::not_found);

  must(s->rotate_refresh_token("h1", token("h2", "u-a")));
  r = must(s->get_refresh_token("h1"));
  CHECK(r.revoked);
  CHECK(r.replaced_by == "h2");
  CHECK_FALSE(must(s->get_refresh_token("h2")).revoked);
  CHECK(s->rotate_refresh_token("h1", token("h3", "u-a")).error().code() == errc::conflict);
  CHECK(s->get_refresh_token("h3").error().code() == errc::not_found);  // nothing kept
  CHECK(s->rotate_refresh_token("nope", token("h4", "u-a")).error().code() == errc::not_found);

  CHECK(must(s->revoke_refresh_token("h2")) == true);
  CHECK(must(s->revoke_refresh_token("h2")) == false);
  CHECK(s->revoke_refresh_token("nope").error().code() == errc::not_found);

  must(s->insert_refresh_token(token("h5", "u-a")));
  must(s->insert_refresh_token(token("h6", "u-a")));
  CHECK(must(s->revoke_user_tokens("u-a")) == 2);
  CHECK(must(s->revoke_user_tokens("u-a")) == 0);
  CHECK(must(s->get_refresh_token("h6")).revoked);
}

inline void concurrent_rotation_has_one_winner(factory make) {
  auto s = make();
  must(s->create_user(user("u-a", "ann")));
  must(s->insert_refresh_token(token("h0", "u-a")));
  constexpr int threads = 4;
  std::latch start(threads);
  std::vector<int> codes(threads, -1);
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) {
    pool.emplace_back([&, i] {
      start.arrive_and_wait();
      auto r = s->rotate_refresh_token("h0", token("next-" + std::to_string(i), "u-a"));
      codes[static_cast<std::size_t>(i)] = r ? 0 : static_cast<int>(r.error().code());
    });
  }
  for (auto& t : pool) t.join();
  int won = 0;
  for (int c : codes) {
    if (c == 0)
      ++won;
    else
      CHECK(c == static_cast<int>(errc::conflict));
  }
  CHECK(won == 1);
}

inline void audit(factory make) {
  auto s = make();
  CHECK(must(s->read_audit(0, 10)).empty());
  audit_entry e;
  e.actor = "ann";
  e.action = "login";
  e.subject = "ann";
  e.ip = "127.0.0.1";
  e.details = {{"k", 1}};
  e.at = at(7);
  auto first = must(s->append_audit(e));
  CHECK(first.id >= 1);
  e.action = "logout";
  e.at = time_point{};
  e.details = nullptr;
  auto second = must(s->append_audit(e));
  CHECK(second.id > first.id);
  CHECK(second.at != time_point{});
  auto all = must(s->read_audit(0, 10));
  REQUIRE(all.size() == 2);
  CHECK(all[0].action == "login");
  CHECK(all[0].actor == "ann");
  CHECK(all[0].ip == "127.0.0.1");
  CHECK(all[0].at == at(7));
  CHECK(all[0].details == nlohmann::json{{"k", 1}});
  CHECK(all[1].details.is_null());
  auto after = must(s->read_audit(first.id, 10));
  REQUIRE(after.size() == 1);
  CHECK(after[0].id == second.id);
  CHECK(must(s->read_audit(0, 1)).size() == 1);
}

inline void concurrent_audit_ids_are_unique(factory make) {
  auto s = make();
  constexpr int threads = 4;
  constexpr int each = 10;
  std::latch start(threads);
  std::vector<std::thread> pool;
  std::vector<int> failures(threads, 0);
  for (int i = 0; i < threads; ++i) {
    pool.emplace_back([&, i] {
      start.arrive_and_wait();
      for (int k = 0; k < each; ++k) {
        audit_entry e;
        e.action = "a";
        if (!s->append_audit(e)) ++failures[static_cast<std::size_t>(i)];
      }
    });
  }
  for (auto& t : pool) t.join();
  for (int f : failures) CHECK(f == 0);
  auto all = must(s->read_audit(0, 1000));
  REQUIRE(all.size() == threads * each);
  for (std::size_t i = 1; i < all.size(); ++i) CHECK(all[i].id > all[i - 1].id);
}

}  // namespace aise::conformance::auth_store_suite

#define AISE_AUTH_STORE_CONFORMANCE_SUITE(id, label, ...)                              \
  namespace {                                                                          \
  std::shared_ptr<::aise::auth_store> aise_auth_store_make_##id() {                    \
    return (__VA_ARGS__)();                                                            \
  }                                                                                    \
  }                                                                                    \
  TEST_CASE(label " auth store: users") {                                              \
    ::aise::conformance::auth_store_suite::users(&aise_auth_store_make_##id);          \
  }                                                                                    \
  TEST_CASE(label " auth store: project roles") {                                      \
    ::aise::conformance::auth_store_suite::roles(&aise_auth_store_make_##id);          \
  }                                                                                    \
  TEST_CASE(label " auth store: refresh tokens rotate and revoke") {                   \
    ::aise::conformance::auth_store_suite::refresh_tokens(&aise_auth_store_make_##id); \
  }                                                                                    \
  TEST_CASE(label " auth store: concurrent rotations of one token have one winner") {  \
    ::aise::conformance::auth_store_suite::concurrent_rotation_has_one_winner(         \
        &aise_auth_store_make_##id);                                                   \
  }                                                                                    \
  TEST_CASE(label " auth store: audit trail") {                                        \
    ::aise::conformance::auth_store_suite::audit(&aise_auth_store_make_##id);          \
  }                                                                                    \
  TEST_CASE(label " auth store: concurrent audit entries get unique increasing ids") { \
    ::aise::conformance::auth_store_suite::concurrent_audit_ids_are_unique(            \
        &aise_auth_store_make_##id);                                                   \
  }
