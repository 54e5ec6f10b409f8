#pragma once
// The private half of aise::agent: mailbox, handler tables, bindings and
// pending requests. Fields marked (strand) are touched only on the agent's
// strand; the rest are set before the agent starts or are thread-safe.

#include <aise/agent.hpp>
#include <aise/task_context.hpp>
#include <aise/transport.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

#include "mailbox.hpp"

namespace aise {
class runtime;
}

namespace aise::detail {

class runtime_impl;

struct task_handler_entry {
  std::function<result<nlohmann::json>(task_context&)> sync;
  std::function<void(task_context)> async;
};

enum class agent_life : int { created, running, stopping, stopped };

struct agent_core {
  agent* self = nullptr;
  runtime* owner = nullptr;
  runtime_impl* rt = nullptr;
  std::weak_ptr<agent> weak_self;

  std::string name;
  std::string kind = "agent";
  std::string project = "default";
  std::set<std::string> capabilities;

  std::unordered_map<std::string, std::function<void(const message&)>> handlers;
  std::unordered_map<std::string, std::function<result<nlohmann::json>(const message&)>>
      request_handlers;
  std::function<void(const message&)> unhandled;
  std::unordered_map<std::string, task_handler_entry> task_handlers;

  std::unique_ptr<mailbox> box;
  std::vector<mail_item> batch;                // (strand) items taken from `box`
  subscription address;                        // (strand after start)
  std::map<std::string, subscription> topics;  // (strand)

  struct pending_request {
    std::function<void(result<message>)> on_reply;
    std::uint64_t timer = 0;
  };
  std::unordered_map<std::uint64_t, pending_request> pending;  // (strand)
  std::uint64_t next_correlation = 1;                          // (strand)

  std::atomic<agent_life> life{agent_life::created};
  std::optional<aise::error> crash_reason;  // (strand) set → fail after the current item
  bool stop_requested = false;              // (strand)
  std::optional<nlohmann::json> restore_state;
  std::function<void()> checkpoint_hook;  // installed by a supervisor before start
};

// Friend of aise::agent: how libaise reaches an agent's private half.
struct agent_access {
  static agent_core& core(agent& a) noexcept { return *a.core_; }
  static const agent_core& core(const agent& a) noexcept { return *a.core_; }
  static void on_start(agent& a) { a.on_start(); }
  static void on_stop(agent& a) { a.on_stop(); }
  static nlohmann::json snapshot(const agent& a) { return a.snapshot(); }
  static void restore(agent& a, const nlohmann::json& s) { a.restore(s); }
};

}  // namespace aise::detail
