#pragma once
/// @file
/// The example's command line: flags in, options out. No I/O.

#include <string>
#include <string_view>
#include <vector>

namespace team {

/// The request used when none is given.
inline constexpr std::string_view default_request =
    "a function that returns the n-th Fibonacci number, with a main that prints fib(10)";

/// What the user asked for.
struct cli_options {
  std::string request{default_request};  ///< --request TEXT
  bool interactive = false;              ///< --interactive: ask before merging
  bool keep = false;                     ///< --keep: leave the work directory
  bool verbose = false;                  ///< --verbose: debug logging
  std::string state{"aise-team-state"};  ///< --state DIR: SQLite file and work directory
  bool fresh = false;                    ///< --fresh: discard the state and start over
  bool memory = false;                   ///< --memory: in-memory store, temporary workdir
};

/// What `parse_cli` decided.
struct cli_parse {
  enum class action { run, help, usage_error } what = action::run;
  cli_options options;
  std::string error;  ///< Set for usage_error.
};

/// Parses the arguments after the program name.
cli_parse parse_cli(const std::vector<std::string_view>& args);

/// The usage text, ending with a line break.
std::string usage(std::string_view program);

}  // namespace team
