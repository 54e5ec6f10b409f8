#include "cli.hpp"

#include <fmt/format.h>

namespace team {

cli_parse parse_cli(const std::vector<std::string_view>& args) {
  cli_parse out;
  const auto usage_error = [&out](std::string message) {
    out.what = cli_parse::action::usage_error;
    out.error = std::move(message);
    return out;
  };
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "-h" || arg == "--help") {
      out.what = cli_parse::action::help;
      return out;
    }
    if (arg == "--interactive") {
      out.options.interactive = true;
    } else if (arg == "--keep") {
      out.options.keep = true;
    } else if (arg == "--verbose") {
      out.options.verbose = true;
    } else if (arg == "--fresh") {
      out.options.fresh = true;
    } else if (arg == "--memory") {
      out.options.memory = true;
    } else if (arg == "--state" || arg.starts_with("--state=")) {
      std::string_view dir;
      if (arg == "--state") {
        if (i + 1 == args.size()) return usage_error("--state needs a directory");
        dir = args[++i];
      } else {
        dir = arg.substr(std::string_view("--state=").size());
      }
      if (dir.empty()) return usage_error("--state needs a non-empty directory");
      out.options.state = std::string(dir);
    } else if (arg == "--request" || arg.starts_with("--request=")) {
      std::string_view text;
      if (arg == "--request") {
        if (i + 1 == args.size()) return usage_error("--request needs a text");
        text = args[++i];
      } else {
        text = arg.substr(std::string_view("--request=").size());
      }
      if (text.empty()) return usage_error("--request needs a non-empty text");
      out.options.request = std::string(text);
    } else {
      return usage_error(fmt::format("unknown argument '{}'", arg));
    }
  }
  return out;
}

std::string usage(std::string_view program) {
  return fmt::format(
      "usage: {} [--interactive] [--keep] [--verbose] [--request TEXT]\n"
      "       [--state DIR] [--fresh] [--memory]\n"
      "\n"
      "A team of agents (planner, coder, tester, reviewer) takes a feature request\n"
      "through a graph of tasks: plan -> code -> test + lint -> review -> merge.\n"
      "The code is really compiled and run with the C++ compiler found on PATH.\n"
      "State (tasks, events, agent snapshots) lives in a SQLite file: stop the\n"
      "example at any moment (Ctrl-C, kill) and run it again to resume.\n"
      "\n"
      "  --state DIR     where the state lives: DIR/state.db and the work directory\n"
      "                  DIR/work (default: aise-team-state)\n"
      "  --fresh         discard DIR's state first and start over\n"
      "  --memory        keep state in memory and work in a temporary directory\n"
      "                  (nothing survives the process)\n"
      "  --request TEXT  the feature request; its first number n makes the program\n"
      "                  print fib(n) (default: \"{}\")\n"
      "  --interactive   ask \"approve merge? [y/N]\" on stdin instead of auto-approving\n"
      "  --keep          with --memory: keep the temporary work directory\n"
      "  --verbose       debug logging (on stderr)\n"
      "  -h, --help      show this text\n"
      "\n"
      "Exit status: 0 when the merge succeeded (now or in the run that finished it),\n"
      "1 when it did not, 2 for a usage error.\n",
      program, default_request);
}

}  // namespace team
