// The learned router (include/aise/learned_router.hpp): TF-IDF + logistic
// regression over what agent kinds succeeded at, retrained in the
// background. Uses classic_ml.hpp only (no LibTorch header here).
#include <aise/classic_ml.hpp>
#include <aise/learned_router.hpp>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>

namespace aise::ml {
namespace {

std::string text_of(const std::string& description, const std::string& kind,
                    const std::string& capability) {
  // The kind and capability as words of their own ("kind_review").
  return description + " kind_" + kind + " capability_" + (capability.empty() ? kind : capability);
}

/// One trained model: vectorizer, classifier and the kind of each class.
struct trained {
  tfidf_vectorizer vectorizer;
  logistic_regression classifier;
  std::vector<std::string> kinds;  // by class index
};

class learned_router_impl final : public learned_router {
 public:
  explicit learned_router_impl(learned_router_options o)
      : options_(o), rng_(o.seed != 0 ? o.seed : std::random_device{}()) {}
  ~learned_router_impl() override { wait_idle(); }
  learned_router_impl(const learned_router_impl&) = delete;
  learned_router_impl& operator=(const learned_router_impl&) = delete;

  void prepare(const task_spec& t) override {
    std::shared_ptr<const trained> model;
    {
      std::lock_guard lock(mutex_);
      if (predictions_.count(t.id) != 0) return;  // prepared before (a submission tried again)
      model = model_;
    }
    if (!model) return;
    std::vector<std::string> doc{text_of(t.description, t.kind, t.capability)};
    auto x = model->vectorizer.transform(doc);
    if (!x) return;
    std::unordered_map<std::string, float> p;
    if (model->kinds.size() == 1) {
      p[model->kinds.front()] = 1.0F;
    } else {
      auto proba = model->classifier.predict_proba(*x);
      if (!proba) return;
      // classes() are the sorted label values 0..k-1: index = kind.
      const auto& classes = model->classifier.classes();
      for (std::size_t c = 0; c < classes.size(); ++c)
        p[model->kinds[static_cast<std::size_t>(classes[c])]] = proba->floats()[c];
    }
    std::lock_guard lock(mutex_);
    if (predictions_.emplace(t.id, std::move(p)).second) order_.push_back(t.id);
    while (order_.size() > options_.max_tasks) {
      predictions_.erase(order_.front());
      order_.pop_front();
    }
  }

  std::optional<std::size_t> pick(const task& t,
                                  const std::vector<routing_candidate>& candidates) override {
    std::lock_guard lock(mutex_);
    // Kinds that already failed this task are avoided while others are free.
    std::vector<std::size_t> allowed;
    auto failed = failed_.find(t.id);
    for (std::size_t i = 0; i < candidates.size(); ++i) {
      if (failed == failed_.end() || failed->second.count(candidates[i].kind) == 0)
        allowed.push_back(i);
    }
    if (allowed.empty()) return std::nullopt;
    std::uniform_real_distribution<double> u(0.0, 1.0);
    auto it = predictions_.find(t.id);
    const bool explore = !model_ || it == predictions_.end() || u(rng_) < options_.explore;
    if (explore) {
      std::uniform_int_distribution<std::size_t> any(0, allowed.size() - 1);
      return allowed[any(rng_)];
    }
    std::optional<std::size_t> best;
    float best_p = -1;
    for (std::size_t i : allowed) {
      auto k = it->second.find(candidates[i].kind);
      const float p = k == it->second.end() ? 0.0F : k->second;
      if (p > best_p) {
        best = i;
        best_p = p;
      }
    }
    return best;
  }

