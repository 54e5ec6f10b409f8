// aise::torch with real LibTorch: each test builds its own small TorchScript
// models in C++ (torch::jit::Module, define, save), loads them through the
// hook and compares with LibTorch called directly.
// LibTorch first: its logging headers define CHECK, which doctest's must
// replace.
#include <torch/script.h>
#undef CHECK

#include <aise/ml.hpp>
#include <aise/orchestrator.hpp>
#include <aise/runtime.hpp>
#include <aise/task_context.hpp>
#include <aise/text.hpp>
#include <aise/torch.hpp>
#include <aise/wordpiece.hpp>

#include <atomic>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <thread>
#include <unistd.h>

#include "unit/test_util.hpp"

using namespace aise;
namespace fs = std::filesystem;

namespace {

/// A scratch directory removed at the end of the test.
struct scratch {
  fs::path dir;
  scratch() {
    dir = fs::temp_directory_path() /
          ("aise-torch-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    fs::create_directories(dir);
  }
  ~scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  scratch(const scratch&) = delete;
  scratch& operator=(const scratch&) = delete;
  static std::atomic<int>& counter() {
    static std::atomic<int> n{0};
    return n;
  }
};

/// y = x W + b, W [4, 3], b [3]: fixed pseudo-random weights.
fs::path save_linear(const fs::path& dir, const std::string& meta = "",
                     const std::string& name = "linear.pt") {
  ::torch::manual_seed(7);
  ::torch::jit::Module m("Linear");
  m.register_parameter("w", ::torch::randn({4, 3}), false);
  m.register_parameter("b", ::torch::randn({3}), false);
  m.define(R"(
def forward(self, x):
    return torch.matmul(x, self.w) + self.b
)");
  const fs::path file = dir / name;
  ::torch::jit::ExtraFilesMap extra;
  if (!meta.empty()) extra["aise.json"] = meta;
  m.save(file.string(), extra);
  return file;
}

ml::tensor floats(std::vector<std::int64_t> shape, std::vector<float> data) {
  auto t = ml::tensor::of(std::move(shape), std::move(data));
  REQUIRE(t);
  return std::move(*t);
}

std::vector<float> direct(const fs::path& file, const std::vector<float>& x, std::int64_t rows) {
  auto m = ::torch::jit::load(file.string());
  m.eval();
  ::torch::NoGradGuard guard;
  auto in = ::torch::from_blob(const_cast<float*>(x.data()), {rows, 4}, ::torch::kFloat32).clone();
  auto out = m.forward({in}).toTensor().contiguous();
  return {out.data_ptr<float>(), out.data_ptr<float>() + out.numel()};
}

std::shared_ptr<ml::model> load(const fs::path& file, ml::load_options o = {}) {
  auto backend = aise::torch::make_torchscript_backend();
  auto m = backend->load(file, o);
  REQUIRE_MESSAGE(m, m.error().describe());
  return *m;
}

}  // namespace

TEST_CASE("torch: a TorchScript model gives what LibTorch gives, with its info") {
  scratch s;
  const auto file = save_linear(s.dir, R"({"labels": ["bug", "feature", "question"]})");
  auto m = load(file, {.name = "triage", .warm_up = {floats({1, 4}, {0, 0, 0, 0})}});
  CHECK(m->info().name == "triage");
  CHECK(m->info().backend == "torchscript");
  CHECK(m->info().device == "cpu");
  CHECK(m->info().source == file.string());
  CHECK(m->info().signature.find("forward") != std::string::npos);
  CHECK(m->info().metadata.at("labels").size() == 3);

  const std::vector<float> x{0.5F, -1.0F, 2.0F, 0.25F, 1.0F, 1.0F, -3.0F, 0.0F};
  auto out = m->run({floats({2, 4}, x)});
  REQUIRE(out);
  REQUIRE(out->size() == 1);
  CHECK((*out)[0].shape() == std::vector<std::int64_t>{2, 3});
  const auto want = direct(file, x, 2);
  REQUIRE(want.size() == 6);
  for (std::size_t i = 0; i < want.size(); ++i) CHECK((*out)[0].floats()[i] == want[i]);
  CHECK(aise::torch::version().rfind("1.", 0) == 0);
}

TEST_CASE("torch: tuple outputs, integer tensors, and the file stem as name") {
  scratch s;
  ::torch::jit::Module m("Pair");
  m.define(R"(
def forward(self, x, ids):
    return (x * 2.0, ids + 1, [ids > 1])
)");
  const fs::path file = s.dir / "pair.pt";
  m.save(file.string());
  auto model = load(file);
  CHECK(model->info().name == "pair");
  CHECK(model->info().metadata.empty());
  auto ids = ml::tensor::of({3}, std::vector<std::int64_t>{0, 1, 2});
  REQUIRE(ids);
  auto out = model->run({floats({3}, {1, 2, 3}), *ids});
  REQUIRE(out);
  REQUIRE(out->size() == 3);
  CHECK(std::vector<float>((*out)[0].floats().begin(), (*out)[0].floats().end()) ==
        std::vector<float>{2, 4, 6});
  CHECK((*out)[1].type() == ml::dtype::int64);
  CHECK(std::vector<std::int64_t>((*out)[1].ints().begin(), (*out)[1].ints().end()) ==
        std::vector<std::int64_t>{1, 2, 3});
  CHECK(std::vector<std::int64_t>((*out)[2].ints().begin(), (*out)[2].ints().end()) ==
        std::vector<std::int64_t>{0, 0, 1});  // bool comes back as int64
}

TEST_CASE("torch: bad files, bad inputs and absent devices are clear errors") {
  scratch s;
  auto backend = aise::torch::make_torchscript_backend();
  auto missing = backend->load(s.dir / "nope.pt", {});
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code() == errc::not_found);

