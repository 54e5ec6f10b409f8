#pragma once
// The private half of aise::runtime.

#include <aise/runtime.hpp>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "agent_core.hpp"
#include "timer_service.hpp"

namespace aise::detail {

class runtime_impl {
 public:
  runtime_impl(runtime& owner, runtime_options options, boost::asio::io_context* host);
  ~runtime_impl();

  // ---- agents ----
  result<std::string> spawn(std::unique_ptr<agent> a, spawn_options options,
                            std::optional<nlohmann::json> restore,
                            std::function<void()> checkpoint_hook);
  result<void> stop(std::string_view name);
  std::shared_ptr<agent> find(std::string_view name) const;
  std::vector<std::string> agent_names() const;

  // Runs `job` on the agent's strand (admitted beyond the mailbox bound).
  // False when the agent has stopped.
  bool post_job(agent& a, std::function<void()> job);
  // The transport sink of an agent's address and topics.
  result<void> deliver(agent_core& core, message&& m);
  // Fails the agent after the current item (from its strand).
  void request_crash(agent_core& core, aise::error reason);

  // ---- messaging helpers ----
  void stamp(message& m);  // id and created_at when missing
  void request(message m, duration timeout, std::function<void(result<message>)> on_reply);

  // ---- executor ----
  boost::asio::io_context& io() noexcept { return *io_; }
  bool on_executor() const noexcept;
  timer_service& timers() noexcept { return *timers_; }
  void run_blocking(std::function<void()> fn);

  std::size_t add_exit_listener(std::function<void(const agent_exit&)> fn);
  void remove_exit_listener(std::size_t key);

  result<void> shutdown(shutdown_mode mode, std::chrono::milliseconds deadline);

  std::string make_id(std::string_view prefix);
  std::uint64_t next_message_id() noexcept {
    return id_base_ + id_counter_.fetch_add(1, std::memory_order_relaxed);
  }

  // Declared first: destroyed after everything else (agents, executors).
  service_registry services;
  runtime& owner;
  runtime_options options;

 private:
  friend struct agent_runner;
  void schedule(std::shared_ptr<agent> a);
  void run_agent(std::shared_ptr<agent> a);
  void drain(agent& a);
  void process(agent& a, mail_item& item);
  void dispatch_message(agent& a, agent_core& core, message& m);
  void finish(agent& a, agent_core& core);
  void notify_exit(agent_exit ex);
  // Removes a request made from outside any agent; empty when already answered.
  agent_core::pending_request take_request(std::uint64_t corr);
  bool stopping() const noexcept { return stopping_.load(std::memory_order_acquire); }

  std::unique_ptr<boost::asio::io_context> own_io_;
  boost::asio::io_context* io_ = nullptr;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::vector<std::thread> threads_;
  std::unique_ptr<boost::asio::thread_pool> blocking_;
  std::unique_ptr<timer_service> timers_;

  mutable std::mutex agents_mutex_;
  std::condition_variable agents_cv_;
  std::map<std::string, std::shared_ptr<agent>, std::less<>> agents_;
  std::unordered_map<std::string, std::size_t> name_counters_;

  std::mutex listeners_mutex_;
  std::size_t next_listener_ = 1;
  std::vector<std::pair<std::size_t, std::function<void(const agent_exit&)>>> exit_listeners_;

  // Requests made from outside any agent.
  std::mutex requests_mutex_;
  std::unordered_map<std::uint64_t, agent_core::pending_request> requests_;
  std::string reply_address_;
  subscription reply_binding_;

  std::atomic<bool> stopping_{false};
  bool shut_down_ = false;
  std::mutex shutdown_mutex_;
  std::string tag_;
  std::uint64_t id_base_ = 0;
  std::atomic<std::uint64_t> id_counter_{1};
  std::atomic<std::uint64_t> name_counter_{1};
};

}  // namespace aise::detail
