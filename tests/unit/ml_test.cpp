// aise::ml without any ML library: tensors, helpers, the registry (and how
// agents find it), and the dynamic batcher's merging and splitting. The
// batcher is checked here with a plain C++ model that records every batch
// it is given; tests/torch runs it on a real LibTorch model.
#include <aise/ml.hpp>
#include <aise/routing.hpp>
#include <aise/runtime.hpp>
#include <aise/text.hpp>

#include <atomic>
#include <doctest/doctest.h>
#include <thread>

#include "test_util.hpp"

using namespace aise;
using namespace aise::ml;

namespace {

tensor floats(std::vector<std::int64_t> shape, std::vector<float> data) {
  auto t = tensor::of(std::move(shape), std::move(data));
  REQUIRE(t);
  return std::move(*t);
}

/// y = 2x + row index within the batch (so a wrongly split result is
/// visible), plus a second output: the batch size, repeated per row.
class recording_model final : public model {
 public:
  recording_model() { info_.name = "recording"; }
  const model_info& info() const noexcept override { return info_; }
  result<tensors> run(const tensors& inputs) override {
    {
      std::lock_guard lock(mutex_);
      batches_.push_back(inputs.front().rows());
    }
    if (fail_.load()) return error(errc::invalid_argument, "refused on purpose");
    if (throw_.load()) throw std::runtime_error("boom");
    const tensor& x = inputs.front();
    std::vector<float> y(x.floats().begin(), x.floats().end());
    for (auto& v : y) v *= 2;
    std::vector<float> n(static_cast<std::size_t>(x.rows()), static_cast<float>(x.rows()));
    tensors out;
    out.push_back(*tensor::of(x.shape(), std::move(y)));
    if (!unsplittable_.load()) {
      out.push_back(*tensor::of({x.rows()}, std::move(n)));
    } else {
      out.push_back(*tensor::of({1}, std::vector<float>{1.0F}));
    }
    return out;
  }
  std::vector<std::int64_t> batches() {
    std::lock_guard lock(mutex_);
    return batches_;
  }
  std::atomic<bool> fail_{false}, throw_{false}, unsplittable_{false};

 private:
  model_info info_;
  std::mutex mutex_;
  std::vector<std::int64_t> batches_;
};

}  // namespace

TEST_CASE("ml: tensors check their shape and slice and join by rows") {
  CHECK(tensor::of({2, 3}, std::vector<float>(6, 1.0F)));
  auto wrong = tensor::of({2, 3}, std::vector<float>(5, 1.0F));
  REQUIRE_FALSE(wrong);
  CHECK(wrong.error().code() == errc::invalid_argument);
  CHECK(wrong.error().message().find("[2, 3] needs 6 elements, got 5") != std::string::npos);
  CHECK_FALSE(tensor::of({-1}, std::vector<std::int64_t>{}));

  tensor t = floats({3, 2}, {1, 2, 3, 4, 5, 6});
  CHECK(t.describe() == "float32[3, 2]");
  CHECK(t.rows() == 3);
  auto mid = t.slice_rows(1, 2);
  REQUIRE(mid);
  CHECK(mid->shape() == std::vector<std::int64_t>{2, 2});
  CHECK(std::vector<float>(mid->floats().begin(), mid->floats().end()) ==
        std::vector<float>{3, 4, 5, 6});
  CHECK_FALSE(t.slice_rows(2, 2));
  CHECK(t.ints().empty());

  std::vector<tensor> parts{floats({1, 2}, {7, 8}), t};
  auto joined = tensor::concat_rows(parts);
  REQUIRE(joined);
  CHECK(joined->shape() == std::vector<std::int64_t>{4, 2});
  CHECK(joined->floats()[0] == 7);
  CHECK(joined->floats()[7] == 6);
  std::vector<tensor> mismatched{floats({1, 2}, {1, 2}), floats({1, 3}, {1, 2, 3})};
  CHECK_FALSE(tensor::concat_rows(mismatched));
  std::vector<tensor> mixed{floats({1, 1}, {1}), *tensor::of({1, 1}, std::vector<std::int64_t>{1})};
  CHECK_FALSE(tensor::concat_rows(mixed));
}