  const fs::path junk = s.dir / "junk.pt";
  {
    std::ofstream out(junk, std::ios::binary);
    out << "this is not a zip archive";
  }
  auto corrupt = backend->load(junk, {});
  REQUIRE_FALSE(corrupt);
  CHECK(corrupt.error().code() == errc::invalid_argument);
  CHECK(corrupt.error().message().find("not a loadable TorchScript model") != std::string::npos);
  CHECK(corrupt.error().message().find('\n') == std::string::npos);  // one line, no stack

  const auto file = save_linear(s.dir);
  // A truncated copy of a real model.
  const fs::path cut = s.dir / "cut.pt";
  fs::copy_file(file, cut);
  fs::resize_file(cut, fs::file_size(file) / 2);
  CHECK_FALSE(backend->load(cut, {}));

  auto bad_meta_file = save_linear(s.dir, "{not json", "bad-meta.pt");
  auto bad_meta = backend->load(bad_meta_file, {});
  REQUIRE_FALSE(bad_meta);
  CHECK(bad_meta.error().message().find("aise.json") != std::string::npos);

  if (!aise::torch::cuda_available()) {
    auto cuda = backend->load(file, {.device = "cuda"});
    REQUIRE_FALSE(cuda);
    CHECK(cuda.error().code() == errc::unavailable);
    CHECK(load(file, {.device = "auto"})->info().device == "cpu");
  }
  auto nonsense = backend->load(file, {.device = "toaster"});
  REQUIRE_FALSE(nonsense);
  CHECK(nonsense.error().code() == errc::invalid_argument);

  // A warm-up with the wrong shape fails the load.
  auto warm = backend->load(file, {.warm_up = {floats({1, 5}, {1, 2, 3, 4, 5})}});
  REQUIRE_FALSE(warm);
  CHECK(warm.error().message().find("warm-up") != std::string::npos);

  auto m = load(file);
  auto wrong = m->run({floats({2, 5}, std::vector<float>(10, 1.0F))});
  REQUIRE_FALSE(wrong);
  CHECK(wrong.error().code() == errc::invalid_argument);
  CHECK(wrong.error().message().find('\n') == std::string::npos);
  auto too_many = m->run({floats({1, 4}, {1, 2, 3, 4}), floats({1, 4}, {1, 2, 3, 4})});
  REQUIRE_FALSE(too_many);
  CHECK(too_many.error().code() == errc::invalid_argument);
  CHECK(m->run({floats({1, 4}, {1, 2, 3, 4})}));  // the model still works

