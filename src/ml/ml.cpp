// aise::ml: tensors, the model registry and the dynamic batcher (see
// include/aise/ml.hpp for the contract).
#include <aise/ml.hpp>
#include <aise/runtime.hpp>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <fmt/format.h>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

namespace aise::ml {

std::string_view to_string(dtype t) noexcept {
  return t == dtype::float32 ? "float32" : "int64";
}

// ------------------------------------------------------------------ tensor --

tensor::tensor() : shape_{0} {}

namespace {

result<std::size_t> element_count(const std::vector<std::int64_t>& shape) {
  std::size_t n = 1;
  for (auto d : shape) {
    if (d < 0) return error(errc::invalid_argument, "tensor: a dimension is negative");
    const auto u = static_cast<std::size_t>(d);
    if (u != 0 && n > std::numeric_limits<std::size_t>::max() / u)
      return error(errc::invalid_argument, "tensor: the shape's element count overflows");
    n *= u;
  }
  return n;
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

}  // namespace

namespace {

/// `invalid_argument` unless `shape` is valid and holds exactly `elements`.
result<void> check_shape(const std::vector<std::int64_t>& shape, std::size_t elements) {
  auto n = element_count(shape);
  if (!n) return n.error();
  if (*n != elements) {
    return error(errc::invalid_argument, fmt::format("tensor: shape {} needs {} elements, got {}",
                                                     shape_text(shape), *n, elements));
  }
  return {};
}

}  // namespace

result<tensor> tensor::of(std::vector<std::int64_t> shape, std::vector<float> data) {
  if (auto ok = check_shape(shape, data.size()); !ok) return ok.error();
  tensor t;
  t.type_ = dtype::float32;
  t.shape_ = std::move(shape);
  t.floats_ = std::move(data);
  return t;
}

result<tensor> tensor::of(std::vector<std::int64_t> shape, std::vector<std::int64_t> data) {
  if (auto ok = check_shape(shape, data.size()); !ok) return ok.error();
  tensor t;
  t.type_ = dtype::int64;
  t.shape_ = std::move(shape);
  t.ints_ = std::move(data);
  return t;
}

std::size_t tensor::size() const noexcept {
  return type_ == dtype::float32 ? floats_.size() : ints_.size();
}

std::int64_t tensor::rows() const noexcept {
  return shape_.empty() ? 0 : shape_.front();
}

std::string tensor::describe() const {
  return fmt::format("{}{}", to_string(type_), shape_text(shape_));
}

result<tensor> tensor::slice_rows(std::int64_t first, std::int64_t count) const {
  if (shape_.empty()) return error(errc::invalid_argument, "tensor: a scalar has no rows");
  if (first < 0 || count < 0 || first + count > shape_.front()) {
    return error(errc::invalid_argument,
                 fmt::format("tensor: rows [{}, {}) outside {}", first, first + count, describe()));
  }
  const std::size_t row = shape_.front() == 0 ? 0 : size() / static_cast<std::size_t>(rows());
  tensor out;
  out.type_ = type_;
  out.shape_ = shape_;
  out.shape_.front() = count;
  const auto begin = static_cast<std::size_t>(first) * row;
  const auto end = begin + static_cast<std::size_t>(count) * row;
  if (type_ == dtype::float32) {
    out.floats_.assign(floats_.begin() + static_cast<std::ptrdiff_t>(begin),
                       floats_.begin() + static_cast<std::ptrdiff_t>(end));
  } else {
    out.ints_.assign(ints_.begin() + static_cast<std::ptrdiff_t>(begin),
                     ints_.begin() + static_cast<std::ptrdiff_t>(end));
  }
  return out;
}

result<tensor> tensor::concat_rows(std::span<const tensor> parts) {
  if (parts.empty()) return error(errc::invalid_argument, "tensor: nothing to concatenate");
  const tensor& first = parts.front();
  if (first.shape_.empty())
    return error(errc::invalid_argument, "tensor: scalars cannot be concatenated");
  tensor out;
  out.type_ = first.type_;
  out.shape_ = first.shape_;
  out.shape_.front() = 0;
  std::size_t total = 0;
  for (const auto& p : parts) {
    if (p.type_ != first.type_ || p.shape_.size() != first.shape_.size() ||
        !std::equal(p.shape_.begin() + 1, p.shape_.end(), first.shape_.begin() + 1)) {
      return error(errc::invalid_argument, fmt::format("tensor: cannot concatenate {} and {}",
                                                       first.describe(), p.describe()));
    }
    out.shape_.front() += p.shape_.front();
    total += p.size();
  }
  if (out.type_ == dtype::float32) {
    out.floats_.reserve(total);
    for (const auto& p : parts)
      out.floats_.insert(out.floats_.end(), p.floats_.begin(), p.floats_.end());
  } else {
    out.ints_.reserve(total);
    for (const auto& p : parts) out.ints_.insert(out.ints_.end(), p.ints_.begin(), p.ints_.end());
  }
  return out;
}

// ---------------------------------------------------------------- batching --

namespace {

/// Calls that may share a batch: same input count, types and trailing
/// dimensions.
bool compatible(const tensors& a, const tensors& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto& x = a[i].shape();
    const auto& y = b[i].shape();
    if (a[i].type() != b[i].type() || x.size() != y.size() || x.empty()) return false;
    if (!std::equal(x.begin() + 1, x.end(), y.begin() + 1)) return false;
  }
  return true;
}

// The queue and the model; shared by the handle (batcher) and its thread, so
// that a handle dropped inside a callback (on the thread) cannot pull the
// state from under the running loop.
class batch_core {
 public:
  batch_core(std::shared_ptr<model> inner, batching_options o)
      : inner_(std::move(inner)), options_(o), info_(inner_->info()) {
    info_.signature = fmt::format("{} (batched: up to {} rows, {} us)", info_.signature,
                                  options_.max_batch, options_.max_wait.count());
  }

