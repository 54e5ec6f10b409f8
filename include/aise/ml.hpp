#pragma once
/// @file
/// aise::ml: machine-learning hooks for agents, independent of any ML
/// library. A `backend` loads a model file into a `model`; a `model` runs
/// tensors; `make_batched` puts a dynamic batching queue in front of a model
/// so that many agents share it; a `model_registry` (one per runtime, found
/// with `ml::models(rt)`) is how agents reach models by name.
///
/// LibTorch is one backend (`aise::torch`, include/aise/torch.hpp, TorchScript
/// files). Nothing here names a LibTorch type: another format (ONNX,
/// AOTInductor) is another `backend` implementation, and agents written
/// against `model` do not change.
///
/// Contract:
/// - Ownership: models are shared (std::shared_ptr); a model stays loaded
///   while anyone holds it. A registry holds the models added to it.
/// - Thread safety: `tensor` is a value type (copy to share across threads);
///   `model::run`, every `model_registry` member and every batched-model
///   member may be called from any thread at once.
/// - Blocking: `model::run` computes on the calling thread (or, batched,
///   waits for the batch): call it from a task handler through
///   `agent::run_blocking` or use `batched_model::submit`, which does not
///   block, when the handler runs on a runtime executor.
/// - Errors are values (`result`), never exceptions: a missing model file is
///   `not_found`, a file that is not a model `invalid_argument`, inputs the
///   model rejects (shape, dtype, count) `invalid_argument` with the
///   backend's reason, a full batching queue `limit_exceeded`, a closed
///   batcher `unavailable`, a device asked for but absent `unavailable`.

#include <aise/error.hpp>
#include <aise/ml_export.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace aise {
class runtime;
}

namespace aise::ml {

/// Element types a tensor holds.
enum class dtype {
  float32,  ///< float
  int64,    ///< std::int64_t (token ids, masks, labels)
};

/// "float32" or "int64".
AISE_ML_EXPORT std::string_view to_string(dtype t) noexcept;

/// A dense row-major tensor that owns its elements. Dimension 0 is the
/// batch dimension wherever batching is involved. A value type.
class AISE_ML_EXPORT tensor {
 public:
  /// An empty float32 tensor of shape {0}.
  tensor();
  /// A float32 tensor; `invalid_argument` unless the shape's product (every
  /// dimension >= 0) equals data.size().
  static result<tensor> of(std::vector<std::int64_t> shape, std::vector<float> data);
  /// An int64 tensor; same checks.
  static result<tensor> of(std::vector<std::int64_t> shape, std::vector<std::int64_t> data);

  [[nodiscard]] dtype type() const noexcept { return type_; }
  [[nodiscard]] const std::vector<std::int64_t>& shape() const noexcept { return shape_; }
  /// Number of elements.
  [[nodiscard]] std::size_t size() const noexcept;
  /// Size of dimension 0 (0 for a scalar of rank 0).
  [[nodiscard]] std::int64_t rows() const noexcept;
  /// The elements; empty when the tensor holds the other type.
  [[nodiscard]] std::span<const float> floats() const noexcept { return floats_; }
  [[nodiscard]] std::span<const std::int64_t> ints() const noexcept { return ints_; }
  [[nodiscard]] std::span<float> floats() noexcept { return floats_; }
  [[nodiscard]] std::span<std::int64_t> ints() noexcept { return ints_; }

  /// Rows [first, first + count) of dimension 0, copied. `invalid_argument`
  /// for rank 0 or a range outside the tensor.
  [[nodiscard]] result<tensor> slice_rows(std::int64_t first, std::int64_t count) const;
  /// The tensors stacked along dimension 0. `invalid_argument` unless all
  /// have the same type, rank >= 1 and the same trailing dimensions.
  static result<tensor> concat_rows(std::span<const tensor> parts);

  /// "float32[2, 3]".
  [[nodiscard]] std::string describe() const;

  friend bool operator==(const tensor&, const tensor&) = default;

