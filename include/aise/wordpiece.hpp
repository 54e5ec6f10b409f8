#pragma once
/// @file
/// A WordPiece tokenizer compatible with BERT's (`vocab.txt`, one token per
/// line, the line number is the id): BERT's basic tokenization (control
/// characters removed, whitespace normalised, CJK ideographs split apart,
/// optional lower-casing and accent stripping, punctuation split off), then
/// greedy longest-match-first WordPiece with "##" continuation pieces, then
/// `[CLS]`/`[SEP]`, truncation, padding, attention masks and token type ids.
///
/// It reproduces the reference tokenizer (google-research/bert
/// tokenization.py; HuggingFace's BertTokenizer with its defaults) including
/// Python's Unicode behaviour: lower-casing as `str.lower()` (final sigma
/// included), accents stripped as NFD minus nonspacing marks, categories
/// from Unicode 14 (src/ml/unicode_data.cpp, generated).
///
/// Contract: a tokenizer is immutable after construction; every member is
/// const and may be called from any thread at once. Text must be UTF-8:
/// invalid UTF-8 (bad bytes, overlong forms, surrogates) is
/// `invalid_argument` naming the byte offset. No exceptions escape.

#include <aise/error.hpp>
#include <aise/ml.hpp>
#include <aise/ml_export.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace aise::ml {

/// How text is split; the defaults are BERT uncased's.
struct AISE_ML_EXPORT wordpiece_options {
  /// Lower-case before splitting (uncased models).
  bool lower_case = true;
  /// Strip accents; unset: when lower-casing (BERT's and HuggingFace's rule).
  std::optional<bool> strip_accents;
  /// Put spaces around CJK ideographs, so each is a word of its own.
  bool split_cjk = true;
  /// Words longer than this (in code points) become the unknown token
  /// (BERT's tokenization.py: 200; HuggingFace's BertTokenizer: 100).
  std::size_t max_chars_per_word = 200;
  std::string unknown = "[UNK]";
  std::string cls = "[CLS]";
  std::string sep = "[SEP]";
  std::string pad = "[PAD]";
};

/// One encoded text (or pair): parallel vectors of equal length.
struct AISE_ML_EXPORT encoding {
  std::vector<std::string> tokens;
  std::vector<std::int64_t> ids;
  std::vector<std::int64_t> type_ids;        ///< 0 for the first text, 1 for the second
  std::vector<std::int64_t> attention_mask;  ///< 1 for real tokens, 0 for padding
};

class AISE_ML_EXPORT wordpiece_tokenizer {
 public:
  /// Reads a BERT vocab.txt. `not_found` for a missing file;
  /// `invalid_argument` for an empty vocabulary, a duplicate token or a
  /// special token (unknown, cls, sep, pad) that is missing.
  static result<wordpiece_tokenizer> from_file(const std::filesystem::path& vocab,
                                               wordpiece_options options = {});
  /// The same from tokens in id order.
  static result<wordpiece_tokenizer> from_tokens(std::vector<std::string> vocab,
                                                 wordpiece_options options = {});

  /// The tokens of `text`, without special tokens.
  [[nodiscard]] result<std::vector<std::string>> tokenize(std::string_view text) const;

  /// `[CLS] text [SEP]` as ids. With `max_length` > 0 the text's tokens
  /// are truncated to fit (at least 2 is needed for the special tokens), and
  /// with `pad` the result is padded to exactly `max_length`.
  [[nodiscard]] result<encoding> encode(std::string_view text, std::size_t max_length = 0,
                                        bool pad = false) const;
  /// `[CLS] a [SEP] b [SEP]`; truncation takes a token from the longer text
  /// until the pair fits (from `b` on a tie), as BERT's longest-first rule.
  [[nodiscard]] result<encoding> encode_pair(std::string_view a, std::string_view b,
                                             std::size_t max_length = 0, bool pad = false) const;

  /// Model inputs for a batch of texts: `input_ids`, `attention_mask` and
  /// `token_type_ids`, each int64 [texts, length], where length is the
  /// longest encoding (each truncated to `max_length` when > 0), the rest
  /// padded. `invalid_argument` for an empty batch.
  [[nodiscard]] result<tensors> encode_batch(std::span<const std::string> texts,
                                             std::size_t max_length = 0) const;

  /// The id of `token`, if it is in the vocabulary.
  [[nodiscard]] std::optional<std::int64_t> id_of(std::string_view token) const noexcept;
  /// The token with `id`; empty for an id outside the vocabulary.
  [[nodiscard]] std::string_view token_of(std::int64_t id) const noexcept;
  [[nodiscard]] std::size_t vocab_size() const noexcept;
  [[nodiscard]] const wordpiece_options& options() const noexcept;

  wordpiece_tokenizer(wordpiece_tokenizer&&) noexcept;
  wordpiece_tokenizer& operator=(wordpiece_tokenizer&&) noexcept;
  ~wordpiece_tokenizer();

 private:
  struct state;
  explicit wordpiece_tokenizer(std::unique_ptr<state> s);
  std::unique_ptr<state> state_;
};

}  // namespace aise::ml
