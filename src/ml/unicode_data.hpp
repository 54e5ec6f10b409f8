#pragma once
// Unicode properties for the WordPiece tokenizer, generated from Python's
// unicodedata by src/ml/gen_unicode_data.py (see there for what each table
// holds). Internal to aise::ml.

#include <algorithm>
#include <cstdint>
#include <span>

namespace aise::ml::detail {

struct range {
  char32_t lo;
  char32_t hi;
};
struct mapping {
  char32_t from;
  char32_t to;
};
struct decomposition {
  char32_t from;
  std::uint32_t offset;  // into the pool
  std::uint32_t size;
};

struct unicode_tables {
  std::span<const range> whitespace;
  std::span<const range> control;
  std::span<const range> punctuation;
  std::span<const range> nonspacing;
  std::span<const range> cased;
  std::span<const range> case_ignorable;
  std::span<const range> word;
  std::span<const mapping> lower;
  std::span<const decomposition> strip;
  std::span<const char32_t> strip_pool;
};

const unicode_tables& tables() noexcept;

inline bool in(std::span<const range> rs, char32_t cp) noexcept {
  auto it = std::upper_bound(rs.begin(), rs.end(), cp,
                             [](char32_t c, const range& r) { return c < r.lo; });
  return it != rs.begin() && cp <= std::prev(it)->hi;
}

}  // namespace aise::ml::detail