  void observe(const task& t, const routing_candidate& agent, bool succeeded) override {
    std::lock_guard lock(mutex_);
    if (!succeeded) {
      // Its retry should go to another kind.
      if (failed_.count(t.id) == 0) failed_order_.push_back(t.id);
      failed_[t.id].insert(agent.kind);
      while (failed_order_.size() > options_.max_tasks) {
        failed_.erase(failed_order_.front());
        failed_order_.pop_front();
      }
      return;
    }
    predictions_.erase(t.id);
    failed_.erase(t.id);
    examples_.push_back({text_of(t.description, t.kind, t.capability), agent.kind});
    while (examples_.size() > options_.max_examples) examples_.pop_front();
    ++since_training_;
    const bool due = examples_.size() >= options_.min_examples &&
                     (!model_ || since_training_ >= options_.retrain_every);
    if (due && !training_) start_training();
  }

  [[nodiscard]] stats_t stats() const override {
    std::lock_guard lock(mutex_);
    return {examples_.size(), trainings_, model_ ? model_->kinds.size() : 0};
  }

  void wait_idle() override {
    std::unique_lock lock(mutex_);
    idle_.wait(lock, [&] { return !training_; });
    if (trainer_.joinable()) {
      auto t = std::move(trainer_);
      lock.unlock();
      t.join();
    }
  }

 private:
  struct example {
    std::string text;
    std::string kind;
  };

  // mutex_ held.
  void start_training() {
    training_ = true;
    since_training_ = 0;
    std::vector<example> data(examples_.begin(), examples_.end());
    if (trainer_.joinable()) trainer_.detach();  // finished: training_ was false
    try {
      start_thread(std::move(data));
    } catch (...) {  // no thread: no training this time, the next due one tries again
      training_ = false;
      idle_.notify_all();
    }
  }

  // mutex_ held.
  void start_thread(std::vector<example> data) {
    trainer_ = std::thread([this, data = std::move(data)] {
      auto model = train(data);
      std::lock_guard lock(mutex_);
      if (model) {
        model_ = std::move(model);
        ++trainings_;
      }
      training_ = false;
      idle_.notify_all();
    });
  }

  static std::shared_ptr<const trained> train(const std::vector<example>& data) {
    auto m = std::make_shared<trained>();
    std::set<std::string> kinds;
    for (const auto& e : data) kinds.insert(e.kind);
    m->kinds.assign(kinds.begin(), kinds.end());
    std::vector<std::string> docs;
    std::vector<std::int64_t> labels;
    for (const auto& e : data) {
      docs.push_back(e.text);
      labels.push_back(std::lower_bound(m->kinds.begin(), m->kinds.end(), e.kind) -
                       m->kinds.begin());
    }
    auto x = m->vectorizer.fit_transform(docs);
    if (!x) return nullptr;
    if (m->kinds.size() >= 2) {
      const auto n = static_cast<std::int64_t>(labels.size());  // before the move below
      auto y = tensor::of({n}, std::move(labels));
      if (!y || !m->classifier.fit(*x, *y)) return nullptr;
    }
    return m;
  }

  learned_router_options options_;
  mutable std::mutex mutex_;
  std::condition_variable idle_;
  std::mt19937_64 rng_;
  std::deque<example> examples_;
  std::size_t since_training_ = 0;
  std::size_t trainings_ = 0;
  bool training_ = false;
  std::thread trainer_;
  std::shared_ptr<const trained> model_;
  std::unordered_map<std::string, std::unordered_map<std::string, float>> predictions_;
  std::deque<std::string> order_;
  std::unordered_map<std::string, std::set<std::string>> failed_;  // kinds that failed a task
  std::deque<std::string> failed_order_;
};

}  // namespace

result<std::shared_ptr<learned_router>> make_learned_router(learned_router_options options) {
  if (options.explore < 0 || options.explore > 1)
    return error(errc::invalid_argument, "learned router: explore must be within 0 … 1");
  if (options.max_examples == 0 || options.max_tasks == 0)
    return error(errc::invalid_argument, "learned router: max_examples and max_tasks must be >= 1");
  return std::shared_ptr<learned_router>(std::make_shared<learned_router_impl>(options));
}

}  // namespace aise::ml
