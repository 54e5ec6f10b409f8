// Classic ML against scikit-learn: sklearn_reference.py (run here with
// Debian's python3-sklearn) makes the data and the reference results; the
// same data goes through aise::ml's implementations. Tolerances: scaling
// and TF-IDF 1e-5 (float32 output), logistic regression coefficients 2e-3
// and probabilities 1e-3 (both solvers stop near the same optimum), k-means
// centres 1e-4 with identical labels and inertia within 1e-4 relative.
#include <aise/classic_ml.hpp>

#include <cstdlib>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

using namespace aise;
using namespace aise::ml;
using nlohmann::json;

namespace {

const json& reference() {
  static const json ref = [] {
    const auto out = std::filesystem::temp_directory_path() /
                     ("aise-sklearn-" + std::to_string(::getpid()) + ".json");
    const std::string cmd =
        std::string(AISE_SYSTEM_PYTHON) + " " + AISE_SKLEARN_SCRIPT + " " + out.string();
    const int rc = std::system(cmd.c_str());
    REQUIRE_MESSAGE(rc == 0,
                    "scikit-learn reference failed: is python3-sklearn installed? "
                    "(scripts/setup.sh installs it) command: ",
                    cmd);
    std::ifstream in(out);
    json j = json::parse(in);
    std::filesystem::remove(out);
    return j;
  }();
  return ref;
}

tensor matrix(const json& rows) {
  std::vector<float> data;
  for (const auto& r : rows)
    for (const auto& v : r) data.push_back(v.get<float>());
  return *tensor::of(
      {static_cast<std::int64_t>(rows.size()), static_cast<std::int64_t>(rows.at(0).size())},
      std::move(data));
}

void check_close(std::span<const float> got, const json& want_rows, double tol) {
  std::vector<double> want;
  for (const auto& r : want_rows) {
    if (r.is_array()) {
      for (const auto& v : r) want.push_back(v.get<double>());
    } else {
      want.push_back(r.get<double>());
    }
  }
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    INFO("element ", i);
    CHECK(static_cast<double>(got[i]) == doctest::Approx(want[i]).epsilon(tol).scale(1.0));
  }
}

}  // namespace

TEST_CASE("classic ml: standard scaling agrees with scikit-learn") {
  const auto& r = reference().at("scaler");
  standard_scaler s;
  auto t = s.fit_transform(matrix(r.at("x")));
  REQUIRE(t);
  for (std::size_t i = 0; i < s.mean().size(); ++i) {
    CHECK(s.mean()[i] == doctest::Approx(r.at("mean")[i].get<double>()).epsilon(1e-5));
    CHECK(s.scale()[i] == doctest::Approx(r.at("scale")[i].get<double>()).epsilon(1e-5));
  }
  CHECK(s.scale()[3] == 1.0);  // the constant column
  check_close(t->floats(), r.at("transformed"), 1e-5);
  CHECK_FALSE(standard_scaler{}.transform(matrix(r.at("x"))));  // not fitted
  CHECK_FALSE(s.transform(*tensor::of({1, 2}, std::vector<float>{1, 2})));
  CHECK_FALSE(s.fit(*tensor::of({1, 1}, std::vector<float>{std::nanf("")})));
}

TEST_CASE("classic ml: TF-IDF agrees with scikit-learn, Unicode included") {
  const auto& r = reference().at("tfidf");
  const auto docs = r.at("docs").get<std::vector<std::string>>();
  tfidf_vectorizer v;
  auto m = v.fit_transform(docs);
  REQUIRE(m);
  CHECK(v.vocabulary() == r.at("vocabulary").get<std::vector<std::string>>());
  REQUIRE(v.idf().size() == r.at("idf").size());
  for (std::size_t i = 0; i < v.idf().size(); ++i)
    CHECK(v.idf()[i] == doctest::Approx(r.at("idf")[i].get<double>()).epsilon(1e-9));
  check_close(m->floats(), r.at("matrix"), 1e-5);
  auto unseen = v.transform(r.at("unseen").get<std::vector<std::string>>());
  REQUIRE(unseen);
  check_close(unseen->floats(), r.at("unseen_matrix"), 1e-5);
  auto bad = v.transform(std::vector<std::string>{"ok", std::string("caf\xc3")});
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message().find("document 1") != std::string::npos);
  CHECK_FALSE(tfidf_vectorizer{}.fit(std::vector<std::string>{"a b c"}));  // no 2-char word
}

TEST_CASE("classic ml: logistic regression agrees with scikit-learn") {
  for (const char* name : {"logistic_binary", "logistic_multi"}) {
    INFO(name);
    const auto& r = reference().at(name);
    std::vector<std::int64_t> y = r.at("y").get<std::vector<std::int64_t>>();
    const auto n = static_cast<std::int64_t>(y.size());
    logistic_regression m({.c = r.at("c").get<double>()});
    REQUIRE(m.fit(matrix(r.at("x")), *tensor::of({n}, std::move(y))));
    CHECK(m.classes() == r.at("classes").get<std::vector<std::int64_t>>());
    check_close(m.coef().floats(), r.at("coef"), 2e-3);
    for (std::size_t i = 0; i < m.intercept().size(); ++i)
      CHECK(m.intercept()[i] == doctest::Approx(r.at("intercept")[i].get<double>()).epsilon(2e-3));
    const json& xs = r.at("x");
    json probe = json::array();
    for (int i = 0; i < 10; ++i) probe.push_back(xs[i]);
    auto p = m.predict_proba(matrix(probe));
    REQUIRE(p);
    check_close(p->floats(), r.at("proba"), 1e-3);
    auto predicted = m.predict(matrix(xs));
    REQUIRE(predicted);
    const auto want = r.at("predict").get<std::vector<std::int64_t>>();
    std::size_t same = 0;
    for (std::size_t i = 0; i < want.size(); ++i) same += predicted->ints()[i] == want[i] ? 1 : 0;
    CHECK(same == want.size());
  }
  logistic_regression one;
  auto single = one.fit(*tensor::of({2, 1}, std::vector<float>{1, 2}),
                        *tensor::of({2}, std::vector<std::int64_t>{3, 3}));
  REQUIRE_FALSE(single);
  CHECK(single.error().message().find("two classes") != std::string::npos);
  CHECK_FALSE(one.predict(*tensor::of({1, 1}, std::vector<float>{1})));
}

TEST_CASE("classic ml: k-means agrees with scikit-learn") {
  const auto& r = reference().at("kmeans");
  kmeans km({.k = 3, .init = matrix(r.at("init"))});
  REQUIRE(km.fit(matrix(r.at("x"))));
  check_close(km.centers().floats(), r.at("centers"), 1e-4);
  CHECK(km.labels() == r.at("labels").get<std::vector<std::int64_t>>());
  CHECK(km.inertia() == doctest::Approx(r.at("inertia").get<double>()).epsilon(1e-4));
  auto p = km.predict(matrix(r.at("init")));
  REQUIRE(p);
  CHECK(p->ints().size() == 3);

  // k-means++ (seeded) finds the same three blobs: inertia close to sklearn's.
  kmeans seeded({.k = 3, .seed = 5});
  REQUIRE(seeded.fit(matrix(r.at("x"))));
  CHECK(seeded.inertia() <= r.at("inertia").get<double>() * 1.01);
  CHECK_FALSE(kmeans({.k = 500}).fit(matrix(r.at("x"))));
}
