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
      "\n"
      "A team of agents (planner, coder, tester, reviewer) takes a feature request\n"
      "through a graph of tasks: plan -> code -> test + lint -> review -> merge.\n"
      "The code is really compiled and run with the C++ compiler found on PATH.\n"
      "\n"
      "  --request TEXT  the feature request; its first number n makes the program\n"
      "                  print fib(n) (default: \"{}\")\n"
      "  --interactive   ask \"approve merge? [y/N]\" on stdin instead of auto-approving\n"
      "  --keep          keep the temporary work directory\n"
      "  --verbose       debug logging (on stderr)\n"
      "  -h, --help      show this text\n"
      "\n"
      "Exit status: 0 when the merge succeeded, 1 when it did not, 2 for a usage error.\n",
      program, default_request);
}

}  // namespace team
