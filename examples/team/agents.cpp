#include "agents.hpp"

#include <aise/task.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <filesystem>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <functional>
#include <optional>
#include <spdlog/logger.h>
#include <string_view>
#include <utility>
#include <vector>

#include "process.hpp"
#include "workspace.hpp"

namespace team {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// ------------------------------------------------------------- helpers --

// The result of the task that the payload names as input `role`
// (`"inputs": {"<role>": "<task id>"}`); that task must be a dependency.
aise::result<json> input(const aise::task_context& ctx, const std::string& role) {
  const json& inputs = ctx.payload().value("inputs", json::object());
  const auto named = inputs.find(role);
  if (named == inputs.end() || !named->is_string()) {
    return aise::fail(aise::errc::invalid_argument,
                      fmt::format("task {} names no input '{}'", ctx.task().id, role));
  }
  const auto& results = ctx.dependency_results();
  const auto found = results.find(named->get<std::string>());
  if (found == results.end()) {
    return aise::fail(aise::errc::invalid_argument,
                      fmt::format("task {}: input '{}' ({}) is not among its dependencies",
                                  ctx.task().id, role, named->get<std::string>()));
  }
  return found->second;
}

// The first line of `text`, without its line break.
std::string first_line(std::string_view text) {
  return std::string(text.substr(0, text.find('\n')));
}

// `text` as one line of printable ASCII, at most `max` characters: safe to
// paste into a source comment.
std::string one_line(std::string_view text, std::size_t max = 90) {
  std::string out;
  for (const char c : text) {
    if (out.size() == max) break;
    out += std::isprint(static_cast<unsigned char>(c)) != 0 ? c : ' ';
  }
  return out;
}

// --------------------------------------------------------------- planner --

// The first whole number in `text`, e.g. 10 in "... prints fib(10)".
std::optional<long long> first_number(std::string_view text) {
  const auto begin = std::find_if(
      text.begin(), text.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
  if (begin == text.end()) return std::nullopt;
  long long n = 0;
  const char* first = text.data() + (begin - text.begin());
  const auto [end, ec] = std::from_chars(first, text.data() + text.size(), n);
  if (ec == std::errc::result_out_of_range) return 1'000'000;  // "too big" is all that matters
  return n;
}

aise::task_spec make_step(std::string id, std::string kind, std::string description, json payload) {
  aise::task_spec s;
  s.id = std::move(id);
  s.kind = std::move(kind);
  s.description = std::move(description);
  s.payload = std::move(payload);
  return s;
}

// ---------------------------------------------------------------- coder --

// The program an LLM might have written for the request.
std::string fib_program(long long n, std::string_view request) {
  return fmt::format(R"(// fib.cpp: written by the coder agent for the request
// "{}"
#include <cstdio>

// Returns the n-th Fibonacci number (fib(0) = 0, fib(1) = 1); exact up to n = 93.
unsigned long long fib(unsigned n) {{
  unsigned long long a = 0;
  unsigned long long b = 1;
  for (unsigned i = 0; i < n; ++i) {{
    const unsigned long long next = a + b;
    a = b;
    b = next;
  }}
  return a;
}}

int main() {{
  std::printf("fib(%u) = %llu\n", {}u, fib({}u));
  return 0;
}}
)",
                     one_line(request), n, n);
}

// --------------------------------------------------------------- tester --

// The blocking part of a check reports back to the agent's strand as JSON
// (what run_blocking carries): either the task's result with "passed":
// true, or "passed": false with the error and whether a retry could help.
json check_failed(std::string message, bool retryable) {
  return {{"passed", false}, {"error", std::move(message)}, {"retryable", retryable}};
}

// "<what> (<how it ended>)", then the tool's output, cut short, on the lines below.
std::string tool_failure(std::string_view what, const process_result& r,
                         const std::string& output) {
  std::string message = fmt::format("{} ({})", what, r.describe_end());
  if (!output.empty()) message += "\n" + clip(output);
  return message;
}

// Completes `ctx` with the outcome of a check; runs on the agent's strand.
void finish_check(aise::task_context& ctx, aise::result<json> outcome) {
  if (!outcome) {
    (void)ctx.fail(outcome.error());  // the blocking work itself broke: worth a retry
    return;
  }
  json& report = outcome.value();
  if (!report.value("passed", false)) {
    (void)ctx.fail(aise::error(aise::errc::handler_failed, report.value("error", "check failed")),
                   report.value("retryable", false));
    return;
  }
  report.erase("passed");
  (void)ctx.succeed(std::move(report));
}

// Kills a check's processes once the task is cancelled or times out.
std::function<bool()> stop_on_cancel(const aise::task_context& ctx) {
  return [token = ctx.cancellation()] { return token.cancelled(); };
}

// Compiles, then runs the program. Blocking: runs on the blocking pool.
json build_and_run(const process_spec& compile, const process_spec& run) {
  auto built = run_process(compile);
  if (!built) return check_failed(built.error().message(), true);
  if (!built->succeeded()) {
    // A compile error does not go away by trying again: not retryable.
    return check_failed(tool_failure("compile failed", *built, built->err), false);
  }
  auto ran = run_process(run);
  if (!ran) return check_failed(ran.error().message(), true);
  if (!ran->succeeded()) {
    const std::string program = fs::path(run.argv.front()).filename().string();
    return check_failed(tool_failure(program + " failed", *ran, ran->err + ran->out), false);
  }
  return {{"passed", true},
          {"summary", fmt::format("{} (exit 0; built in {} ms)", first_line(ran->out),
                                  built->elapsed.count())},
          {"stdout", ran->out},
          {"exit_code", ran->exit_code},
          {"build_ms", built->elapsed.count()},
          {"run_ms", ran->elapsed.count()}};
}

// Compiles without output; any warning is an error. Blocking.
json compile_clean(const process_spec& compile) {
  auto built = run_process(compile);
  if (!built) return check_failed(built.error().message(), true);
  if (!built->succeeded()) {
    return check_failed(tool_failure("warnings or errors", *built, built->err), false);
  }
  return {{"passed", true},
          {"summary", fmt::format("no warnings with -Wall -Wextra -Wpedantic ({} ms)",
                                  built->elapsed.count())},
          {"build_ms", built->elapsed.count()}};
}

// The source file a check works on: the "path" in the result of input "code".
aise::result<fs::path> source_of(const aise::task_context& ctx) {
  auto code = input(ctx, "code");
  if (!code) return code.error();
  const std::string path = code->value("path", "");
  if (path.empty()) return aise::fail(aise::errc::invalid_argument, "the code result has no path");
  return fs::path(path);
}

// ------------------------------------------------------------- reviewer --

// The reviewer's own reference implementation, independent of the code
// under review. Precondition: 0 <= n <= 93.
unsigned long long reference_fib(long long n) {
  unsigned long long a = 0;
  unsigned long long b = 1;
  for (long long i = 0; i < n; ++i) {
    const unsigned long long next = a + b;
    a = b;
    b = next;
  }
  return a;
}

}  // namespace

