// The embedding router (include/aise/routing.hpp).
#include <aise/routing.hpp>

#include <cmath>
#include <deque>
#include <fmt/format.h>
#include <mutex>
#include <unordered_map>

namespace aise::ml {
namespace {

std::vector<float> normalized(std::span<const float> v) {
  double norm = 0;
  for (float x : v) norm += static_cast<double>(x) * x;
  norm = std::sqrt(norm);
  std::vector<float> out(v.begin(), v.end());
  if (norm > 0)
    for (auto& x : out) x = static_cast<float>(x / norm);
  return out;
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

class embedding_router final : public aise::router {
 public:
  embedding_router(text_encoder encoder, embedding_router_options o,
                   std::map<std::string, std::vector<float>> kinds)
      : encoder_(std::move(encoder)), options_(std::move(o)), kinds_(std::move(kinds)) {}

  void prepare(const task_spec& t) override {
    if (t.description.empty()) return;
    {
      std::lock_guard lock(mutex_);
      if (tasks_.count(t.id) != 0) return;  // prepared before (a submission tried again)
    }
    auto e = encoder_.embed(t.description);
    if (!e) return;  // no preference for this task
    std::lock_guard lock(mutex_);
    if (tasks_.emplace(t.id, normalized(*e)).second) order_.push_back(t.id);
    while (order_.size() > options_.max_tasks) {
      tasks_.erase(order_.front());
      order_.pop_front();
    }
  }

  std::optional<std::size_t> pick(const task& t,
                                  const std::vector<routing_candidate>& candidates) override {
    std::lock_guard lock(mutex_);
    auto it = tasks_.find(t.id);
    if (it == tasks_.end()) return std::nullopt;
    std::optional<std::size_t> best;
    double best_score = options_.min_similarity;
    for (std::size_t i = 0; i < candidates.size(); ++i) {
      auto k = kinds_.find(candidates[i].kind);
      if (k == kinds_.end()) continue;
      const double score = dot(it->second, k->second);
      if (!best || score > best_score) {  // ties: the earlier (less loaded) one
        if (score < options_.min_similarity) continue;
        best = i;
        best_score = score;
      }
    }
    return best;
  }

  void observe(const task& t, const routing_candidate&, bool succeeded) override {
    if (!succeeded) return;  // a retry may be routed again
    std::lock_guard lock(mutex_);
    tasks_.erase(t.id);  // its id stays in order_ until it ages out
  }

 private:
  text_encoder encoder_;
  embedding_router_options options_;
  std::map<std::string, std::vector<float>> kinds_;  // unit vectors
  std::mutex mutex_;
  std::unordered_map<std::string, std::vector<float>> tasks_;
  std::deque<std::string> order_;
};

}  // namespace

result<std::shared_ptr<aise::router>> make_embedding_router(text_encoder encoder,
                                                            embedding_router_options options) {
  if (options.kind_descriptions.empty())
    return error(errc::invalid_argument, "embedding router: no kind has a description");
  if (options.max_tasks == 0)
    return error(errc::invalid_argument, "embedding router: max_tasks must be >= 1");
  std::vector<std::string> names, texts;
  for (const auto& [kind, text] : options.kind_descriptions) {
    names.push_back(kind);
    texts.push_back(text);
  }
  auto e = encoder.embed(texts);
  if (!e)
    return error(errc::invalid_argument,
                 fmt::format("embedding router: the encoder failed on the kind descriptions: {}",
                             e.error().message()));
  const auto width = static_cast<std::size_t>(e->shape()[1]);
  std::map<std::string, std::vector<float>> kinds;
  for (std::size_t i = 0; i < names.size(); ++i)
    kinds[names[i]] = normalized(e->floats().subspan(i * width, width));
  return std::shared_ptr<aise::router>(
      std::make_shared<embedding_router>(std::move(encoder), std::move(options), std::move(kinds)));
}

}  // namespace aise::ml