TEST_CASE("ml: softmax and mean pooling") {
  auto p = softmax(floats({2, 3}, {1, 2, 3, 1000, 1000, 1000}));
  REQUIRE(p);
  CHECK(p->floats()[0] == doctest::Approx(0.09003057));
  CHECK(p->floats()[2] == doctest::Approx(0.66524096));
  CHECK(p->floats()[4] == doctest::Approx(1.0 / 3));  // no overflow
  CHECK_FALSE(softmax(*tensor::of({2}, std::vector<std::int64_t>{1, 2})));

  // [batch 2, tokens 3, width 2]; the second row's last token is padding.
  tensor hidden = floats({2, 3, 2}, {1, 2, 3, 4, 5, 6, 10, 20, 30, 40, 99, 99});
  auto mask = tensor::of({2, 3}, std::vector<std::int64_t>{1, 1, 1, 1, 1, 0});
  REQUIRE(mask);
  auto pooled = mean_pool(hidden, *mask);
  REQUIRE(pooled);
  CHECK(pooled->shape() == std::vector<std::int64_t>{2, 2});
  CHECK(std::vector<float>(pooled->floats().begin(), pooled->floats().end()) ==
        std::vector<float>{3, 4, 20, 30});
  CHECK_FALSE(mean_pool(hidden, *tensor::of({2, 2}, std::vector<std::int64_t>{1, 1, 1, 1})));
}

TEST_CASE("ml: the registry names its models and agents find it through their runtime") {
  model_registry r;
  auto m = std::make_shared<recording_model>();
  CHECK(r.add("ranker", m));
  auto again = r.add("ranker", m);
  REQUIRE_FALSE(again);
  CHECK(again.error().code() == errc::already_exists);
  CHECK_FALSE(r.add("", m));
  CHECK_FALSE(r.add("x", nullptr));
  auto found = r.find("ranker");
  REQUIRE(found);
  CHECK(found->get() == m.get());
  auto missing = r.find("nope");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code() == errc::not_found);
  CHECK(missing.error().message().find("ranker") != std::string::npos);  // names what exists
  auto other = std::make_shared<recording_model>();
  CHECK(r.replace("ranker", other));
  CHECK(r.find("ranker")->get() == other.get());
  CHECK(r.list().size() == 1);
  CHECK(r.remove("ranker"));
  CHECK_FALSE(r.remove("ranker"));

  runtime rt(test::quiet_options());
  auto a = models(rt);
  auto b = models(rt);
  REQUIRE(a);
  CHECK(a.get() == b.get());  // one per runtime
  runtime other_rt(test::quiet_options());
  CHECK(models(other_rt).get() != a.get());
  CHECK(rt.services().find<model_registry>().get() == a.get());
  CHECK(rt.services().find<recording_model>() == nullptr);
}

TEST_CASE("ml: the batcher merges concurrent calls and gives each its own rows") {
  auto inner = std::make_shared<recording_model>();
  auto made = make_batched(inner, {.max_batch = 8, .max_wait = std::chrono::milliseconds(200)});
  REQUIRE(made);
  auto batched = *made;
  constexpr int callers = 16;
  std::vector<std::thread> threads;
  std::atomic<int> right{0};
  for (int c = 0; c < callers; ++c) {
    threads.emplace_back([&, c] {
      const auto v = static_cast<float>(c);
      tensors in{floats({1, 2}, {v, v + 0.5F})};
      auto out = batched->run(in);
      if (out && out->size() == 2 && (*out)[0].floats().size() == 2 &&
          (*out)[0].floats()[0] == 2 * v && (*out)[0].floats()[1] == 2 * v + 1 &&
          (*out)[1].rows() == 1)
        ++right;
    });
  }
  for (auto& t : threads) t.join();
  CHECK(right.load() == callers);
  const auto batches = inner->batches();
  std::int64_t total = 0;
  for (auto b : batches) {
    CHECK(b <= 8);
    total += b;
  }
  CHECK(total == callers);
  CHECK(batches.size() < static_cast<std::size_t>(callers));  // some calls shared a run
  const auto s = batched->stats();
  CHECK(s.calls == callers);
  CHECK(s.rows == callers);
  CHECK(s.batches == batches.size());
  CHECK(s.largest >= 2);
}

