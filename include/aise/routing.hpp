#pragma once
/// @file
/// Routing strategies for the orchestrator (`orchestrator_options::router`,
/// see `aise::router`) that look at what a task is about:
///
/// - `ml::make_embedding_router` (aise::ml): embeds each task's description
///   with a text encoder and sends the task to the free agent whose kind's
///   description is most similar (cosine similarity).
/// - `ml::make_learned_router` (aise::torch, include/aise/learned_router.hpp): learns from the task
/// history
///   which agent kind succeeds at which tasks — a TF-IDF + logistic
///   regression classifier over description, kind and capability, retrained
///   in the background as attempts finish — so routing improves as the
///   system runs. Before it has learned enough, and for a share of the
///   tasks afterwards, it explores (a random free agent).
///
/// Both only choose among the agents the orchestrator offers (running,
/// capable, with a free slot); with no preference they leave the choice to
/// the orchestrator (least loaded). Both do their slow work in `prepare`,
/// outside the orchestrator's lock, and keep per-task state bounded. Thread
/// safety: as `aise::router` requires. Errors: the factories return
/// `invalid_argument` for bad options; an encoder failing on a description
/// only loses that task's preference.

#include <aise/error.hpp>
#include <aise/ml_export.hpp>
#include <aise/orchestrator.hpp>
#include <aise/text.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace aise::ml {

struct AISE_ML_EXPORT embedding_router_options {
  /// What each agent kind is good at, in words ("frontend: CSS, layout,
  /// buttons, accessibility"). Kinds without one get no preference.
  std::map<std::string, std::string> kind_descriptions;
  /// Below this cosine similarity a kind is not preferred.
  double min_similarity = 0.0;
  /// Task embeddings kept at most (oldest dropped first).
  std::size_t max_tasks = 65'536;
};

/// `invalid_argument` when no kind has a description or the encoder fails
/// on the descriptions.
AISE_ML_EXPORT result<std::shared_ptr<aise::router>> make_embedding_router(
    text_encoder encoder, embedding_router_options options);

}  // namespace aise::ml
