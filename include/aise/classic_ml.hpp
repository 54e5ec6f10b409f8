#pragma once
/// @file
/// Classic machine learning for agents, in scikit-learn's role: standard
/// scaling, a TF-IDF vectorizer, logistic regression and k-means. Data goes
/// in and out as `ml::tensor`; the numeric work runs on LibTorch tensors
/// (logistic regression is trained with autograd and L-BFGS). Link
/// `aise::torch`; no LibTorch type appears here.
///
/// Each class follows scikit-learn's definitions and defaults so that
/// results can be checked against it (tests/torch/sklearn_reference.py
/// produces the reference values with Debian's python3-sklearn; the
/// tolerances are stated in docs/ml.md):
/// - standard_scaler: StandardScaler (population standard deviation; a
///   constant column keeps scale 1).
/// - tfidf_vectorizer: TfidfVectorizer with its defaults: lower-casing as
///   Python's str.lower(), tokens = runs of two or more word characters
///   (the pattern `(?u)\b\w\w+\b`), vocabulary sorted, smooth idf
///   ln((1 + n) / (1 + df)) + 1, raw counts × idf, rows L2-normalised.
///   Dense output.
/// - logistic_regression: LogisticRegression(penalty="l2", solver="lbfgs"):
///   minimises sum of log losses + ||W||² / (2C), the intercept not
///   penalised; two classes use one weight vector (sigmoid), more use the
///   multinomial (softmax) model.
/// - kmeans: KMeans(algorithm="lloyd") with explicit initial centres or
///   k-means++ seeding; stops when the centres move less than `tol` times
///   the mean feature variance (squared shift, summed) or labels no longer
///   change.
///
/// Contract: fitting mutates the object (not thread-safe); once fitted, the
/// const members may be called from any thread at once. Errors are values:
/// wrong types or shapes, calls before `fit`, non-finite inputs and empty
/// data are `invalid_argument`. Nothing throws.

#include <aise/error.hpp>
#include <aise/ml.hpp>
#include <aise/torch_export.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace aise::ml {

class AISE_TORCH_EXPORT standard_scaler {
 public:
  /// Learns per-column mean and scale of float32 [samples, features].
  result<void> fit(const tensor& x);
  /// (x - mean) / scale, float32 of the same shape.
  [[nodiscard]] result<tensor> transform(const tensor& x) const;
  result<tensor> fit_transform(const tensor& x);
  [[nodiscard]] const std::vector<double>& mean() const noexcept { return mean_; }
  [[nodiscard]] const std::vector<double>& scale() const noexcept { return scale_; }

 private:
  std::vector<double> mean_, scale_;
};

struct AISE_TORCH_EXPORT tfidf_options {
  bool lower_case = true;
  bool smooth_idf = true;
  bool sublinear_tf = false;  ///< 1 + ln(tf) instead of tf
  bool normalize = true;      ///< rows scaled to unit L2 norm
  std::size_t min_df = 1;     ///< terms in fewer documents are dropped
};

class AISE_TORCH_EXPORT tfidf_vectorizer {
 public:
  explicit tfidf_vectorizer(tfidf_options options = {}) : options_(options) {}
  /// Learns the vocabulary and idf of UTF-8 documents (at least one).
  result<void> fit(std::span<const std::string> documents);
  /// float32 [documents, vocabulary]; unknown terms are ignored.
  [[nodiscard]] result<tensor> transform(std::span<const std::string> documents) const;
  result<tensor> fit_transform(std::span<const std::string> documents);
  /// The terms in column order (sorted, as scikit-learn's).
  [[nodiscard]] const std::vector<std::string>& vocabulary() const noexcept { return terms_; }
  [[nodiscard]] const std::vector<double>& idf() const noexcept { return idf_; }

 private:
  tfidf_options options_;
  std::vector<std::string> terms_;
  std::vector<double> idf_;
};

struct AISE_TORCH_EXPORT logistic_options {
  double c = 1.0;  ///< inverse regularisation strength (> 0)
  bool fit_intercept = true;
  int max_iter = 1000;
  double tol = 1e-9;  ///< L-BFGS gradient tolerance
};

class AISE_TORCH_EXPORT logistic_regression {
 public:
  explicit logistic_regression(logistic_options options = {}) : options_(options) {}
  /// x float32 [samples, features]; y int64 [samples] with at least two
  /// distinct values (the classes, sorted).
  result<void> fit(const tensor& x, const tensor& y);
  /// float32 [samples, classes].
  [[nodiscard]] result<tensor> predict_proba(const tensor& x) const;
  /// int64 [samples]: the most probable class of each.
  [[nodiscard]] result<tensor> predict(const tensor& x) const;
  [[nodiscard]] const std::vector<std::int64_t>& classes() const noexcept { return classes_; }
  /// [1, features] for two classes, [classes, features] otherwise (coef_).
  [[nodiscard]] const tensor& coef() const noexcept { return coef_; }
  [[nodiscard]] const std::vector<double>& intercept() const noexcept { return intercept_; }
  [[nodiscard]] int iterations() const noexcept { return iterations_; }

 private:
  logistic_options options_;
  std::vector<std::int64_t> classes_;
  tensor coef_;
  std::vector<double> intercept_;
  int iterations_ = 0;
};

struct AISE_TORCH_EXPORT kmeans_options {
  std::size_t k = 8;
  int max_iter = 300;
  double tol = 1e-4;
  /// Initial centres float32 [k, features]; unset: k-means++ with `seed`.
  std::optional<tensor> init;
  std::uint64_t seed = 0;
};

class AISE_TORCH_EXPORT kmeans {
 public:
  explicit kmeans(kmeans_options options = {}) : options_(std::move(options)) {}
  /// Clusters float32 [samples, features] (samples >= k).
  result<void> fit(const tensor& x);
  /// int64 [samples]: the nearest centre of each.
  [[nodiscard]] result<tensor> predict(const tensor& x) const;
  [[nodiscard]] const tensor& centers() const noexcept { return centers_; }
  /// The label of each training sample.
  [[nodiscard]] const std::vector<std::int64_t>& labels() const noexcept { return labels_; }
  /// Sum of squared distances of the samples to their centres.
  [[nodiscard]] double inertia() const noexcept { return inertia_; }
  [[nodiscard]] int iterations() const noexcept { return iterations_; }

 private:
  kmeans_options options_;
  tensor centers_;
  std::vector<std::int64_t> labels_;
  double inertia_ = 0;
  int iterations_ = 0;
};

}  // namespace aise::ml