  ::torch::jit::Module odd("Odd");
  odd.define(R"(
def forward(self, x):
    return 3
)");
  const fs::path odd_file = s.dir / "odd.pt";
  odd.save(odd_file.string());
  auto odd_out = load(odd_file)->run({floats({1}, {1})});
  REQUIRE_FALSE(odd_out);
  CHECK(odd_out.error().message().find("only tensors") != std::string::npos);
}

TEST_CASE("torch: sixteen callers share one model through the batcher") {
  scratch s;
  const auto file = save_linear(s.dir);
  auto plain = load(file);
  auto batched =
      *ml::make_batched(plain, {.max_batch = 16, .max_wait = std::chrono::milliseconds(20)});
  constexpr int callers = 16;
  std::vector<std::thread> threads;
  std::atomic<int> same{0};
  for (int c = 0; c < callers; ++c) {
    threads.emplace_back([&, c] {
      const auto v = static_cast<float>(c);
      ml::tensors in{floats({1, 4}, {v, -v, v / 2, 1.0F})};
      auto alone = plain->run(in);
      auto together = batched->run(in);
      if (alone && together && (*alone)[0].floats().size() == 3) {
        bool equal = true;
        for (std::size_t i = 0; i < 3; ++i) {
          equal = equal && std::abs((*alone)[0].floats()[i] - (*together)[0].floats()[i]) < 1e-5F;
        }
        if (equal) ++same;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(same.load() == callers);
  CHECK(batched->stats().calls == callers);
  CHECK(batched->stats().batches < callers);  // merged
}

TEST_CASE("torch: an agent classifies tasks with a registered model and survives bad input") {
  scratch s;
  ::torch::manual_seed(11);
  // Embedding [vocab, 8] → mean over the real tokens (in C++) → linear → 2 labels.
  ::torch::jit::Module enc("Encoder");
  enc.register_parameter("emb", ::torch::randn({400, 8}), false);
  enc.define(R"(
def forward(self, ids, mask):
    return torch.embedding(self.emb, ids)
)");
  const fs::path enc_file = s.dir / "encoder.pt";
  enc.save(enc_file.string());
  ::torch::jit::Module head("Head");
  head.register_parameter("w", ::torch::randn({8, 2}), false);
  head.define(R"(
def forward(self, x):
    return torch.matmul(x, self.w)
)");
  const fs::path head_file = s.dir / "head.pt";
  head.save(head_file.string(), {{"aise.json", R"({"labels": ["bug", "feature"]})"}});

  std::vector<std::string> vocab{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "crash", "on",
                                 "start", "add",   "dark",  "mode",  "please"};
  auto made = ml::wordpiece_tokenizer::from_tokens(vocab);
  REQUIRE(made);
  auto tokenizer = std::make_shared<ml::wordpiece_tokenizer>(std::move(*made));

  runtime rt(test::quiet_options());
  auto registry = ml::models(rt);
  REQUIRE(registry->add("encoder", load(enc_file)));
  REQUIRE(registry->add("head", load(head_file)));

  class classifier : public agent {
   public:
    explicit classifier(std::shared_ptr<ml::wordpiece_tokenizer> tok) : tok_(std::move(tok)) {
      on_task("classify", [this](task_context& ctx) -> result<nlohmann::json> {
        auto models = ml::models(rt());
        auto encoder = models->find("encoder");
        auto head = models->find("head");
        if (!encoder || !head) return error(errc::not_found, "models missing");
        // The text as given, or (to send bytes that are not UTF-8 through
        // a JSON payload) as a list of byte values.
        std::string text;
        if (ctx.payload().contains("bytes")) {
          for (int b : ctx.payload().at("bytes")) text.push_back(static_cast<char>(b));
        } else {
          text = ctx.payload().at("text");
        }
        auto inputs = tok_->encode_batch(std::vector<std::string>{text});
        if (!inputs) return inputs.error();
        auto hidden = (*encoder)->run({(*inputs)[0], (*inputs)[1]});
        if (!hidden) return hidden.error();
        auto pooled = ml::mean_pool((*hidden)[0], (*inputs)[1]);
        if (!pooled) return pooled.error();
        auto logits = (*head)->run({*pooled});
        if (!logits) return logits.error();
        auto p = ml::softmax((*logits)[0]);
        if (!p) return p.error();
        const auto& labels = (*head)->info().metadata.at("labels");
        const bool second = p->floats()[1] > p->floats()[0];
        return nlohmann::json{{"label", labels[second ? 1 : 0]},
                              {"p", std::vector<float>(p->floats().begin(), p->floats().end())}};
      });
    }

   private:
    std::shared_ptr<ml::wordpiece_tokenizer> tok_;
  };

  orchestrator orch(rt);
  REQUIRE(orch.register_kind("classifier",
                             [tokenizer] { return std::make_unique<classifier>(tokenizer); }));
  REQUIRE(orch.spawn({.kind = "classifier", .name = "c1", .project = "p"}));

  auto run_task = [&](nlohmann::json payload) {
    auto id = orch.submit(
        {.project = "p", .kind = "classify", .payload = std::move(payload), .max_attempts = 1});
    REQUIRE(id);
    auto done = orch.wait(*id, test::deadline);
    REQUIRE(done);
    return *done;
  };

  // The expected answer, computed with LibTorch directly.
  auto expected_p = [&](const std::vector<std::int64_t>& ids) {
    ::torch::NoGradGuard g;
    auto e = ::torch::jit::load(enc_file.string());
    auto h = ::torch::jit::load(head_file.string());
    auto ids_t = ::torch::tensor(ids, ::torch::kInt64).unsqueeze(0);
    auto emb = e.forward({ids_t, ::torch::ones_like(ids_t)}).toTensor();
    auto pooled = emb.mean(1);
    return ::torch::softmax(h.forward({pooled}).toTensor(), 1).contiguous();
  };

  const task good = run_task({{"text", "Crash on start"}});
  REQUIRE(good.state == task_state::succeeded);
  auto ids = tokenizer->encode("Crash on start")->ids;
  CHECK(ids == std::vector<std::int64_t>{2, 4, 5, 6, 3});
  auto want = expected_p(ids);
  CHECK((*good.result)["p"][0].get<float>() ==
        doctest::Approx(want[0][0].item<float>()).epsilon(1e-5));
  CHECK((*good.result)["p"][1].get<float>() ==
        doctest::Approx(want[0][1].item<float>()).epsilon(1e-5));
  CHECK((*good.result)["label"] ==
        (want[0][1].item<float>() > want[0][0].item<float>() ? "feature" : "bug"));

  // The library's text classifier (tokenizer → encoder → pooling → head →
  // softmax) gives the same answer as the agent's hand-wired pipeline.
  auto text_enc = ml::text_encoder::make(tokenizer, *registry->find("encoder"));
  REQUIRE(text_enc);
  auto classifier_made = ml::text_classifier::make(*text_enc, *registry->find("head"));
  REQUIRE(classifier_made);
  CHECK(classifier_made->labels() == std::vector<std::string>{"bug", "feature"});
  auto predicted = classifier_made->classify("Crash on start");
  REQUIRE(predicted);
  CHECK(predicted->label == (*good.result)["label"]);
  CHECK(predicted->scores[0] == doctest::Approx(want[0][0].item<float>()).epsilon(1e-5));

  // Invalid UTF-8 fails that task with a clear error; the agent keeps working.
  const task bad = run_task({{"bytes", {99, 97, 102, 0xc3}}});  // "caf" + half of "é"
  CHECK(bad.state == task_state::failed);
  REQUIRE(bad.error);
  CHECK(bad.error->message().find("not valid UTF-8") != std::string::npos);
  CHECK(run_task({{"text", "add dark mode please"}}).state == task_state::succeeded);
  CHECK(rt.shutdown());
}