  const model_info& info() const noexcept { return info_; }

  void submit(tensors inputs, batched_model::callback done) {
    if (!done) return;
    if (inputs.empty() || inputs.front().shape().empty()) {
      done(error(errc::invalid_argument,
                 "batched model: every input needs a batch dimension (rank >= 1)"));
      return;
    }
    const std::int64_t n = inputs.front().rows();
    for (const auto& t : inputs) {
      if (t.shape().empty() || t.rows() != n) {
        done(error(errc::invalid_argument,
                   fmt::format("batched model: inputs disagree on the batch dimension ({} vs {})",
                               inputs.front().describe(), t.describe())));
        return;
      }
    }
    {
      std::unique_lock lock(mutex_);
      if (closed_) {
        lock.unlock();
        done(error(errc::unavailable, "batched model: closed"));
        return;
      }
      if (queue_.size() >= options_.max_queue) {
        ++stats_.refused;
        lock.unlock();
        done(error(errc::limit_exceeded,
                   fmt::format("batched model '{}': {} calls are waiting (max_queue)", info_.name,
                               options_.max_queue)));
        return;
      }
      queue_.push_back({std::move(inputs), std::move(done), std::chrono::steady_clock::now(), n});
    }
    cv_.notify_one();
  }

  // Refuses later calls and fails the queued ones.
  void close() {
    std::deque<pending> left;
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
      left.swap(queue_);
    }
    cv_.notify_all();
    for (auto& p : left) p.done(error(errc::unavailable, "batched model: closed"));
  }

  batching_stats stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
  }