// =================================================================== planner

planner::planner() {
  // Asynchronous: the plan completes only after its subtasks, long after
  // this handler has returned.
  on_task_async("plan", [this](aise::task_context ctx) { plan(std::move(ctx)); });
}

void planner::plan(aise::task_context ctx) {
  const std::string request = ctx.payload().value("request", "");
  const std::string workdir = ctx.payload().value("workdir", "");
  if (request.empty() || workdir.empty()) {
    (void)ctx.fail(aise::error(aise::errc::invalid_argument, "plan needs a request and a workdir"),
                   false);
    return;
  }
  const long long n = first_number(request).value_or(10);

  // Fixed, readable ids keep the event log easy to follow; they must be
  // unique in the store, so a service planning many features would leave
  // `id` empty and pass the generated ids along instead.
  auto code =
      make_step("code", "code", "write fib.cpp",
                {{"request", request}, {"n", n}, {"workdir", workdir}, {"file", "fib.cpp"}});
  code.max_attempts = 3;  // model output is unreliable: allow two retries
  code.timeout = 10s;

  auto test =
      make_step("test", "test", "compile with -O1 and run", {{"inputs", {{"code", "code"}}}});
  test.depends_on = {"code"};
  test.timeout = 90s;  // a busy machine compiles slowly
  // A stopped run loses the attempt in progress (it counts): room to resume.
  test.max_attempts = 3;

  auto lint = make_step("lint", "lint", "compile with all warnings as errors",
                        {{"inputs", {{"code", "code"}}}});
  lint.depends_on = {"code"};
  lint.timeout = 90s;
  lint.max_attempts = 3;

  auto review = make_step("review", "review", "check the program's output",
                          {{"n", n}, {"inputs", {{"test", "test"}, {"lint", "lint"}}}});
  review.depends_on = {"test", "lint"};  // fan-in: waits for both checks
  review.max_attempts = 3;

  std::vector<std::string> ids;
  for (auto* step : {&code, &test, &lint, &review}) {
    const std::string wanted = step->id;
    auto id = ctx.spawn(std::move(*step));
    if (!id && id.error().code() == aise::errc::already_exists) {
      // A resumed plan (its first attempt was lost with its process): the
      // step exists from that attempt and goes on by itself; wait for it.
      id = wanted;
    }
    if (!id) {
      // Subtasks already spawned are this task's children: failing it cancels them.
      (void)ctx.fail(id.error(), false);
      return;
    }
    ids.push_back(std::move(id.value()));
  }
  log().debug("{}: planned {} for fib({})", name(), fmt::join(ids, ", "), n);

  // Fan-in: the continuation runs on this agent's strand once every step
  // is terminal, successful or not.
  ctx.when_all(ids, [n](aise::task_context& ctx, std::vector<aise::task> steps) {
    // Report the root cause: the first step that failed, not the ones
    // cancelled because of it.
    const aise::task* broken = nullptr;
    for (const auto& s : steps) {
      if (s.state == aise::task_state::failed) {
        broken = &s;
        break;
      }
      if (s.state != aise::task_state::succeeded && broken == nullptr) broken = &s;
    }
    if (broken != nullptr) {
      const aise::error why = broken->error.value_or(aise::error(aise::errc::internal, "no error"));
      (void)ctx.fail(aise::error(why.code(), fmt::format("step '{}' {}: {}", broken->id,
                                                         aise::to_string(broken->state),
                                                         first_line(why.message()))),
                     false);
      return;
    }
    // The steps come back in the order of `ids`: code, test, lint, review.
    const json& written = *steps.front().result;
    const json& reviewed = *steps.back().result;
    (void)ctx.succeed({{"summary", fmt::format("{} steps done for fib({})", steps.size(), n)},
                       {"n", n},
                       {"source", written.value("path", "")},
                       {"fingerprint", written.value("fingerprint", "")},
                       {"verdict", reviewed.value("verdict", "")}});
  });
}

