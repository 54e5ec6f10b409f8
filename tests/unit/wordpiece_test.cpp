// The WordPiece tokenizer against BERT's reference tokenizer: every case in
// data/wordpiece_vectors.json was produced by google-research/bert's
// tokenization.py (see data/gen_wordpiece_vectors.py), on two vocabularies
// and with and without lower-casing.
#include <aise/wordpiece.hpp>

#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

using namespace aise;
using namespace aise::ml;

namespace {

const nlohmann::json& vectors() {
  static const nlohmann::json v = [] {
    std::ifstream in(std::filesystem::path(AISE_TEST_DATA_DIR) / "wordpiece_vectors.json");
    REQUIRE(in);
    return nlohmann::json::parse(in);
  }();
  return v;
}

wordpiece_tokenizer make(const std::string& vocab, bool lower) {
  auto t = wordpiece_tokenizer::from_tokens(
      vectors().at("vocabularies").at(vocab).get<std::vector<std::string>>(),
      {.lower_case = lower});
  REQUIRE(t);
  return std::move(*t);
}

// "a|b|c": readable in a failure message.
std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& t : v) out += (out.empty() ? "" : "|") + t;
  return out;
}

}  // namespace

TEST_CASE("wordpiece: matches BERT's reference tokenizer on every vector") {
  const auto& cases = vectors().at("cases");
  REQUIRE(cases.size() > 300);
  std::map<std::pair<std::string, bool>, wordpiece_tokenizer> tokenizers;
  int checked = 0;
  for (const auto& c : cases) {
    const std::string vocab = c.at("vocab");
    const bool lower = c.at("lower_case");
    auto key = std::pair{vocab, lower};
    if (tokenizers.count(key) == 0) tokenizers.emplace(key, make(vocab, lower));
    const auto& tok = tokenizers.at(key);
    const std::string text = c.at("text");
    auto tokens = tok.tokenize(text);
    REQUIRE(tokens);
    INFO("text: ", text, " vocab: ", vocab, " lower: ", lower);
    CHECK(joined(*tokens) == joined(c.at("tokens").get<std::vector<std::string>>()));
    auto enc = tok.encode(text);
    REQUIRE(enc);
    auto ids = c.at("ids").get<std::vector<std::int64_t>>();
    ids.insert(ids.begin(), *tok.id_of("[CLS]"));
    ids.push_back(*tok.id_of("[SEP]"));
    CHECK(enc->ids == ids);
    ++checked;
  }
  CHECK(checked == static_cast<int>(cases.size()));
}

TEST_CASE("wordpiece: the examples of BERT's README and tests") {
  auto tok = make("pieces", true);
  CHECK(*tok.tokenize("unaffable") == std::vector<std::string>{"un", "##aff", "##able"});
  CHECK(*tok.tokenize("John Johanson's house") ==
        std::vector<std::string>{"john", "johan", "##son", "'", "s", "house"});
  CHECK(*tok.tokenize("UNwant\u00E9d,running") ==
        std::vector<std::string>{"un", "##want", "##ed", ",", "runn", "##ing"});
  CHECK(*tok.tokenize("ah\u535A\u63A8zz") == std::vector<std::string>{"ah", "博", "推", "zz"});
  CHECK(tok.tokenize("")->empty());
}