  // The batcher's thread.
  void loop() {
    std::unique_lock lock(mutex_);
    for (;;) {
      cv_.wait(lock, [&] { return closed_ || !queue_.empty(); });
      if (closed_) return;
      // Wait for the batch to fill, at most max_wait after its first call.
      const auto deadline = queue_.front().since + options_.max_wait;
      while (!closed_ && !queue_.empty() && fill() < options_.max_batch &&
             std::chrono::steady_clock::now() < deadline) {
        cv_.wait_until(lock, deadline);
      }
      if (closed_) return;
      // The first call and every compatible one behind it, up to max_batch rows.
      std::vector<pending> batch;
      std::int64_t rows = 0;
      for (auto it = queue_.begin(); it != queue_.end();) {
        const bool fits =
            batch.empty() || (compatible(batch.front().inputs, it->inputs) &&
                              static_cast<std::size_t>(rows + it->rows) <= options_.max_batch);
        if (!fits) {
          ++it;
          continue;
        }
        rows += it->rows;
        batch.push_back(std::move(*it));
        it = queue_.erase(it);
        if (static_cast<std::size_t>(rows) >= options_.max_batch) break;
      }
      // Counted before the callers hear back, so that a caller reading the
      // stats after its call returned sees its call.
      stats_.calls += batch.size();
      stats_.batches += 1;
      stats_.rows += static_cast<std::uint64_t>(rows);
      stats_.largest = std::max<std::uint64_t>(stats_.largest, static_cast<std::uint64_t>(rows));
      lock.unlock();
      run_batch(batch, rows);
      // What the callbacks captured dies here, without the lock: one of
      // them may hold the last reference to the batched model.
      batch.clear();
      lock.lock();
    }
  }

 private:
  struct pending {
    tensors inputs;
    batched_model::callback done;
    std::chrono::steady_clock::time_point since;
    std::int64_t rows = 0;  // dimension 0 of every input
  };

  // Rows queued that could join the first call's batch. mutex_ held.
  std::size_t fill() const {
    std::size_t rows = 0;
    for (const auto& p : queue_) {
      if (&p == &queue_.front() || compatible(queue_.front().inputs, p.inputs))
        rows += static_cast<std::size_t>(p.rows);
    }
    return rows;
  }

  // A callback that throws must not take the batcher's thread down.
  static void deliver(pending& p, result<tensors> r) noexcept {
    try {
      p.done(std::move(r));
    } catch (...) {  // NOLINT(bugprone-empty-catch): the caller's callback; nothing to report to
    }
  }

  void run_batch(std::vector<pending>& batch, std::int64_t rows) {
    auto fail_all = [&](const error& e) {
      for (auto& p : batch) deliver(p, e);
    };
    if (batch.size() == 1) {  // nothing to merge; the same output check as a batch
      auto out = safe_run(batch.front().inputs);
      if (out) {
        for (const auto& t : *out) {
          if (t.shape().empty() || t.rows() != rows) {
            return fail_all(error(errc::invalid_argument,
                                  fmt::format("batched model '{}': output {} does not have the "
                                              "batch's {} rows first: it cannot be split",
                                              info_.name, t.describe(), rows)));
          }
        }
      }
      deliver(batch.front(), std::move(out));
      return;
    }
    tensors merged;
    const std::size_t inputs = batch.front().inputs.size();
    for (std::size_t i = 0; i < inputs; ++i) {
      std::vector<tensor> parts;
      parts.reserve(batch.size());
      for (auto& p : batch) parts.push_back(std::move(p.inputs[i]));
      auto joined = tensor::concat_rows(parts);
      if (!joined) return fail_all(joined.error());
      merged.push_back(std::move(*joined));
    }
    auto out = safe_run(merged);
    if (!out) return fail_all(out.error());
    for (const auto& t : *out) {
      if (t.shape().empty() || t.rows() != rows) {
        return fail_all(error(errc::invalid_argument,
                              fmt::format("batched model '{}': output {} does not have the "
                                          "batch's {} rows first: it cannot be split",
                                          info_.name, t.describe(), rows)));
      }
    }
    std::int64_t first = 0;
    for (auto& p : batch) {
      tensors part;
      part.reserve(out->size());
      for (const auto& t : *out) part.push_back(*t.slice_rows(first, p.rows));
      first += p.rows;
      deliver(p, std::move(part));
    }
  }

  result<tensors> safe_run(const tensors& inputs) {
    try {
      return inner_->run(inputs);
    } catch (const std::exception& e) {
      return error(errc::internal, fmt::format("model '{}' threw: {}", info_.name, e.what()));
    } catch (...) {
      return error(errc::internal, fmt::format("model '{}' threw", info_.name));
    }
  }