// ===================================================================== coder

coder::coder() {
  // Synchronous: the returned value (or error) completes the attempt.
  on_task("code", [this](aise::task_context& ctx) { return write_code(ctx); });
}

aise::result<json> coder::write_code(aise::task_context& ctx) {
  const json& p = ctx.payload();
  const long long n = p.value("n", 10LL);
  const std::string file = p.value("file", "fib.cpp");
  // No retry can fix a bad request: fail for good (retryable = false)
  // instead of returning the error, which would be retried.
  if (n < 0 || n > 93) {
    aise::error bad(aise::errc::invalid_argument,
                    fmt::format("fib({}) does not fit in 64 bits; n must be 0 to 93", n));
    (void)ctx.fail(bad, /*retryable=*/false);
    return bad;
  }
  if (file.empty() || fs::path(file).filename() != file || file == "..") {
    aise::error bad(aise::errc::invalid_argument,
                    fmt::format("'{}' is not a plain file name", file));
    (void)ctx.fail(bad, /*retryable=*/false);
    return bad;
  }

  // Play a flaky LLM: the first attempt produces garbage. The task allows
  // three attempts, so the orchestrator retries it after a short backoff.
  if (ctx.task().attempt == 1) {
    return aise::fail(aise::errc::handler_failed, "simulated flaky LLM: malformed output");
  }

  const std::string source = fib_program(n, p.value("request", ""));
  const fs::path path = fs::path(p.value("workdir", "")) / file;
  // A few hundred bytes: fine to write on the strand. Anything slow (a
  // compiler, a network call) belongs in run_blocking, as in the tester.
  if (auto written = write_file(path, source); !written) return written.error();
  const std::string print = fingerprint(source);
  log().debug("{}: wrote {} ({} bytes, {})", name(), path.string(), source.size(), print);
  return json{{"summary", fmt::format("{}, {} bytes, {}", file, source.size(), print)},
              {"path", path.string()},
              {"bytes", source.size()},
              {"fingerprint", print}};
}

// ==================================================================== tester

