#include <aise/message.hpp>
#include <aise/task.hpp>  // to_json(error)

#include <chrono>
#include <cstdint>
#include <doctest/doctest.h>
#include <limits>
#include <string>

namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

// A valid message as a client would send it; cases below break one field.
json minimal() {
  return {{"type", "ping"}, {"recipient", "worker-1"}};
}

// The error message of a parse expected to fail with invalid_argument.
std::string parse_error(const json& j) {
  const auto r = aise::message_from_json(j);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code() == aise::errc::invalid_argument);
  return r.error().message();
}

}  // namespace

TEST_CASE("message: ids are 16 lower-case hex digits") {
  CHECK(aise::format_id(0) == "0000000000000000");
  CHECK(aise::format_id(0xabcULL) == "0000000000000abc");
  CHECK(aise::format_id(std::numeric_limits<std::uint64_t>::max()) == "ffffffffffffffff");

  std::uint64_t id = 0;
  CHECK(aise::parse_id("ffffffffffffffff", id));
  CHECK(id == std::numeric_limits<std::uint64_t>::max());
  CHECK(aise::parse_id("1", id));
  CHECK(id == 1);
  CHECK(aise::parse_id("00000000DeadBeef", id));
  CHECK(id == 0xdeadbeefULL);

  id = 77;
  for (const char* bad : {"", "10000000000000000", "0x1", "-1", "+1", " 1", "1 ", "g", "12z4"}) {
    INFO("id: \"", bad, "\"");
    CHECK_FALSE(aise::parse_id(bad, id));
    CHECK(id == 77);
  }
}

TEST_CASE("message: JSON round trip keeps every field") {
  aise::message m;
  m.id = std::numeric_limits<std::uint64_t>::max();
  m.type = "review.request";
  m.sender = "planner";
  m.recipient = "reviewer-2";
  m.correlation_id = 0x0123456789abcdefULL;
  m.reply_to = "planner/inbox";
  m.created_at = aise::manual_clock::default_start() + 90min + 250us;
  m.headers = {{"trace", "abc-123"}, {"lang", "en"}};
  m.payload = {{"files", {"a.cpp", "b.cpp"}},
               {"limits", {{"lines", 400}, {"strict", true}}},
               {"note", nullptr}};

  const json j = aise::to_json(m);
  CHECK(j.at("id") == "ffffffffffffffff");
  CHECK(j.at("correlation_id") == "0123456789abcdef");
  CHECK(j.at("created_at") == "2026-01-01T01:30:00.000250Z");

  // Through text too, as a transport would carry it.
  const auto r = aise::message_from_json(json::parse(j.dump()));
  REQUIRE(r.ok());
  const aise::message& back = *r;
  CHECK(back.id == m.id);
  CHECK(back.type == m.type);
  CHECK(back.sender == m.sender);
  CHECK(back.recipient == m.recipient);
  CHECK(back.topic.empty());
  CHECK(back.correlation_id == m.correlation_id);
  CHECK(back.reply_to == m.reply_to);
  CHECK(back.created_at == m.created_at);
  CHECK(back.headers == m.headers);
  CHECK(back.payload == m.payload);
}

TEST_CASE("message: a minimal message gets defaults") {
  json j = {{"type", "news"}, {"topic", "releases"}, {"sender", nullptr}};
  const auto r = aise::message_from_json(j);
  REQUIRE(r.ok());
  CHECK(r->topic == "releases");
  CHECK(r->recipient.empty());
  CHECK(r->sender.empty());
  CHECK(r->id == 0);
  CHECK(r->correlation_id == 0);
  CHECK(r->created_at == aise::time_point{});
  CHECK(r->headers.empty());
  CHECK(r->payload.is_null());
}

TEST_CASE("message: malformed JSON names the offending field") {
  CHECK(parse_error(json::array()) == "message: expected a JSON object");
  CHECK(parse_error("ping") == "message: expected a JSON object");

  json j = minimal();
  j.erase("type");
  CHECK(parse_error(j) == "message.type: missing or empty");
  j["type"] = "";
  CHECK(parse_error(j) == "message.type: missing or empty");
  j["type"] = 7;
  CHECK(parse_error(j) == "message.type: expected a string");

  j = minimal();
  j["topic"] = "news";
  CHECK(parse_error(j) == "message.recipient, message.topic: exactly one must be set (both are)");
  j = minimal();
  j.erase("recipient");
  CHECK(parse_error(j) == "message.recipient, message.topic: exactly one must be set (neither is)");

  for (const char* field : {"id", "correlation_id"}) {
    INFO("field: ", field);
    const std::string expected =
        std::string("message.") + field + ": expected a string of 1 to 16 hex digits";
    for (const json& bad : {json("xyz"), json(""), json("10000000000000000"), json(12)}) {
      j = minimal();
      j[field] = bad;
      CHECK(parse_error(j) == expected);
    }
  }

  j = minimal();
  j["sender"] = json::array();
  CHECK(parse_error(j) == "message.sender: expected a string");
  j = minimal();
  j["reply_to"] = false;
  CHECK(parse_error(j) == "message.reply_to: expected a string");

  j = minimal();
  j["headers"] = {"a", "b"};
  CHECK(parse_error(j) == "message.headers: expected an object of strings");
  j["headers"] = {{"ok", "yes"}, {"retries", 3}};
  CHECK(parse_error(j) == "message.headers.retries: expected a string");

  const std::string bad_time =
      R"(message.created_at: expected an RFC 3339 UTC time such as "2026-01-01T00:00:00Z")";
  j = minimal();
  j["created_at"] = "yesterday";
  CHECK(parse_error(j) == bad_time);
  j["created_at"] = "2026-01-01T00:00:00+01:00";
  CHECK(parse_error(j) == bad_time);
  j["created_at"] = 1767225600;
  CHECK(parse_error(j) == bad_time);
}

TEST_CASE("message: error replies carry an error") {
  aise::message reply;
  reply.type = aise::error_reply_type;
  reply.payload = aise::to_json(aise::error(aise::errc::no_handler, "nobody handles \"x\""));
  REQUIRE(reply.is_error_reply());
  CHECK(reply.reply_error() == aise::error(aise::errc::no_handler, "nobody handles \"x\""));

  reply.payload = {{"code", "from_a_newer_version"}, {"message", "?"}};
  CHECK(reply.reply_error() == aise::error(aise::errc::internal, "?"));

  reply.payload = "just text";
  CHECK(reply.reply_error().code() == aise::errc::internal);

  aise::message normal;
  normal.type = "pong";
  CHECK_FALSE(normal.is_error_reply());
  CHECK(normal.reply_error().code() == aise::errc::internal);
}
