// Classic ML on LibTorch tensors (include/aise/classic_ml.hpp). Computation
// runs in float64 (scikit-learn's precision) and results come back as
// float32 tensors or doubles.
#include <aise/classic_ml.hpp>

#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <map>
#include <random>
#include <set>
#include <torch/torch.h>

#include "ml/unicode.hpp"

namespace aise::ml {
namespace {

/// float32 [n, d] (n >= 1, d >= 1, finite) as a float64 torch tensor.
result<::torch::Tensor> matrix(const tensor& x, const char* who) {
  if (x.type() != dtype::float32 || x.shape().size() != 2 || x.shape()[0] < 1 || x.shape()[1] < 1) {
    return error(errc::invalid_argument,
                 fmt::format("{}: expected float32 [samples >= 1, features >= 1], got {}", who,
                             x.describe()));
  }
  for (float v : x.floats()) {
    if (!std::isfinite(v))
      return error(errc::invalid_argument, fmt::format("{}: the data holds NaN or infinity", who));
  }
  return ::torch::from_blob(const_cast<float*>(x.floats().data()), {x.shape()[0], x.shape()[1]},
                            ::torch::kFloat32)
      .to(::torch::kFloat64);
}

tensor to_tensor(const ::torch::Tensor& t) {
  auto c = t.to(::torch::kFloat32).contiguous();
  std::vector<std::int64_t> shape(c.sizes().begin(), c.sizes().end());
  const float* p = c.data_ptr<float>();
  return *tensor::of(std::move(shape), std::vector<float>(p, p + c.numel()));
}

tensor to_labels(const ::torch::Tensor& t) {
  auto c = t.to(::torch::kInt64).contiguous();
  const std::int64_t* p = c.data_ptr<std::int64_t>();
  return *tensor::of({c.numel()}, std::vector<std::int64_t>(p, p + c.numel()));
}

::torch::Tensor doubles(const std::vector<double>& v) {
  return ::torch::tensor(v, ::torch::kFloat64);
}

std::vector<double> to_vector(const ::torch::Tensor& t) {
  auto c = t.to(::torch::kFloat64).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

/// LibTorch's exceptions as errors (they should not happen after the checks).
template <class F>
auto guarded(const char* who, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::exception& e) {
    std::string what = e.what();
    if (auto nl = what.find('\n'); nl != std::string::npos) what.resize(nl);
    return error(errc::internal, fmt::format("{}: {}", who, what));
  }
}

}  // namespace

// ---------------------------------------------------------- standard_scaler --

result<void> standard_scaler::fit(const tensor& x) {
  return guarded("standard_scaler", [&]() -> result<void> {
    auto m = matrix(x, "standard_scaler");
    if (!m) return m.error();
    auto mean = m->mean(0);
    auto var = (*m - mean).pow(2).mean(0);  // population variance (ddof 0)
    auto scale = var.sqrt();
    // A constant column keeps scale 1 (scikit-learn's _handle_zeros_in_scale).
    scale = ::torch::where(scale < 10 * std::numeric_limits<double>::epsilon(),
                           ::torch::ones_like(scale), scale);
    mean_ = to_vector(mean);
    scale_ = to_vector(scale);
    return {};
  });
}

result<tensor> standard_scaler::transform(const tensor& x) const {
  if (mean_.empty()) return error(errc::invalid_argument, "standard_scaler: not fitted");
  return guarded("standard_scaler", [&]() -> result<tensor> {
    auto m = matrix(x, "standard_scaler");
    if (!m) return m.error();
    if (static_cast<std::size_t>(m->size(1)) != mean_.size())
      return error(
          errc::invalid_argument,
          fmt::format("standard_scaler: fitted on {} features, got {}", mean_.size(), m->size(1)));
    return to_tensor((*m - doubles(mean_)) / doubles(scale_));
  });
}

result<tensor> standard_scaler::fit_transform(const tensor& x) {
  if (auto r = fit(x); !r) return r.error();
  return transform(x);
}

// --------------------------------------------------------- tfidf_vectorizer --

namespace {

/// scikit-learn's default analyzer: lower-case, then every run of two or
/// more word characters.
result<std::vector<std::string>> analyze(const std::string& doc, bool lower) {
  auto cps = detail::decode_utf8(doc);
  if (!cps) return cps.error();
  std::u32string text = lower ? detail::python_lower(*cps) : std::move(*cps);
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && !detail::is_word_char(text[i])) ++i;
    std::size_t j = i;
    while (j < text.size() && detail::is_word_char(text[j])) ++j;
    if (j - i >= 2) out.push_back(detail::to_utf8(std::u32string_view(text).substr(i, j - i)));
    i = j;
  }
  return out;
}

}  // namespace