  std::shared_ptr<model> inner_;
  batching_options options_;
  model_info info_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<pending> queue_;
  bool closed_ = false;
  batching_stats stats_;
};

// The handle users hold: closing it (or dropping it) stops the thread.
class batcher final : public batched_model {
 public:
  explicit batcher(std::shared_ptr<batch_core> core) : core_(std::move(core)) {
    thread_ = std::thread([core = core_] { core->loop(); });
    thread_id_ = thread_.get_id();
  }
  ~batcher() override { close(); }
  batcher(const batcher&) = delete;
  batcher& operator=(const batcher&) = delete;

  [[nodiscard]] const model_info& info() const noexcept override { return core_->info(); }

  result<tensors> run(const tensors& inputs) override {
    if (std::this_thread::get_id() == thread_id_)
      return error(errc::invalid_argument,
                   "batched model: run() from one of its own callbacks would wait for itself; "
                   "use submit()");
    std::mutex m;
    std::condition_variable cv;
    std::optional<result<tensors>> out;
    core_->submit(inputs, [&](result<tensors> r) {
      std::lock_guard lock(m);
      out.emplace(std::move(r));
      cv.notify_one();
    });
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return out.has_value(); });
    return std::move(*out);
  }

  void submit(tensors inputs, callback done) override {
    core_->submit(std::move(inputs), std::move(done));
  }

  void close() override {
    core_->close();
    std::lock_guard lock(join_mutex_);
    if (!thread_.joinable()) return;
    // Closed from one of its own callbacks: the thread ends by itself (it
    // keeps the core alive meanwhile).
    if (thread_.get_id() == std::this_thread::get_id()) {
      thread_.detach();
    } else {
      thread_.join();
    }
  }

  [[nodiscard]] batching_stats stats() const override { return core_->stats(); }

 private:
  std::shared_ptr<batch_core> core_;
  std::mutex join_mutex_;
  std::thread thread_;
  std::thread::id thread_id_;
};

}  // namespace

result<std::shared_ptr<batched_model>> make_batched(std::shared_ptr<model> inner,
                                                    batching_options options) {
  if (!inner) return error(errc::invalid_argument, "make_batched: no model");
  if (options.max_batch == 0 || options.max_queue == 0)
    return error(errc::invalid_argument, "make_batched: max_batch and max_queue must be >= 1");
  if (options.max_wait.count() < 0)
    return error(errc::invalid_argument, "make_batched: max_wait must not be negative");
  return std::shared_ptr<batched_model>(
      std::make_shared<batcher>(std::make_shared<batch_core>(std::move(inner), options)));
}

// ---------------------------------------------------------------- registry --

struct model_registry::state {
  mutable std::mutex mutex;
  std::map<std::string, std::shared_ptr<model>, std::less<>> models;
};

model_registry::model_registry() : state_(std::make_unique<state>()) {}
model_registry::~model_registry() = default;

result<void> model_registry::add(std::string name, std::shared_ptr<model> m) {
  if (name.empty()) return error(errc::invalid_argument, "model registry: a model needs a name");
  if (!m) return error(errc::invalid_argument, "model registry: no model");
  std::lock_guard lock(state_->mutex);
  if (state_->models.count(name) != 0)
    return error(errc::already_exists, fmt::format("model registry: '{}' is taken", name));
  state_->models.emplace(std::move(name), std::move(m));
  return {};
}

result<void> model_registry::replace(std::string name, std::shared_ptr<model> m) {
  if (name.empty()) return error(errc::invalid_argument, "model registry: a model needs a name");
  if (!m) return error(errc::invalid_argument, "model registry: no model");
  std::shared_ptr<model> old;  // released outside the lock
  std::lock_guard lock(state_->mutex);
  auto& slot = state_->models[name];
  old = std::move(slot);
  slot = std::move(m);
  return {};
}