 private:
  dtype type_ = dtype::float32;
  std::vector<std::int64_t> shape_;
  std::vector<float> floats_;
  std::vector<std::int64_t> ints_;
};

using tensors = std::vector<tensor>;

/// What is known about a loaded model.
struct AISE_ML_EXPORT model_info {
  std::string name;       ///< Registry name (load_options::name, else the file stem).
  std::string backend;    ///< The backend that loaded it, e.g. "torchscript".
  std::string source;     ///< The file it was loaded from.
  std::string device;     ///< Where it runs: "cpu", "cuda:0".
  std::string signature;  ///< The entry point as the backend reports it.
  /// Metadata shipped with the model (TorchScript: the extra file
  /// "aise.json"), or an empty object.
  nlohmann::json metadata = nlohmann::json::object();
};

/// A loaded model. Implementations: a backend's models, batched models.
class AISE_ML_EXPORT model {
 public:
  virtual ~model() = default;
  [[nodiscard]] virtual const model_info& info() const noexcept = 0;
  /// Runs the model: `inputs` are its positional arguments; the result is
  /// every tensor it returns (a tuple or list flattened in order). Blocks
  /// until done. Thread-safe.
  virtual result<tensors> run(const tensors& inputs) = 0;
};

/// How a backend loads a model.
struct AISE_ML_EXPORT load_options {
  /// The model's name (model_info::name); default: the file stem.
  std::string name;
  /// "cpu" (default), "cuda" / "cuda:N" (`unavailable` without CUDA), or
  /// "auto" (CUDA when the backend has it, else the CPU).
  std::string device = "cpu";
  /// Example inputs run `warm_up_runs` times after loading, so the first
  /// real call does not pay for lazy initialisation or JIT optimisation;
  /// a failing warm-up fails the load. Empty: no warm-up.
  tensors warm_up;
  int warm_up_runs = 3;
};

/// Loads model files of one format.
class AISE_ML_EXPORT backend {
 public:
  virtual ~backend() = default;
  /// E.g. "torchscript".
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;
  /// Loads `file`. Errors: `not_found` (no such file), `invalid_argument`
  /// (not a model of this format, or a bad option), `unavailable` (the
  /// device asked for is absent). Thread-safe.
  virtual result<std::shared_ptr<model>> load(const std::filesystem::path& file,
                                              const load_options& options) = 0;
};

// ---------------------------------------------------------------- batching --

/// Dynamic batching: how calls are merged.
struct AISE_ML_EXPORT batching_options {
  /// Rows per batch at most (a single call with more rows runs alone).
  std::size_t max_batch = 16;
  /// How long the first call of a batch waits for others.
  std::chrono::microseconds max_wait{2000};
  /// Calls waiting at most; beyond that `submit`/`run` fail at once with
  /// `limit_exceeded` (back-pressure, memory stays bounded).
  std::size_t max_queue = 4096;
};

/// Counters of a batched model (for metrics and tests).
struct AISE_ML_EXPORT batching_stats {
  std::uint64_t calls = 0;    ///< calls run (successfully or not)
  std::uint64_t batches = 0;  ///< model runs
  std::uint64_t rows = 0;     ///< rows through the model
  std::uint64_t largest = 0;  ///< most rows in one batch
  std::uint64_t refused = 0;  ///< calls refused because the queue was full
};

/// A model behind a dynamic batching queue, run by a thread of its own.
/// Concurrent calls whose inputs agree in count, types and every dimension
/// but the first are concatenated along dimension 0 (up to
/// `max_batch` rows, or whatever arrived within `max_wait` of the batch's
/// first call), run once, and each call gets its own rows of every output
/// back. Every output of the wrapped model must have the batch's rows as
/// dimension 0; otherwise every call of that batch fails with
/// `invalid_argument`. Errors of the wrapped model reach every call of the
/// batch. Thread-safe; destroying it (or `close`) fails calls still
/// waiting with `unavailable` and joins its thread.
class AISE_ML_EXPORT batched_model : public model {
 public:
  /// Called exactly once with the outputs of this call, on the batcher's
  /// thread (or, when refused at once, on the calling thread before
  /// `submit` returns). Must be quick: post heavier work elsewhere.
  using callback = std::function<void(result<tensors>)>;
  /// Queues a call; does not block.
  virtual void submit(tensors inputs, callback done) = 0;
  /// Stops: calls still queued fail with `unavailable`; later calls too.
  virtual void close() = 0;
  [[nodiscard]] virtual batching_stats stats() const = 0;
};

/// Wraps `inner` (not null) in a batching queue. `invalid_argument` for
/// max_batch or max_queue of 0.
AISE_ML_EXPORT result<std::shared_ptr<batched_model>> make_batched(std::shared_ptr<model> inner,
                                                                   batching_options options = {});

// ---------------------------------------------------------------- registry --

/// Models by name: how agents find the models their application loaded.
/// Thread-safe.
class AISE_ML_EXPORT model_registry {
 public:
  model_registry();
  ~model_registry();
  model_registry(const model_registry&) = delete;
  model_registry& operator=(const model_registry&) = delete;

  /// Adds `m` (not null) under `name` (not empty). `already_exists` when
  /// the name is taken (use `replace` to swap a model).
  result<void> add(std::string name, std::shared_ptr<model> m);
  /// Puts `m` under `name`, replacing any model there; callers holding the
  /// old one keep it until they drop it.
  result<void> replace(std::string name, std::shared_ptr<model> m);
  /// The model named `name`; `not_found` names the models there are.
  [[nodiscard]] result<std::shared_ptr<model>> find(std::string_view name) const;
  /// Removes `name`; `not_found` when absent.
  result<void> remove(std::string_view name);
  /// Names and infos of every model, sorted by name.
  [[nodiscard]] std::vector<std::pair<std::string, model_info>> list() const;

 private:
  struct state;
  std::unique_ptr<state> state_;
};

/// The model registry of runtime `rt` (one per runtime, created on first
/// use, kept in `rt.services()`). Agents call `ml::models(rt())`.
AISE_ML_EXPORT std::shared_ptr<model_registry> models(runtime& rt);

/// Mean pooling: the average over dimension 1 of `hidden` ([batch, tokens,
/// width], float32) counting only the tokens whose `mask` ([batch, tokens],
/// int64) is non-zero; the result is [batch, width]. A row with no token
/// gives zeros. `invalid_argument` on shape or type mismatch.
AISE_ML_EXPORT result<tensor> mean_pool(const tensor& hidden, const tensor& mask);

/// Softmax over the last dimension of a float32 tensor (numerically
/// stable: the row maximum is subtracted first).
AISE_ML_EXPORT result<tensor> softmax(const tensor& logits);

}  // namespace aise::ml
