// The local LLM provider with a real TorchScript causal "language model"
// built here: its logits at each position favour the next token id, so
// greedy generation is predictable.
#include <torch/script.h>
#undef CHECK

#include <aise/llm.hpp>
#include <aise/torch.hpp>

#include <doctest/doctest.h>
#include <filesystem>
#include <unistd.h>

using namespace aise;
namespace fs = std::filesystem;

namespace {

const std::vector<std::string> vocab{"[PAD]", "[UNK]", "[CLS]", "user",  "assistant", ":",
                                     "hello", "world", "##s",   "[SEP]", "extra"};

/// logits[t] = W[ids[t]] with W[i][i + 1] = 10: "the next id" wins.
std::shared_ptr<ml::model> next_token_model(const fs::path& dir, double scale = 10.0) {
  const auto v = static_cast<std::int64_t>(vocab.size());
  auto w = ::torch::zeros({v, v});
  for (std::int64_t i = 0; i + 1 < v; ++i) w[i][i + 1] = scale;
  ::torch::jit::Module m("NextToken");
  m.register_parameter("w", w, false);
  m.define(R"(
def forward(self, ids):
    return torch.embedding(self.w, ids)
)");
  const fs::path file = dir / ("next-" + std::to_string(static_cast<int>(scale)) + ".pt");
  m.save(file.string());
  auto loaded = aise::torch::make_torchscript_backend()->load(file, {.name = "next-token"});
  REQUIRE(loaded);
  return *loaded;
}

std::shared_ptr<const ml::wordpiece_tokenizer> tokenizer() {
  auto t = ml::wordpiece_tokenizer::from_tokens(vocab);
  REQUIRE(t);
  return std::make_shared<const ml::wordpiece_tokenizer>(std::move(*t));
}

llm::chat_request hello() {
  llm::chat_request r;
  r.messages.push_back({.role = "user", .content = "hello"});
  return r;
}

struct scratch_dir {
  fs::path path = fs::temp_directory_path() / ("aise-local-llm-" + std::to_string(::getpid()));
  scratch_dir() { fs::create_directories(path); }
  ~scratch_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

}  // namespace

TEST_CASE("local llm: greedy generation, streaming, stop tokens and usage") {
  scratch_dir dir;
  auto p = llm::make_local_provider(next_token_model(dir.path), tokenizer());
  REQUIRE(p);
  CHECK((*p)->name() == "local");
  std::vector<std::string> pieces;
  auto r = (*p)->chat(hello(), [&](std::string_view s) { pieces.emplace_back(s); });
  REQUIRE(r);
  // Prompt "user: hello\\nassistant:" ends with ":" (id 5): then 6, 7, 8, and 9 is [SEP].
  CHECK(r->reply.content == "hello worlds");
  CHECK(pieces == std::vector<std::string>{"hello", " world", "s"});
  CHECK(r->finish_reason == "stop");
  CHECK(r->used.prompt_tokens == 5);
  CHECK(r->used.completion_tokens == 3);
  CHECK(r->model == "next-token");

  auto short_reply = hello();
  short_reply.max_tokens = 2;
  auto cut = (*p)->chat(short_reply);
  REQUIRE(cut);
  CHECK(cut->reply.content == "hello world");
  CHECK(cut->finish_reason == "length");

  auto stopped = hello();
  stopped.stop = {"world"};
  CHECK((*p)->chat(stopped)->reply.content == "hello world");
}

TEST_CASE("local llm: top-k and top-p sampling, seeds") {
  scratch_dir dir;
  auto model = next_token_model(dir.path);
  auto req = hello();
  req.temperature = 1.0;
  // k = 1 and a tiny p both leave only the most probable token: greedy.
  for (auto o :
       {llm::local_options{.top_k = 1, .seed = 3}, llm::local_options{.top_p = 0.01, .seed = 3}}) {
    auto p = llm::make_local_provider(model, tokenizer(), o);
    REQUIRE(p);
    CHECK((*p)->chat(req)->reply.content == "hello worlds");
  }
  // A flat model: sampling decides; the same seed gives the same text.
  auto flat = next_token_model(dir.path, 0.0);
  auto a = llm::make_local_provider(flat, tokenizer(), {.max_tokens = 12, .seed = 99});
  auto b = llm::make_local_provider(flat, tokenizer(), {.max_tokens = 12, .seed = 99});
  auto r1 = (*a)->chat(req);
  auto r2 = (*b)->chat(req);
  REQUIRE(r1);
  REQUIRE(r2);
  CHECK(r1->reply.content == r2->reply.content);
  CHECK_FALSE(llm::make_local_provider(flat, tokenizer(), {.top_p = 0}));
  CHECK_FALSE(llm::make_local_provider(flat, tokenizer(), {.stop_tokens = {"nope"}}));
}

TEST_CASE("local llm: bad models and requests are clear errors, and budgets apply") {
  scratch_dir dir;
  ::torch::jit::Module wrong("Wrong");
  wrong.define(R"(
def forward(self, ids):
    return ids.float()
)");
  const fs::path file = dir.path / "wrong.pt";
  wrong.save(file.string());
  auto m = aise::torch::make_torchscript_backend()->load(file, {});
  REQUIRE(m);
  auto p = llm::make_local_provider(*m, tokenizer());
  REQUIRE(p);
  auto bad = (*p)->chat(hello());
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code() == errc::invalid_argument);
  CHECK(bad.error().message().find("expected float32 [1,") != std::string::npos);

  auto good = llm::make_local_provider(next_token_model(dir.path), tokenizer());
  REQUIRE(good);
  auto with_tools = hello();
  with_tools.tools.push_back({.name = "x"});
  CHECK_FALSE((*good)->chat(with_tools));
  // An oversized prompt is refused clearly, and the provider keeps working.
  auto small =
      llm::make_local_provider(next_token_model(dir.path), tokenizer(), {.max_context = 4});
  REQUIRE(small);
  auto oversized = (*small)->chat(hello());
  REQUIRE_FALSE(oversized);
  CHECK(oversized.error().code() == errc::invalid_argument);
  CHECK(oversized.error().message().find("more than the model's max_context of 4") !=
        std::string::npos);
  auto tiny = hello();
  tiny.messages[0] = {.role = "user", .content = ""};  // "user: \nassistant:" is 4 tokens
  CHECK((*small)->chat(tiny));
  auto bad_text = hello();
  bad_text.messages[0].content = "caf\xc3";
  CHECK_FALSE((*good)->chat(bad_text));

  auto store = make_memory_store();
  REQUIRE(store->set_budget_limit(llm::provider_tokens_key("local"), 10));
  auto budgeted = llm::make_budgeted_provider(*good, {.store = store});
  REQUIRE(budgeted);
  auto req = hello();
  req.project = "p";
  req.max_tokens = 3;  // 2 (5 characters / 4, rounded up) + 3 reserved
  CHECK((*budgeted)->chat(req));
  CHECK(store->get_budget(llm::provider_tokens_key("local"))->spent == 8);  // 5 + 3 used
  CHECK_FALSE((*budgeted)->chat(req));                                      // 8 + 5 > 10
}