tester::tester(std::string compiler) : compiler_(std::move(compiler)) {
  on_task_async("test", [this](aise::task_context ctx) { test(std::move(ctx)); });
  on_task_async("lint", [this](aise::task_context ctx) { lint(std::move(ctx)); });
}

void tester::test(aise::task_context ctx) {
  auto source = source_of(ctx);
  if (!source) {
    (void)ctx.fail(source.error(), false);
    return;
  }
  const fs::path binary = fs::path(*source).replace_extension();  // fib.cpp → fib
  process_spec compile;
  compile.argv = {compiler_, "-std=c++17", "-O1", "-o", binary.string(), source->string()};
  compile.timeout = 60s;
  compile.should_stop = stop_on_cancel(ctx);
  process_spec run;
  run.argv = {binary.string()};
  run.timeout = 5s;  // fib(93) takes microseconds; anything longer is a hang
  run.should_stop = stop_on_cancel(ctx);
  log().debug("{}: {}", name(), fmt::join(compile.argv, " "));

  // The work runs on the blocking pool and must not touch the agent; the
  // continuation runs back on this agent's strand and completes the task.
  run_blocking(
      [compile, run] { return build_and_run(compile, run); },
      [ctx](aise::result<json> outcome) mutable { finish_check(ctx, std::move(outcome)); });
}

void tester::lint(aise::task_context ctx) {
  auto source = source_of(ctx);
  if (!source) {
    (void)ctx.fail(source.error(), false);
    return;
  }
  process_spec compile;
  compile.argv = {compiler_,    "-std=c++17", "-Wall",         "-Wextra",
                  "-Wpedantic", "-Werror",    "-fsyntax-only", source->string()};
  compile.timeout = 60s;
  compile.should_stop = stop_on_cancel(ctx);
  log().debug("{}: {}", name(), fmt::join(compile.argv, " "));
  run_blocking(
      [compile] { return compile_clean(compile); },
      [ctx](aise::result<json> outcome) mutable { finish_check(ctx, std::move(outcome)); });
}

// ================================================================== reviewer

reviewer::reviewer() {
  on_task("review", [this](aise::task_context& ctx) { return review(ctx); });
  on_task("merge", [this](aise::task_context& ctx) { return merge(ctx); });
}

aise::result<json> reviewer::review(aise::task_context& ctx) {
  const long long n = ctx.payload().value("n", -1LL);
  if (n < 0 || n > 93) return aise::fail(aise::errc::invalid_argument, "review needs 0 <= n <= 93");
  auto test = input(ctx, "test");
  if (!test) return test.error();
  // The lint step fails on any warning, so its success is all we need.
  if (auto lint = input(ctx, "lint"); !lint) return lint.error();

  const std::string expected = fmt::format("fib({}) = {}", n, reference_fib(n));
  std::string printed = test->value("stdout", "");
  while (!printed.empty() && (printed.back() == '\n' || printed.back() == '\r')) printed.pop_back();
  if (printed != expected) {
    aise::error verdict(
        aise::errc::rejected,
        fmt::format("changes requested: expected \"{}\", the program printed \"{}\"", expected,
                    clip(printed, 3, 200)));
    (void)ctx.fail(verdict, /*retryable=*/false);  // reviewing again changes nothing
    return verdict;
  }
  log().debug("{}: output matches \"{}\"", name(), expected);
  const std::string verdict = fmt::format("approved: prints {}, builds without warnings", expected);
  return json{{"summary", verdict}, {"verdict", verdict}};
}

aise::result<json> reviewer::merge(aise::task_context& ctx) {
  auto plan = input(ctx, "plan");
  if (!plan) return plan.error();
  const fs::path source = plan->value("source", "");
  auto content = read_file(source);
  if (!content) return content.error();
  // Merge exactly what was reviewed: a file changed since then must go
  // through review again.
  if (fingerprint(*content) != plan->value("fingerprint", "")) {
    aise::error changed(aise::errc::conflict,
                        fmt::format("{} changed after review; not merged", source.string()));
    (void)ctx.fail(changed, false);
    return changed;
  }
  const fs::path target = source.parent_path() / "main" / source.filename();
  if (auto written = write_file(target, *content); !written) return written.error();
  return json{{"summary", fmt::format("merged into {}", target.string())},
              {"merged", target.string()}};
}

}  // namespace team