result<void> tfidf_vectorizer::fit(std::span<const std::string> documents) {
  if (documents.empty()) return error(errc::invalid_argument, "tfidf: no documents");
  std::map<std::string, std::size_t> df;
  for (std::size_t d = 0; d < documents.size(); ++d) {
    auto terms = analyze(documents[d], options_.lower_case);
    if (!terms)
      return error(errc::invalid_argument,
                   fmt::format("tfidf: document {}: {}", d, terms.error().message()));
    std::set<std::string> seen(terms->begin(), terms->end());
    for (const auto& t : seen) ++df[t];
  }
  terms_.clear();
  idf_.clear();
  const double n = static_cast<double>(documents.size());
  const double smooth = options_.smooth_idf ? 1.0 : 0.0;
  for (const auto& [term, count] : df) {  // std::map: sorted as scikit-learn's vocabulary
    if (count < options_.min_df) continue;
    terms_.push_back(term);
    idf_.push_back(std::log((n + smooth) / (static_cast<double>(count) + smooth)) + 1.0);
  }
  if (terms_.empty())
    return error(errc::invalid_argument,
                 "tfidf: empty vocabulary (the documents hold no word of two or more characters)");
  return {};
}

result<tensor> tfidf_vectorizer::transform(std::span<const std::string> documents) const {
  if (terms_.empty()) return error(errc::invalid_argument, "tfidf: not fitted");
  if (documents.empty()) return error(errc::invalid_argument, "tfidf: no documents");
  const std::size_t v = terms_.size();
  std::vector<double> m(documents.size() * v, 0.0);
  for (std::size_t d = 0; d < documents.size(); ++d) {
    auto terms = analyze(documents[d], options_.lower_case);
    if (!terms)
      return error(errc::invalid_argument,
                   fmt::format("tfidf: document {}: {}", d, terms.error().message()));
    for (const auto& t : *terms) {
      auto it = std::lower_bound(terms_.begin(), terms_.end(), t);
      if (it != terms_.end() && *it == t)
        m[d * v + static_cast<std::size_t>(it - terms_.begin())] += 1;
    }
  }
  return guarded("tfidf", [&]() -> result<tensor> {
    auto t = ::torch::from_blob(
        m.data(), {static_cast<std::int64_t>(documents.size()), static_cast<std::int64_t>(v)},
        ::torch::kFloat64);
    if (options_.sublinear_tf) t = ::torch::where(t > 0, t.log() + 1, t);
    t = t * doubles(idf_);
    if (options_.normalize) {
      auto norm = t.norm(2, 1, true);
      t = t / ::torch::where(norm > 0, norm, ::torch::ones_like(norm));
    }
    return to_tensor(t);
  });
}

result<tensor> tfidf_vectorizer::fit_transform(std::span<const std::string> documents) {
  if (auto r = fit(documents); !r) return r.error();
  return transform(documents);
}

// ------------------------------------------------------ logistic_regression --