result<std::shared_ptr<model>> model_registry::find(std::string_view name) const {
  std::lock_guard lock(state_->mutex);
  auto it = state_->models.find(name);
  if (it != state_->models.end()) return it->second;
  std::vector<std::string_view> names;
  for (const auto& [n, m] : state_->models) names.push_back(n);
  return error(errc::not_found,
               fmt::format("model registry: no model '{}' (there are: {})", name,
                           names.empty() ? "none" : fmt::format("{}", fmt::join(names, ", "))));
}

result<void> model_registry::remove(std::string_view name) {
  std::shared_ptr<model> old;
  std::lock_guard lock(state_->mutex);
  auto it = state_->models.find(name);
  if (it == state_->models.end())
    return error(errc::not_found, fmt::format("model registry: no model '{}'", name));
  old = std::move(it->second);
  state_->models.erase(it);
  return {};
}

std::vector<std::pair<std::string, model_info>> model_registry::list() const {
  std::lock_guard lock(state_->mutex);
  std::vector<std::pair<std::string, model_info>> out;
  for (const auto& [n, m] : state_->models) out.emplace_back(n, m->info());
  return out;
}

std::shared_ptr<model_registry> models(runtime& rt) {
  return rt.services().get_or_put<model_registry>(
      [] { return std::make_shared<model_registry>(); });
}

// ----------------------------------------------------------------- helpers --

result<tensor> mean_pool(const tensor& hidden, const tensor& mask) {
  if (hidden.type() != dtype::float32 || hidden.shape().size() != 3)
    return error(errc::invalid_argument,
                 "mean_pool: hidden states must be float32 [batch, tokens, width], got " +
                     hidden.describe());
  if (mask.type() != dtype::int64 || mask.shape().size() != 2 ||
      mask.shape()[0] != hidden.shape()[0] || mask.shape()[1] != hidden.shape()[1])
    return error(errc::invalid_argument,
                 fmt::format("mean_pool: the mask must be int64 [{}, {}], got {}",
                             hidden.shape()[0], hidden.shape()[1], mask.describe()));
  const auto b = static_cast<std::size_t>(hidden.shape()[0]);
  const auto t = static_cast<std::size_t>(hidden.shape()[1]);
  const auto w = static_cast<std::size_t>(hidden.shape()[2]);
  std::vector<float> out(b * w, 0.0F);
  auto h = hidden.floats();
  auto m = mask.ints();
  for (std::size_t i = 0; i < b; ++i) {
    std::size_t counted = 0;
    for (std::size_t j = 0; j < t; ++j) {
      if (m[i * t + j] == 0) continue;
      ++counted;
      for (std::size_t k = 0; k < w; ++k) out[i * w + k] += h[(i * t + j) * w + k];
    }
    if (counted > 0) {
      for (std::size_t k = 0; k < w; ++k) out[i * w + k] /= static_cast<float>(counted);
    }
  }
  return tensor::of({hidden.shape()[0], hidden.shape()[2]}, std::move(out));
}

result<tensor> softmax(const tensor& logits) {
  if (logits.type() != dtype::float32 || logits.shape().empty())
    return error(errc::invalid_argument,
                 "softmax: needs float32 of rank >= 1, got " + logits.describe());
  const auto width = static_cast<std::size_t>(logits.shape().back());
  std::vector<float> out(logits.floats().begin(), logits.floats().end());
  if (width == 0) return tensor::of(logits.shape(), std::move(out));
  for (std::size_t r = 0; r + width <= out.size(); r += width) {
    const float top = *std::max_element(out.begin() + static_cast<std::ptrdiff_t>(r),
                                        out.begin() + static_cast<std::ptrdiff_t>(r + width));
    float sum = 0.0F;
    for (std::size_t k = r; k < r + width; ++k) {
      out[k] = std::exp(out[k] - top);
      sum += out[k];
    }
    for (std::size_t k = r; k < r + width; ++k) out[k] /= sum;
  }
  return tensor::of(logits.shape(), std::move(out));
}

}  // namespace aise::ml