TEST_CASE("ml: the batcher keeps calls of different shapes apart and reports errors to each call") {
  auto inner = std::make_shared<recording_model>();
  auto batched = *make_batched(inner, {.max_batch = 16, .max_wait = std::chrono::milliseconds(50)});
  test::notifier sig;
  std::vector<result<tensors>> got;
  auto keep = [&](result<tensors> r) { sig.update([&] { got.push_back(std::move(r)); }); };
  batched->submit({floats({1, 2}, {1, 2})}, keep);
  batched->submit({floats({2, 3}, {1, 2, 3, 4, 5, 6})}, keep);  // other trailing shape
  batched->submit({floats({1, 2}, {3, 4})}, keep);
  REQUIRE(sig.wait([&] { return got.size() == 3; }));
  for (auto& r : got) CHECK(r);
  auto batches = inner->batches();
  std::sort(batches.begin(), batches.end());
  CHECK(batches == std::vector<std::int64_t>{2, 2});  // {1+1 rows of width 2}, {2 rows of width 3}

  // Bad calls are refused at once, on the caller's thread.
  std::optional<result<tensors>> bad;
  batched->submit({floats({2}, {1, 2}), floats({3}, {1, 2, 3})},
                  [&](result<tensors> r) { bad = std::move(r); });
  REQUIRE(bad);
  CHECK(bad->error().code() == errc::invalid_argument);
  bad.reset();
  batched->submit({*tensor::of({}, std::vector<float>{1})},
                  [&](result<tensors> r) { bad = std::move(r); });
  REQUIRE(bad);
  CHECK(bad->error().code() == errc::invalid_argument);

  // The model's error reaches every call of its batch; a throwing model too.
  inner->fail_ = true;
  got.clear();
  batched->submit({floats({1, 2}, {1, 2})}, keep);
  batched->submit({floats({1, 2}, {1, 2})}, keep);
  REQUIRE(sig.wait([&] { return got.size() == 2; }));
  for (auto& r : got) {
    REQUIRE_FALSE(r);
    CHECK(r.error().message() == "refused on purpose");
  }
  inner->fail_ = false;
  inner->throw_ = true;
  auto thrown = batched->run({floats({1, 2}, {1, 2})});
  REQUIRE_FALSE(thrown);
  CHECK(thrown.error().code() == errc::internal);
  CHECK(thrown.error().message().find("boom") != std::string::npos);
  inner->throw_ = false;

  // Outputs without the batch's rows first cannot be split: the batch fails.
  inner->unsplittable_ = true;
  got.clear();
  batched->submit({floats({1, 2}, {1, 2})}, keep);
  batched->submit({floats({1, 2}, {1, 2})}, keep);
  REQUIRE(sig.wait([&] { return got.size() == 2; }));
  for (auto& r : got) {
    REQUIRE_FALSE(r);
    CHECK(r.error().message().find("cannot be split") != std::string::npos);
  }
  inner->unsplittable_ = false;
  CHECK(batched->run({floats({1, 2}, {5, 6})}));  // and it keeps working
}