result<void> logistic_regression::fit(const tensor& x, const tensor& y) {
  if (options_.c <= 0) return error(errc::invalid_argument, "logistic_regression: C must be > 0");
  return guarded("logistic_regression", [&]() -> result<void> {
    auto xs = matrix(x, "logistic_regression");
    if (!xs) return xs.error();
    if (y.type() != dtype::int64 || y.shape().size() != 1 || y.shape()[0] != xs->size(0))
      return error(errc::invalid_argument,
                   fmt::format("logistic_regression: y must be int64 [{}], got {}", xs->size(0),
                               y.describe()));
    std::vector<std::int64_t> classes(y.ints().begin(), y.ints().end());
    std::sort(classes.begin(), classes.end());
    classes.erase(std::unique(classes.begin(), classes.end()), classes.end());
    if (classes.size() < 2)
      return error(errc::invalid_argument, "logistic_regression: y needs at least two classes");
    std::vector<std::int64_t> index(y.ints().size());
    for (std::size_t i = 0; i < index.size(); ++i) {
      index[i] = std::lower_bound(classes.begin(), classes.end(), y.ints()[i]) - classes.begin();
    }
    const auto n = xs->size(0), d = xs->size(1);
    const auto k = static_cast<std::int64_t>(classes.size());
    const bool binary = k == 2;
    const std::int64_t rows = binary ? 1 : k;
    auto target = ::torch::tensor(index, ::torch::kInt64);
    auto w = ::torch::zeros({rows, d}, ::torch::kFloat64).requires_grad_(true);
    auto b = ::torch::zeros({rows}, ::torch::kFloat64).requires_grad_(options_.fit_intercept);
    const double penalty = 1.0 / (2.0 * options_.c);
    std::vector<::torch::Tensor> params{w};
    if (options_.fit_intercept) params.push_back(b);
    ::torch::optim::LBFGS opt(params, ::torch::optim::LBFGSOptions(1.0)
                                          .max_iter(options_.max_iter)
                                          .max_eval(options_.max_iter * 5 / 4)
                                          .tolerance_grad(options_.tol)
                                          .tolerance_change(1e-14)
                                          .history_size(10)
                                          .line_search_fn("strong_wolfe"));
    int evaluations = 0;
    auto closure = [&] {
      opt.zero_grad();
      auto z = ::torch::matmul(*xs, w.t()) + b;  // [n, rows]
      ::torch::Tensor loss;
      if (binary) {
        // log(1 + exp(-s z)) with s = ±1: softplus(-s z)
        auto s = target.to(::torch::kFloat64) * 2 - 1;
        loss = ::torch::softplus(-s * z.squeeze(1)).sum();
      } else {
        loss = ::torch::nn::functional::cross_entropy(
            z, target, ::torch::nn::functional::CrossEntropyFuncOptions().reduction(::torch::kSum));
      }
      loss = loss + penalty * w.pow(2).sum();
      loss.backward();
      ++evaluations;
      return loss;
    };
    opt.step(closure);
    (void)n;
    iterations_ = evaluations;
    classes_ = std::move(classes);
    coef_ = to_tensor(w.detach());
    intercept_ = to_vector(b.detach());
    return {};
  });
}

result<tensor> logistic_regression::predict_proba(const tensor& x) const {
  if (classes_.empty()) return error(errc::invalid_argument, "logistic_regression: not fitted");
  return guarded("logistic_regression", [&]() -> result<tensor> {
    auto xs = matrix(x, "logistic_regression");
    if (!xs) return xs.error();
    if (xs->size(1) != coef_.shape()[1])
      return error(errc::invalid_argument,
                   fmt::format("logistic_regression: fitted on {} features, got {}",
                               coef_.shape()[1], xs->size(1)));
    auto w = ::torch::from_blob(const_cast<float*>(coef_.floats().data()),
                                {coef_.shape()[0], coef_.shape()[1]}, ::torch::kFloat32)
                 .to(::torch::kFloat64);
    auto z = ::torch::matmul(*xs, w.t()) + doubles(intercept_);
    if (classes_.size() == 2) {
      auto p1 = ::torch::sigmoid(z.squeeze(1));
      return to_tensor(::torch::stack({1 - p1, p1}, 1));
    }
    return to_tensor(::torch::softmax(z, 1));
  });
}

result<tensor> logistic_regression::predict(const tensor& x) const {
  auto p = predict_proba(x);
  if (!p) return p.error();
  const auto n = p->shape()[0], k = p->shape()[1];
  std::vector<std::int64_t> out(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    auto row = p->floats().subspan(static_cast<std::size_t>(i * k), static_cast<std::size_t>(k));
    out[static_cast<std::size_t>(i)] =
        classes_[static_cast<std::size_t>(std::max_element(row.begin(), row.end()) - row.begin())];
  }
  return tensor::of({n}, std::move(out));
}

// ------------------------------------------------------------------ kmeans --

