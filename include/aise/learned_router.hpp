#pragma once
/// @file
/// The learned router (aise::torch): routes tasks to the agent kind that
/// succeeded at similar tasks before. See include/aise/routing.hpp for what
/// routers are and their contract; this one learns from `observe` (each
/// successful attempt is an example: description, kind and capability →
/// the agent's kind), trains TF-IDF + logistic regression
/// (include/aise/classic_ml.hpp) on a background thread every
/// `retrain_every` new examples, and in `prepare` predicts the probability
/// of success of each kind for the new task. `pick` takes the free
/// candidate of the most probable kind; it explores (a random candidate)
/// until the first model exists and for `explore` of the tasks afterwards.
/// A kind whose attempt at a task failed is not chosen for that task's
/// retries while another kind is free.

#include <aise/error.hpp>
#include <aise/orchestrator.hpp>
#include <aise/torch_export.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace aise::ml {

struct AISE_TORCH_EXPORT learned_router_options {
  /// Successful attempts needed before the first training.
  std::size_t min_examples = 20;
  /// New successful attempts between trainings.
  std::size_t retrain_every = 20;
  /// The newest successful attempts kept for training.
  std::size_t max_examples = 5'000;
  /// Share of tasks routed at random once trained (keeps learning).
  double explore = 0.1;
  /// Tasks whose predictions are kept at most (oldest dropped first).
  std::size_t max_tasks = 65'536;
  std::uint64_t seed = 0;  ///< exploration; 0: random
};

/// The learning router; `stats` tells how far it got.
class AISE_TORCH_EXPORT learned_router : public aise::router {
 public:
  struct stats_t {
    std::size_t examples = 0;   ///< successful attempts kept
    std::size_t trainings = 0;  ///< models trained so far
    std::size_t classes = 0;    ///< agent kinds the current model knows
  };
  [[nodiscard]] virtual stats_t stats() const = 0;
  /// Waits until no training is running (tests, orderly shutdown).
  virtual void wait_idle() = 0;
};

/// `invalid_argument` for explore outside 0 … 1 or a zero max_examples.
AISE_TORCH_EXPORT result<std::shared_ptr<learned_router>> make_learned_router(
    learned_router_options options = {});

}  // namespace aise::ml
