// Uses only the installed headers and libraries of aise::core (and
// aise::sql when built with AISE_CONSUMER_WITH_SQL, aise::rabbitmq with
// AISE_CONSUMER_WITH_RABBITMQ).
#include <aise/error.hpp>
#include <aise/version.hpp>

#include <iostream>

#ifdef AISE_CONSUMER_WITH_SQL
#include <aise/sql.hpp>

#include <cstdio>
#include <filesystem>
#include <string>
#endif

#ifdef AISE_CONSUMER_WITH_RABBITMQ
#include <aise/rabbitmq.hpp>
#endif

int main() {
  aise::error e{aise::errc::not_found, "x"};
  std::cout << AISE_VERSION_STRING << " " << e.message() << "\n";
  if (e.code() != aise::errc::not_found) return 1;
#ifdef AISE_CONSUMER_WITH_SQL
  const auto path = std::filesystem::temp_directory_path() / "aise-consumer-sql.db";
  std::filesystem::remove(path);
  aise::sql::store_options options;
  options.url = "sqlite:" + path.string();
  auto store = aise::sql::open_store(options);
  if (!store) {
    std::cout << "sql: " << store.error().describe() << "\n";
    return 1;
  }
  aise::project p;
  p.id = "consumer";
  if (!(*store)->create_project(p) || (*store)->get_project("consumer")->id != "consumer") return 1;
  std::cout << "sql " << (*store)->backend() << " ok\n";
  store->reset();
  std::filesystem::remove(path);
#endif
#ifdef AISE_CONSUMER_WITH_RABBITMQ
  // No broker needed: nobody listens on port 1, so creation fails cleanly.
  aise::rabbitmq_options rabbitmq;
  rabbitmq.url = "amqp://guest:guest@127.0.0.1:1/%2F";
  auto transport = aise::make_rabbitmq_transport(rabbitmq);
  if (transport || transport.error().code() != aise::errc::unavailable) return 1;
  std::cout << "rabbitmq unavailable ok\n";
#endif
  return 0;
}
