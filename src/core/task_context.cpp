#include <aise/cancellation.hpp>
#include <aise/orchestrator.hpp>
#include <aise/task_context.hpp>

#include <fmt/format.h>
#include <mutex>
#include <vector>

#include "agent_core.hpp"
#include "orchestrator_impl.hpp"
#include "runtime_impl.hpp"

namespace aise {

namespace detail {
struct cancellation_state {
  std::mutex mutex;
  std::atomic<bool> cancelled{false};
  std::vector<std::function<void()>> callbacks;
};
std::vector<std::function<void()>> cancellation_access::mark(const cancellation_token& t) {
  std::lock_guard lock(t.state_->mutex);
  if (t.state_->cancelled.exchange(true, std::memory_order_acq_rel)) return {};
  return std::move(t.state_->callbacks);
}
}  // namespace detail

cancellation_token::cancellation_token() : state_(std::make_shared<detail::cancellation_state>()) {}

bool cancellation_token::cancelled() const noexcept {
  return state_->cancelled.load(std::memory_order_acquire);
}

bool cancellation_token::cancel() const {
  std::vector<std::function<void()>> callbacks;
  {
    std::lock_guard lock(state_->mutex);
    if (state_->cancelled.exchange(true, std::memory_order_acq_rel)) return false;
    callbacks.swap(state_->callbacks);
  }
  for (auto& cb : callbacks) {
    try {
      cb();
    } catch (...) {  // NOLINT(bugprone-empty-catch): documented: callbacks must not throw
    }
  }
  return true;
}

void cancellation_token::on_cancel(std::function<void()> fn) const {
  {
    std::lock_guard lock(state_->mutex);
    if (!state_->cancelled.load(std::memory_order_acquire)) {
      state_->callbacks.push_back(std::move(fn));
      return;
    }
  }
  try {
    fn();
  } catch (...) {  // NOLINT(bugprone-empty-catch): documented: callbacks must not throw
  }
}

task_context::task_context(std::shared_ptr<detail::task_run> run) : run_(std::move(run)) {}

const aise::task& task_context::task() const noexcept {
  return run_->task;
}
const nlohmann::json& task_context::payload() const noexcept {
  return run_->task.payload;
}
const std::map<std::string, nlohmann::json>& task_context::dependency_results() const noexcept {
  static const std::map<std::string, nlohmann::json> none;
  return run_->dep_results ? *run_->dep_results : none;
}
const cancellation_token& task_context::cancellation() const noexcept {
  return run_->token;
}
bool task_context::cancelled() const noexcept {
  return run_->token.cancelled();
}
agent& task_context::self() const noexcept {
  return *run_->runner;
}
bool task_context::done() const noexcept {
  return run_->done.load(std::memory_order_acquire);
}

result<void> task_context::succeed(nlohmann::json value) {
  auto o = run_->owner.lock();
  if (!o) return error(errc::unavailable, "the task's owner (orchestrator or worker) is gone");
  return o->complete(run_, std::move(value), std::nullopt, false, false);
}

result<void> task_context::fail(aise::error e, bool retryable) {
  auto o = run_->owner.lock();
  if (!o) return error(errc::unavailable, "the task's owner (orchestrator or worker) is gone");
  return o->complete(run_, std::nullopt, std::move(e), retryable, false);
}

result<void> task_context::escalate(aise::error reason) {
  auto o = run_->owner.lock();
  if (!o) return error(errc::unavailable, "the task's owner (orchestrator or worker) is gone");
  return o->complete(run_, std::nullopt, std::move(reason), false, true);
}

result<std::string> task_context::spawn(task_spec spec) {
  auto o = run_->owner.lock();
  if (!o) return error(errc::unavailable, "the task's owner (orchestrator or worker) is gone");
  if (run_->aborted.load()) {
    return error(errc::cancelled,
                 fmt::format("task {} was cancelled or timed out: no subtasks", run_->task.id));
  }
  spec.parent = run_->task.id;
  if (spec.project.empty() || spec.project == "default") spec.project = run_->task.project;
  return o->spawn_subtask(std::move(spec));
}

void task_context::when_all(std::vector<std::string> ids,
                            std::function<void(task_context&, std::vector<aise::task>)> then) {
  struct join_state {
    std::mutex mutex;
    std::vector<std::optional<aise::task>> results;
    std::size_t remaining = 0;
    std::shared_ptr<detail::task_run> run;
    std::function<void(task_context&, std::vector<aise::task>)> then;
  };
  auto state = std::make_shared<join_state>();
  state->results.resize(ids.size());
  state->remaining = ids.size();
  state->run = run_;
  state->then = std::move(then);

  auto finish = [state] {
    auto run = state->run;
    if (run->done.load()) return;  // the attempt ended first (cancelled, timed out)
    std::vector<aise::task> tasks;
    tasks.reserve(state->results.size());
    for (auto& t : state->results) tasks.push_back(std::move(*t));
    auto& rti = *detail::agent_access::core(*run->runner).rt;
    rti.post_job(*run->runner, [run, state, tasks = std::move(tasks)]() mutable {
      if (run->done.load()) return;
      task_context ctx(run);
      try {
        state->then(ctx, std::move(tasks));
      } catch (const std::exception& e) {
        (void)ctx.fail(
            error(errc::handler_failed, fmt::format("fan-in continuation threw: {}", e.what())));
      } catch (...) {
        (void)ctx.fail(error(errc::handler_failed, "fan-in continuation threw a non-exception"));
      }
      state->run.reset();
    });
  };
  if (ids.empty()) {
    finish();
    return;
  }
  auto o = run_->owner.lock();
  if (!o) return;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    auto registered = o->when_done(
        ids[i],
        [state, i, finish](const aise::task& t) {
          bool last = false;
          {
            std::lock_guard lock(state->mutex);
            state->results[i] = t;
            last = --state->remaining == 0;
          }
          if (last) finish();
        },
        nullptr);
    if (!registered) {
      (void)fail(error(registered.error().code(),
                       fmt::format("when_all: {}", registered.error().message())),
                 false);
      return;
    }
  }
}

}  // namespace aise
