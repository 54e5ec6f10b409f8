// aise-admin: administers libaise databases.
//
//   aise-admin migrate --db <url>     apply the pending schema migrations
//   aise-admin status  --db <url>     show the schema version and migrations
//   aise-admin --help | --version
//
// <url> is sqlite:<path> or postgresql://user@host:port/dbname (also from
// the AISE_DB environment variable). Exit status: 0 ok, 1 the database was
// refused or unreachable, 2 a usage error.

#include <aise/sql.hpp>
#include <aise/version.hpp>

#include <cstdio>
#include <cstdlib>
#include <fmt/format.h>
#include <string>
#include <string_view>

namespace {

void usage(std::FILE* out) {
  std::fputs(
      "usage: aise-admin <command> [--db <url>]\n"
      "\n"
      "commands:\n"
      "  migrate   apply the schema migrations this libaise ships that the database lacks\n"
      "  status    show the schema version of the database and every migration\n"
      "\n"
      "options:\n"
      "  --db <url>   sqlite:<path> or postgresql://user[:password]@host[:port]/dbname\n"
      "               (default: the AISE_DB environment variable)\n"
      "  --help       this text\n"
      "  --version    the libaise version\n",
      out);
}

void print_status(const aise::sql::schema_status& s) {
  fmt::print("backend: {}\nschema version: {} (this libaise ships {})\n", s.backend,
             s.database_version, s.library_version);
  for (const auto& m : s.migrations) {
    const char* state =
        !m.applied ? "pending" : (m.checksum.empty() ? "unknown (newer)" : "applied");
    if (m.applied && !m.checksum.empty() && m.applied_checksum != m.checksum) state = "EDITED";
    fmt::print("  {:04} {:<24} {:<16} {}\n", m.version, m.name, state,
               m.checksum.empty() ? m.applied_checksum.substr(0, 16) : m.checksum.substr(0, 16));
  }
  if (!s.problem.empty()) fmt::print("problem: {}\n", s.problem);
}

}  // namespace

int main(int argc, char** argv) {
  std::string command;
  std::string url;
  if (const char* env = std::getenv("AISE_DB")) url = env;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      usage(stdout);
      return 0;
    }
    if (arg == "--version") {
      fmt::print("aise-admin {}\n", AISE_VERSION_STRING);
      return 0;
    }
    if (arg == "--db") {
      if (i + 1 >= argc) {
        std::fputs("aise-admin: --db needs a value\n", stderr);
        return 2;
      }
      url = argv[++i];
    } else if (arg.rfind("--db=", 0) == 0) {
      url = std::string(arg.substr(5));
    } else if (command.empty() && arg.rfind("-", 0) != 0) {
      command = std::string(arg);
    } else {
      fmt::print(stderr, "aise-admin: unexpected argument '{}'\n", arg);
      usage(stderr);
      return 2;
    }
  }
  if (command != "migrate" && command != "status") {
    if (command.empty()) {
      std::fputs("aise-admin: no command given\n", stderr);
    } else {
      fmt::print(stderr, "aise-admin: unknown command '{}'\n", command);
    }
    usage(stderr);
    return 2;
  }
  if (url.empty()) {
    std::fputs("aise-admin: no database: pass --db <url> or set AISE_DB\n", stderr);
    return 2;
  }
  aise::sql::store_options options;
  options.url = url;
  options.connect_attempts = 3;
  auto r = command == "migrate" ? aise::sql::migrate(options) : aise::sql::status(options);
  if (!r) {
    fmt::print(stderr, "aise-admin: {}\n", r.error().message());
    return 1;
  }
  print_status(*r);
  return r->problem.empty() ? 0 : 1;
}
