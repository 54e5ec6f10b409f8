// BERT's tokenizer (google-research/bert tokenization.py: BasicTokenizer +
// WordpieceTokenizer), step by step, on code points:
//   1. clean: drop U+0000, U+FFFD and control characters; whitespace -> ' '
//   2. CJK ideographs get a space on each side
//   3. split on whitespace; per word: lower-case (str.lower), strip accents
//      (NFD without Mn), then split punctuation off as words of their own
//   4. WordPiece per word: longest vocabulary prefix first, the rest as
//      "##" pieces; a word with no complete cover is the unknown token.
#include <aise/wordpiece.hpp>

#include <algorithm>
#include <fmt/format.h>
#include <fstream>
#include <unordered_map>
#include <utility>

#include "ml/unicode.hpp"
#include "ml/unicode_data.hpp"

namespace aise::ml {
namespace {

using detail::decode_utf8;
using detail::in;
using detail::python_lower;
using detail::tables;
using detail::to_utf8;

// ---- character classes (tokenization.py's _is_whitespace etc.) ----

bool is_whitespace(char32_t c) {
  if (c == U' ' || c == U'\t' || c == U'\n' || c == U'\r') return true;
  return in(tables().whitespace, c);
}

// Where Python's str.split() splits besides is_whitespace's characters,
// among those that survive cleaning: LINE and PARAGRAPH SEPARATOR (BERT
// splits words with str.split() but cleans with category Zs only).
bool splits_words(char32_t c) {
  return c == U' ' || c == 0x2028 || c == 0x2029;
}

bool is_control(char32_t c) {
  if (c == U'\t' || c == U'\n' || c == U'\r') return false;
  return in(tables().control, c);
}

bool is_punctuation(char32_t c) {
  // BERT counts every non-alphanumeric ASCII character as punctuation
  // ("^", "$" and "`" are symbols in Unicode).
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
      (c >= 123 && c <= 126))
    return true;
  return in(tables().punctuation, c);
}

bool is_cjk(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// ---- NFD without nonspacing marks ----

std::u32string strip_accents(std::u32string_view w) {
  const auto& t = tables();
  std::u32string out;
  out.reserve(w.size());
  for (char32_t c : w) {
    if (c < 0x80) {
      out.push_back(c);
      continue;
    }
    if (c >= 0xAC00 && c <= 0xD7A3) {  // Hangul syllable: L V (T)
      const char32_t s = c - 0xAC00;
      out.push_back(0x1100 + s / (21 * 28));
      out.push_back(0x1161 + (s % (21 * 28)) / 28);
      if (s % 28 != 0) out.push_back(0x11A7 + s % 28);
      continue;
    }
    if (in(t.nonspacing, c)) continue;
    auto it =
        std::lower_bound(t.strip.begin(), t.strip.end(), c,
                         [](const detail::decomposition& d, char32_t v) { return d.from < v; });
    if (it != t.strip.end() && it->from == c) {
      for (std::uint32_t k = 0; k < it->size; ++k) out.push_back(t.strip_pool[it->offset + k]);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

struct string_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

}  // namespace

struct wordpiece_tokenizer::state {
  wordpiece_options options;
  bool strip = true;
  std::vector<std::string> tokens;
  std::unordered_map<std::string, std::int64_t, string_hash, std::equal_to<>> ids;
  std::int64_t unknown = 0, cls = 0, sep = 0, pad = 0;

  // BERT's BasicTokenizer: words (UTF-8) of `text`.
  result<std::vector<std::string>> basic(std::string_view text) const {
    auto decoded = decode_utf8(text);
    if (!decoded) return decoded.error();
    // 1-2: clean, space out CJK.
    std::u32string cleaned;
    cleaned.reserve(decoded->size());
    for (char32_t c : *decoded) {
      if (c == 0 || c == 0xFFFD || is_control(c)) continue;
      if (is_whitespace(c)) {
        cleaned.push_back(U' ');
      } else if (options.split_cjk && is_cjk(c)) {
        cleaned.push_back(U' ');
        cleaned.push_back(c);
        cleaned.push_back(U' ');
      } else {
        cleaned.push_back(c);
      }
    }
    // 3: words, each lower-cased / stripped, then punctuation split off.
    std::vector<std::string> words;
    std::size_t i = 0;
    while (i < cleaned.size()) {
      while (i < cleaned.size() && splits_words(cleaned[i])) ++i;
      std::size_t j = i;
      while (j < cleaned.size() && !splits_words(cleaned[j])) ++j;
      if (j == i) break;
      std::u32string word(cleaned, i, j - i);
      if (options.lower_case) word = python_lower(word);
      if (strip) word = strip_accents(word);
      std::u32string piece;
      for (char32_t c : word) {
        if (is_punctuation(c)) {
          if (!piece.empty()) words.push_back(to_utf8(piece));
          piece.clear();
          words.push_back(to_utf8(std::u32string(1, c)));
        } else {
          piece.push_back(c);
        }
      }
      if (!piece.empty()) words.push_back(to_utf8(piece));
      i = j;
    }
    return words;
  }

  // WordpieceTokenizer on one word: pieces appended to `out`.
  void wordpiece(const std::string& word, std::vector<std::string>& out) const {
    // Code point boundaries of the word.
    std::vector<std::size_t> cuts;
    cuts.reserve(word.size() + 1);
    for (std::size_t b = 0; b < word.size(); ++b) {
      if ((static_cast<unsigned char>(word[b]) & 0xC0) != 0x80) cuts.push_back(b);
    }
    cuts.push_back(word.size());
    if (cuts.size() - 1 > options.max_chars_per_word) {
      out.push_back(options.unknown);
      return;
    }
    const std::size_t first_piece = out.size();
    std::string candidate;
    std::size_t start = 0;  // index into cuts
    while (start + 1 < cuts.size()) {
      std::size_t end = cuts.size() - 1;
      bool found = false;
      while (end > start) {
        candidate.clear();
        if (start > 0) candidate = "##";
        candidate.append(word, cuts[start], cuts[end] - cuts[start]);
        if (ids.find(std::string_view(candidate)) != ids.end()) {
          found = true;
          break;
        }
        --end;
      }
      if (!found) {
        out.resize(first_piece);
        out.push_back(options.unknown);
        return;
      }
      out.push_back(candidate);
      start = end;
    }
  }

  result<std::vector<std::string>> tokenize(std::string_view text) const {
    auto words = basic(text);
    if (!words) return words.error();
    std::vector<std::string> out;
    out.reserve(words->size());
    for (const auto& w : *words) wordpiece(w, out);
    return out;
  }

  std::int64_t id(const std::string& token) const {
    auto it = ids.find(std::string_view(token));
    return it == ids.end() ? unknown : it->second;
  }

  // [CLS] a [SEP] (b [SEP]), truncated and padded.
  encoding assemble(std::vector<std::string> a, std::optional<std::vector<std::string>> b,
                    std::size_t max_length, bool pad_out) const {
    if (max_length > 0) {
      const std::size_t specials = b ? 3 : 2;
      const std::size_t room = max_length > specials ? max_length - specials : 0;
      if (!b) {
        if (a.size() > room) a.resize(room);
      } else {
        while (a.size() + b->size() > room) {
          if (a.size() > b->size()) {
            a.pop_back();
          } else {
            b->pop_back();
          }
        }
      }
    }
    encoding e;
    auto push = [&](const std::string& token, std::int64_t type) {
      e.tokens.push_back(token);
      e.ids.push_back(id(token));
      e.type_ids.push_back(type);
      e.attention_mask.push_back(1);
    };
    push(options.cls, 0);
    for (auto& t : a) push(t, 0);
    push(options.sep, 0);
    if (b) {
      for (auto& t : *b) push(t, 1);
      push(options.sep, 1);
    }
    if (pad_out && max_length > 0) {
      while (e.ids.size() < max_length) {
        e.tokens.push_back(options.pad);
        e.ids.push_back(pad);
        e.type_ids.push_back(0);
        e.attention_mask.push_back(0);
      }
    }
    return e;
  }
};

wordpiece_tokenizer::wordpiece_tokenizer(std::unique_ptr<state> s) : state_(std::move(s)) {}
wordpiece_tokenizer::wordpiece_tokenizer(wordpiece_tokenizer&&) noexcept = default;
wordpiece_tokenizer& wordpiece_tokenizer::operator=(wordpiece_tokenizer&&) noexcept = default;
wordpiece_tokenizer::~wordpiece_tokenizer() = default;

result<wordpiece_tokenizer> wordpiece_tokenizer::from_tokens(std::vector<std::string> vocab,
                                                             wordpiece_options options) {
  try {
    if (vocab.empty()) return error(errc::invalid_argument, "wordpiece: the vocabulary is empty");
    auto s = std::make_unique<state>();
    s->strip = options.strip_accents.value_or(options.lower_case);
    s->options = std::move(options);
    s->ids.reserve(vocab.size());
    for (std::size_t i = 0; i < vocab.size(); ++i) {
      if (auto valid = decode_utf8(vocab[i]); !valid) {
        return error(errc::invalid_argument,
                     fmt::format("wordpiece: vocabulary token {} is not valid UTF-8", i));
      }
      if (!s->ids.emplace(vocab[i], static_cast<std::int64_t>(i)).second) {
        return error(errc::invalid_argument,
                     fmt::format("wordpiece: token '{}' appears twice (ids {} and {})", vocab[i],
                                 s->ids.at(vocab[i]), i));
      }
    }
    for (auto [name, slot] :
         {std::pair{&s->options.unknown, &s->unknown}, std::pair{&s->options.cls, &s->cls},
          std::pair{&s->options.sep, &s->sep}, std::pair{&s->options.pad, &s->pad}}) {
      auto it = s->ids.find(*name);
      if (it == s->ids.end()) {
        return error(
            errc::invalid_argument,
            fmt::format("wordpiece: the special token '{}' is not in the vocabulary", *name));
      }
      *slot = it->second;
    }
    s->tokens = std::move(vocab);
    return wordpiece_tokenizer(std::move(s));
  } catch (const std::bad_alloc&) {
    return error(errc::limit_exceeded, "wordpiece: out of memory");
  }
}

result<wordpiece_tokenizer> wordpiece_tokenizer::from_file(const std::filesystem::path& vocab,
                                                           wordpiece_options options) {
  std::ifstream in(vocab, std::ios::binary);
  if (!in) {
    std::error_code ec;
    if (!std::filesystem::exists(vocab, ec))
      return error(errc::not_found,
                   fmt::format("wordpiece: no vocabulary file {}", vocab.string()));
    return error(errc::invalid_argument,
                 fmt::format("wordpiece: cannot read vocabulary file {}", vocab.string()));
  }
  std::vector<std::string> tokens;
  std::string line;
  while (std::getline(in, line)) {
    // tokenization.py's load_vocab strips each line (a trailing \r too).
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
      line.pop_back();
    std::size_t lead = 0;
    while (lead < line.size() && (line[lead] == ' ' || line[lead] == '\t')) ++lead;
    tokens.push_back(line.substr(lead));
  }
  return from_tokens(std::move(tokens), std::move(options));
}

result<std::vector<std::string>> wordpiece_tokenizer::tokenize(std::string_view text) const {
  try {
    return state_->tokenize(text);
  } catch (const std::bad_alloc&) {
    return error(errc::limit_exceeded, "wordpiece: out of memory");
  }
}

result<encoding> wordpiece_tokenizer::encode(std::string_view text, std::size_t max_length,
                                             bool pad) const {
  if (max_length == 1) return error(errc::invalid_argument, "wordpiece: max_length 1 < 2");
  auto tokens = tokenize(text);
  if (!tokens) return tokens.error();
  return state_->assemble(std::move(*tokens), std::nullopt, max_length, pad);
}

result<encoding> wordpiece_tokenizer::encode_pair(std::string_view a, std::string_view b,
                                                  std::size_t max_length, bool pad) const {
  if (max_length > 0 && max_length < 3)
    return error(errc::invalid_argument, "wordpiece: a pair needs max_length >= 3");
  auto ta = tokenize(a);
  if (!ta) return ta.error();
  auto tb = tokenize(b);
  if (!tb) return tb.error();
  return state_->assemble(std::move(*ta), std::move(*tb), max_length, pad);
}

result<tensors> wordpiece_tokenizer::encode_batch(std::span<const std::string> texts,
                                                  std::size_t max_length) const {
  if (texts.empty()) return error(errc::invalid_argument, "wordpiece: an empty batch");
  std::vector<encoding> all;
  all.reserve(texts.size());
  std::size_t longest = 0;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    auto e = encode(texts[i], max_length, false);
    if (!e) return error(e.error().code(), fmt::format("text {}: {}", i, e.error().message()));
    longest = std::max(longest, e->ids.size());
    all.push_back(std::move(*e));
  }
  const auto n = static_cast<std::int64_t>(all.size());
  const auto len = static_cast<std::int64_t>(longest);
  std::vector<std::int64_t> ids(all.size() * longest, state_->pad);
  std::vector<std::int64_t> mask(all.size() * longest, 0);
  std::vector<std::int64_t> types(all.size() * longest, 0);
  for (std::size_t r = 0; r < all.size(); ++r) {
    std::copy(all[r].ids.begin(), all[r].ids.end(), ids.begin() + r * longest);
    std::copy(all[r].attention_mask.begin(), all[r].attention_mask.end(),
              mask.begin() + r * longest);
    std::copy(all[r].type_ids.begin(), all[r].type_ids.end(), types.begin() + r * longest);
  }
  tensors out;
  out.push_back(*tensor::of({n, len}, std::move(ids)));
  out.push_back(*tensor::of({n, len}, std::move(mask)));
  out.push_back(*tensor::of({n, len}, std::move(types)));
  return out;
}

std::optional<std::int64_t> wordpiece_tokenizer::id_of(std::string_view token) const noexcept {
  auto it = state_->ids.find(token);
  if (it == state_->ids.end()) return std::nullopt;
  return it->second;
}

std::string_view wordpiece_tokenizer::token_of(std::int64_t id) const noexcept {
  if (id < 0 || static_cast<std::size_t>(id) >= state_->tokens.size()) return {};
  return state_->tokens[static_cast<std::size_t>(id)];
}

std::size_t wordpiece_tokenizer::vocab_size() const noexcept {
  return state_->tokens.size();
}

const wordpiece_options& wordpiece_tokenizer::options() const noexcept {
  return state_->options;
}

}  // namespace aise::ml