TEST_CASE("ml: a full batching queue refuses and closing fails what waits") {
  // A model that blocks until released, so calls pile up behind it.
  class gate_model final : public model {
   public:
    gate_model() { info_.name = "gate"; }
    const model_info& info() const noexcept override { return info_; }
    result<tensors> run(const tensors& inputs) override {
      sig.update([&] { ++entered; });
      sig.wait([&] { return open; }, std::chrono::seconds(30));
      return inputs;
    }
    test::notifier sig;
    int entered = 0;
    bool open = false;

   private:
    model_info info_;
  };
  auto inner = std::make_shared<gate_model>();
  auto batched = *make_batched(
      inner, {.max_batch = 1, .max_wait = std::chrono::microseconds(0), .max_queue = 2});
  test::notifier sig;
  std::vector<errc> codes;
  auto keep = [&](result<tensors> r) {
    sig.update([&] { codes.push_back(r ? errc::ok : r.error().code()); });
  };
  batched->submit({floats({1}, {1})}, keep);  // runs and blocks
  REQUIRE(inner->sig.wait([&] { return inner->entered == 1; }));
  batched->submit({floats({1}, {2})}, keep);  // queued
  batched->submit({floats({1}, {3})}, keep);  // queued
  batched->submit({floats({1}, {4})}, keep);  // refused: the queue holds 2
  REQUIRE(sig.wait([&] { return codes.size() == 1; }));
  CHECK(codes[0] == errc::limit_exceeded);
  CHECK(batched->stats().refused == 1);
  std::thread closer([&] { batched->close(); });
  // close() fails the two queued calls, then waits for the running one.
  REQUIRE(sig.wait([&] { return codes.size() == 3; }));
  CHECK(codes[1] == errc::unavailable);
  CHECK(codes[2] == errc::unavailable);
  inner->sig.update([&] { inner->open = true; });
  closer.join();
  REQUIRE(sig.wait([&] { return codes.size() == 4; }));
  CHECK(codes[3] == errc::ok);  // the call that was running finished
  auto late = batched->run({floats({1}, {5})});
  REQUIRE_FALSE(late);
  CHECK(late.error().code() == errc::unavailable);
  CHECK_FALSE(make_batched(inner, {.max_batch = 0}));
  CHECK_FALSE(make_batched(nullptr));
}