namespace {

/// Squared distances [n, k] and, per sample, the nearest centre.
std::pair<::torch::Tensor, ::torch::Tensor> nearest(const ::torch::Tensor& x,
                                                    const ::torch::Tensor& c) {
  auto d2 = (x.pow(2).sum(1, true) - 2 * ::torch::matmul(x, c.t()) + c.pow(2).sum(1)).clamp_min(0);
  auto [best, index] = d2.min(1);
  return {best, index};
}

/// scikit-learn's greedy k-means++: 2 + ln(k) candidates per step, the one
/// that lowers the potential most wins.
::torch::Tensor kmeans_plus_plus(const ::torch::Tensor& x, std::int64_t k, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const auto n = x.size(0);
  const int trials = 2 + static_cast<int>(std::log(static_cast<double>(k)));
  std::vector<std::int64_t> chosen{
      static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(n))};
  auto closest = nearest(x, x.index_select(0, ::torch::tensor(chosen))).first;
  for (std::int64_t c = 1; c < k; ++c) {
    auto cumulative = to_vector(closest.cumsum(0));
    const double total = cumulative.back();
    std::uniform_real_distribution<double> u(0.0, total);
    std::int64_t best = -1;
    double best_potential = 0;
    ::torch::Tensor best_closest;
    for (int t = 0; t < trials; ++t) {
      const double r = u(rng);
      auto cand = static_cast<std::int64_t>(
          std::lower_bound(cumulative.begin(), cumulative.end(), r) - cumulative.begin());
      cand = std::min(cand, n - 1);
      auto d = nearest(x, x.index_select(0, ::torch::tensor({cand}))).first;
      auto merged = ::torch::minimum(closest, d);
      const double potential = merged.sum().item<double>();
      if (best < 0 || potential < best_potential) {
        best = cand;
        best_potential = potential;
        best_closest = merged;
      }
    }
    chosen.push_back(best);
    closest = best_closest;
  }
  return x.index_select(0, ::torch::tensor(chosen)).clone();
}

}  // namespace

result<void> kmeans::fit(const tensor& x) {
  return guarded("kmeans", [&]() -> result<void> {
    auto xs = matrix(x, "kmeans");
    if (!xs) return xs.error();
    const auto n = xs->size(0), d = xs->size(1);
    const auto k = static_cast<std::int64_t>(options_.k);
    if (k < 1 || k > n)
      return error(errc::invalid_argument,
                   fmt::format("kmeans: k = {} needs 1 <= k <= samples ({})", k, n));
    ::torch::Tensor c;
    if (options_.init) {
      auto init = matrix(*options_.init, "kmeans init");
      if (!init) return init.error();
      if (init->size(0) != k || init->size(1) != d)
        return error(errc::invalid_argument, fmt::format("kmeans: init must be [{}, {}], got {}", k,
                                                         d, options_.init->describe()));
      c = init->clone();
    } else {
      c = kmeans_plus_plus(*xs, k, options_.seed);
    }
    // scikit-learn's tolerance: tol times the mean variance of the features.
    const double tol = options_.tol * xs->var(0, false).mean().item<double>();
    ::torch::Tensor labels;
    int it = 0;
    for (; it < options_.max_iter; ++it) {
      labels = nearest(*xs, c).second;
      auto sums = ::torch::zeros({k, d}, ::torch::kFloat64).index_add_(0, labels, *xs);
      auto counts = ::torch::bincount(labels, {}, k).to(::torch::kFloat64);
      auto next = sums / counts.clamp_min(1).unsqueeze(1);
      // An empty cluster takes the sample farthest from its centre.
      auto empty = (counts == 0).nonzero();
      for (std::int64_t e = 0; e < empty.size(0); ++e) {
        auto far = nearest(*xs, next).first.argmax().item<std::int64_t>();
        next[empty[e][0].item<std::int64_t>()] = (*xs)[far];
      }
      const double shift = (next - c).pow(2).sum().item<double>();
      c = next;
      auto again = nearest(*xs, c).second;
      if (::torch::equal(again, labels)) {  // strict convergence
        labels = again;
        ++it;
        break;
      }
      if (shift <= tol) {
        labels = again;
        ++it;
        break;
      }
    }
    auto [dist, final_labels] = nearest(*xs, c);
    centers_ = to_tensor(c);
    auto l = final_labels.contiguous();
    labels_.assign(l.data_ptr<std::int64_t>(), l.data_ptr<std::int64_t>() + n);
    inertia_ = dist.sum().item<double>();
    iterations_ = it;
    return {};
  });
}

result<tensor> kmeans::predict(const tensor& x) const {
  if (labels_.empty()) return error(errc::invalid_argument, "kmeans: not fitted");
  return guarded("kmeans", [&]() -> result<tensor> {
    auto xs = matrix(x, "kmeans");
    if (!xs) return xs.error();
    if (xs->size(1) != centers_.shape()[1])
      return error(errc::invalid_argument, fmt::format("kmeans: fitted on {} features, got {}",
                                                       centers_.shape()[1], xs->size(1)));
    auto c = ::torch::from_blob(const_cast<float*>(centers_.floats().data()),
                                {centers_.shape()[0], centers_.shape()[1]}, ::torch::kFloat32)
                 .to(::torch::kFloat64);
    return to_labels(nearest(*xs, c).second);
  });
}

}  // namespace aise::ml