TEST_CASE("wordpiece: special tokens, truncation, padding, pairs and batches") {
  auto tok = make("pieces", true);
  const auto cls = *tok.id_of("[CLS]");
  const auto sep = *tok.id_of("[SEP]");
  const auto pad = *tok.id_of("[PAD]");

  auto e = tok.encode("review the code", 8, true);
  REQUIRE(e);
  CHECK(e->tokens == std::vector<std::string>{"[CLS]", "review", "the", "code", "[SEP]", "[PAD]",
                                              "[PAD]", "[PAD]"});
  CHECK(e->attention_mask == std::vector<std::int64_t>{1, 1, 1, 1, 1, 0, 0, 0});
  CHECK(e->ids.front() == cls);
  CHECK(e->ids[4] == sep);
  CHECK(e->ids.back() == pad);

  auto cut = tok.encode("review the code and fix the bug", 5);
  REQUIRE(cut);
  CHECK(cut->tokens == std::vector<std::string>{"[CLS]", "review", "the", "code", "[SEP]"});
  CHECK_FALSE(tok.encode("x", 1));

  // Longest first: a is 4 tokens (fix the bug [UNK]), b is 3 (run test ##s);
  // room for 4: a, then b (a tie), then a lose one.
  auto p = tok.encode_pair("fix the bug now", "run tests", 7);
  REQUIRE(p);
  CHECK(joined(p->tokens) == "[CLS]|fix|the|[SEP]|run|test|[SEP]");
  CHECK(p->type_ids == std::vector<std::int64_t>{0, 0, 0, 0, 1, 1, 1});
  CHECK_FALSE(tok.encode_pair("a", "b", 2));

  std::vector<std::string> texts{"hello", "review the code", "fix"};
  auto batch = tok.encode_batch(texts);
  REQUIRE(batch);
  REQUIRE(batch->size() == 3);
  const tensor& ids = (*batch)[0];
  const tensor& mask = (*batch)[1];
  CHECK(ids.shape() == std::vector<std::int64_t>{3, 5});
  CHECK(ids.ints()[0] == cls);
  CHECK(ids.ints()[2] == sep);
  CHECK(ids.ints()[3] == pad);
  CHECK(std::vector<std::int64_t>(mask.ints().begin(), mask.ints().begin() + 5) ==
        std::vector<std::int64_t>{1, 1, 1, 0, 0});
  CHECK_FALSE(tok.encode_batch({}));
}

TEST_CASE("wordpiece: bad input gets a clear error") {
  auto tok = make("pieces", true);
  for (std::string bad : {std::string("\xff"), std::string("ab\xc3"), std::string("\xc0\xaf"),
                          std::string("\xed\xa0\x80"), std::string("\xf4\x90\x80\x80")}) {
    auto r = tok.tokenize(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().code() == errc::invalid_argument);
    CHECK(r.error().message().find("not valid UTF-8") != std::string::npos);
  }
  auto r = tok.tokenize("ok \xff");
  REQUIRE_FALSE(r);
  CHECK(r.error().message().find("byte 3") != std::string::npos);
  CHECK(tok.tokenize("still fine"));  // and it keeps working

  CHECK_FALSE(wordpiece_tokenizer::from_tokens({}));
  auto dup = wordpiece_tokenizer::from_tokens({"[UNK]", "[CLS]", "[SEP]", "[PAD]", "a", "a"});
  REQUIRE_FALSE(dup);
  CHECK(dup.error().message().find("appears twice") != std::string::npos);
  auto no_unk = wordpiece_tokenizer::from_tokens({"[CLS]", "[SEP]", "[PAD]", "a"});
  REQUIRE_FALSE(no_unk);
  CHECK(no_unk.error().message().find("[UNK]") != std::string::npos);
  auto missing = wordpiece_tokenizer::from_file("/nonexistent/vocab.txt");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code() == errc::not_found);
}

TEST_CASE("wordpiece: reads vocab.txt as BERT does") {
  const auto path = std::filesystem::temp_directory_path() /
                    ("aise-vocab-" + std::to_string(::getpid()) + ".txt");
  {
    std::ofstream out(path, std::ios::binary);
    out << "[PAD]\r\n[UNK]\n [CLS] \n[SEP]\nhello\n##s\n";
  }
  auto tok = wordpiece_tokenizer::from_file(path);
  std::filesystem::remove(path);
  REQUIRE(tok);
  CHECK(tok->vocab_size() == 6);
  CHECK(tok->id_of("[CLS]") == 2);
  CHECK(tok->token_of(5) == "##s");
  CHECK(tok->token_of(6).empty());
  CHECK(*tok->tokenize("Hellos") == std::vector<std::string>{"hello", "##s"});
}