TEST_CASE("ml: a callback holding the last reference to its batched model does not deadlock") {
  auto inner = std::make_shared<recording_model>();
  auto batched = *make_batched(inner, {.max_batch = 4, .max_wait = std::chrono::milliseconds(1)});
  test::notifier sig;
  bool called = false;
  // The callback owns the batched model; the test lets go of it at once, so
  // the batcher's thread destroys it when it is done with the callback.
  batched->submit({floats({1, 1}, {1})}, [keep = batched, &sig, &called](result<tensors>) {
    sig.update([&] { called = true; });
  });
  batched.reset();
  REQUIRE(sig.wait([&] { return called; }));
  // Everything is released: the batcher held the model, nothing does now.
  bool released = false;
  for (int i = 0; i < 1000 && !released; ++i) {
    released = inner.use_count() == 1;
    if (!released) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(released);
}

TEST_CASE("ml: run() from a batcher callback is refused instead of waiting for itself") {
  auto inner = std::make_shared<recording_model>();
  auto batched = *make_batched(inner, {.max_batch = 1, .max_wait = std::chrono::microseconds(0)});
  test::notifier sig;
  std::optional<errc> code;
  batched->submit({floats({1, 1}, {1})}, [&](result<tensors>) {
    auto again = batched->run({floats({1, 1}, {2})});
    sig.update([&] { code = again ? errc::ok : again.error().code(); });
  });
  REQUIRE(sig.wait([&] { return code.has_value(); }));
  CHECK(*code == errc::invalid_argument);
  // A lone call gets the same output check as a batch.
  inner->unsplittable_ = true;
  auto alone = batched->run({floats({2, 1}, {1, 2})});
  REQUIRE_FALSE(alone);
  CHECK(alone.error().message().find("cannot be split") != std::string::npos);
  CHECK_FALSE(tensor::of({std::int64_t{1} << 32, std::int64_t{1} << 32, 1}, std::vector<float>{}));
}

TEST_CASE("ml: a batched model dropped inside its own callback shuts down cleanly") {
  auto inner = std::make_shared<recording_model>();
  auto batched = *make_batched(inner, {.max_batch = 4, .max_wait = std::chrono::milliseconds(1)});
  test::notifier sig;
  bool done = false;
  std::shared_ptr<batched_model> holder = batched;
  batched.reset();
  auto* raw = holder.get();
  raw->submit({floats({1, 1}, {1})}, [&](result<tensors> r) {
    CHECK(r);
    holder.reset();  // the last reference, on the batcher's own thread
    sig.update([&] { done = true; });
  });
  REQUIRE(sig.wait([&] { return done; }));
}

// ----------------------------------------------------------------- text --

namespace {

/// Token states [batch, tokens, 2]: (id, 1) per token; or, with `pooled`,
/// already one vector per text. Labels in its metadata.
class toy_encoder final : public model {
 public:
  explicit toy_encoder(bool pooled, std::int64_t width = 2) : pooled_(pooled), width_(width) {
    info_.name = "toy";
    info_.metadata = {{"labels", {"low", "high"}}};
  }
  const model_info& info() const noexcept override { return info_; }
  result<tensors> run(const tensors& in) override {
    if (in.size() != 2) return error(errc::invalid_argument, "two inputs expected");
    const auto b = in[0].shape()[0], t = in[0].shape()[1];
    std::vector<float> out;
    if (pooled_) {
      for (std::int64_t r = 0; r < b; ++r) {
        for (std::int64_t k = 0; k < width_; ++k) out.push_back(static_cast<float>(r + k));
      }
      return tensors{*tensor::of({b, width_}, std::move(out))};
    }
    for (auto id : in[0].ints()) {
      out.push_back(static_cast<float>(id));
      out.push_back(1.0F);
    }
    return tensors{*tensor::of({b, t, 2}, std::move(out))};
  }

 private:
  bool pooled_;
  std::int64_t width_;
  model_info info_;
};

std::shared_ptr<const wordpiece_tokenizer> toy_tokenizer() {
  auto t = wordpiece_tokenizer::from_tokens({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "fix", "bug"});
  REQUIRE(t);
  return std::make_shared<const wordpiece_tokenizer>(std::move(*t));
}

}  // namespace

TEST_CASE("ml: the text encoder pools token states over real tokens only") {
  auto enc = text_encoder::make(toy_tokenizer(), std::make_shared<toy_encoder>(false));
  REQUIRE(enc);
  // "fix bug" → [CLS]=2 fix=4 bug=5 [SEP]=3: mean id 3.5; "fix" → 2 4 3 (+pad): mean 3.
  std::vector<std::string> texts{"fix bug", "fix"};
  auto e = enc->embed(texts);
  REQUIRE(e);
  CHECK(e->shape() == std::vector<std::int64_t>{2, 2});
  CHECK(e->floats()[0] == doctest::Approx(3.5));
  CHECK(e->floats()[2] == doctest::Approx(3.0));  // padding not counted
  CHECK(e->floats()[3] == doctest::Approx(1.0));
  auto one = enc->embed("fix");
  REQUIRE(one);
  CHECK(one->size() == 2);
  auto bad = enc->embed(std::string("\xff"));
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code() == errc::invalid_argument);
  CHECK_FALSE(text_encoder::make(nullptr, std::make_shared<toy_encoder>(false)));
  CHECK_FALSE(text_encoder::make(toy_tokenizer(), nullptr));
}

TEST_CASE("ml: the text classifier labels texts and checks the logits' width") {
  // Pooled vectors (r, r+1) as logits: the second label always wins.
  auto enc = text_encoder::make(toy_tokenizer(), std::make_shared<toy_encoder>(true));
  REQUIRE(enc);
  auto cls = text_classifier::make(*enc);  // labels from the model's metadata
  REQUIRE(cls);
  CHECK(cls->labels() == std::vector<std::string>{"low", "high"});
  auto p = cls->classify("fix the bug");
  REQUIRE(p);
  CHECK(p->label == "high");
  CHECK(p->index == 1);
  REQUIRE(p->scores.size() == 2);
  CHECK(p->scores[1] == doctest::Approx(0.7310586));  // softmax(0, 1)
  CHECK(p->scores[0] + p->scores[1] == doctest::Approx(1.0));

  auto three = text_classifier::make(*enc, nullptr, {"a", "b", "c"});
  REQUIRE(three);
  auto wrong = three->classify("fix");
  REQUIRE_FALSE(wrong);
  CHECK(wrong.error().message().find("3 labels") != std::string::npos);

  // A head that returns fewer rows than texts: a clear error, no overrun.
  class one_row_head final : public model {
   public:
    const model_info& info() const noexcept override { return info_; }
    result<tensors> run(const tensors&) override {
      return tensors{*tensor::of({1, 2}, std::vector<float>{1, 2})};
    }

   private:
    model_info info_;
  };
  auto headed = text_classifier::make(*enc, std::make_shared<one_row_head>(), {"a", "b"});
  REQUIRE(headed);
  std::vector<std::string> many(8, "fix");
  auto short_rows = headed->classify(many);
  REQUIRE_FALSE(short_rows);
  CHECK(short_rows.error().code() == errc::invalid_argument);

  auto wide = text_encoder::make(toy_tokenizer(), std::make_shared<toy_encoder>(true, 5));
  REQUIRE(wide);
  CHECK(text_classifier::make(*wide, nullptr, {"1", "2", "3", "4", "5"})->classify("bug"));
}

// ------------------------------------------------------------- routing --

namespace {

/// Token states where UI words point one way and database words another.
class keyword_encoder final : public model {
 public:
  explicit keyword_encoder(std::shared_ptr<const wordpiece_tokenizer> tok) : tok_(std::move(tok)) {
    info_.name = "keywords";
  }
  const model_info& info() const noexcept override { return info_; }
  result<tensors> run(const tensors& in) override {
    const auto b = in[0].shape()[0], t = in[0].shape()[1];
    std::vector<float> out;
    for (auto id : in[0].ints()) {
      const std::string_view w = tok_->token_of(id);
      const bool ui = w == "css" || w == "button" || w == "layout";
      const bool db = w == "sql" || w == "index" || w == "query";
      out.push_back(ui ? 1.0F : 0.0F);
      out.push_back(db ? 1.0F : 0.0F);
    }
    return tensors{*tensor::of({b, t, 2}, std::move(out))};
  }

 private:
  std::shared_ptr<const wordpiece_tokenizer> tok_;
  model_info info_;
};

}  // namespace

TEST_CASE("ml: the embedding router sends a task to the kind whose description matches") {
  auto made =
      wordpiece_tokenizer::from_tokens({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "css", "button",
                                        "layout", "sql", "index", "query", "fix", "the", "slow"});
  REQUIRE(made);
  auto tok = std::make_shared<const wordpiece_tokenizer>(std::move(*made));
  auto enc = text_encoder::make(tok, std::make_shared<keyword_encoder>(tok));
  REQUIRE(enc);
  auto r = make_embedding_router(*enc, {.kind_descriptions = {{"frontend", "css layout button"},
                                                              {"backend", "sql query index"}},
                                        .min_similarity = 0.5});
  REQUIRE(r);

  runtime rt(test::quiet_options());
  orchestrator_options oo;
  oo.router = *r;
  orchestrator orch(rt, oo);
  class any_worker : public agent {
   public:
    any_worker() {
      on_task("fix", [](task_context&) -> result<nlohmann::json> { return nullptr; });
    }
  };
  for (const char* kind : {"frontend", "backend"})
    REQUIRE(orch.register_kind(kind, [] { return std::make_unique<any_worker>(); }));
  REQUIRE(orch.spawn({.kind = "frontend", .name = "fe"}));
  REQUIRE(orch.spawn({.kind = "backend", .name = "be"}));
  auto run = [&](std::string description) {
    auto id = orch.submit({.kind = "fix", .description = std::move(description)});
    REQUIRE(id);
    auto t = orch.wait(*id, test::deadline);
    REQUIRE(t);
    CHECK(t->state == task_state::succeeded);
    return t->agent;
  };
  for (int i = 0; i < 3; ++i) {
    CHECK(run("fix the slow sql query") == "be");
    CHECK(run("fix the css of the button") == "fe");
    CHECK(run("fix the index") == "be");
  }
  CHECK_FALSE(make_embedding_router(*enc, {}));  // no descriptions
  CHECK(rt.shutdown());
}
