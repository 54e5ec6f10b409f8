#pragma once
// Unicode helpers shared by aise::ml's text code (the WordPiece tokenizer,
// the TF-IDF vectorizer): UTF-8 decoding with validation, and lower-casing
// as Python's str.lower(). Internal to libaise (exported for aise::torch's
// TF-IDF vectorizer, not part of the API).

#include <aise/error.hpp>
#include <aise/ml_export.hpp>

#include <string>
#include <string_view>

namespace aise::ml::detail {

/// Code points of `text`; `invalid_argument` naming the offset of the first
/// byte that is not valid UTF-8 (overlong forms and surrogates included).
AISE_ML_EXPORT result<std::u32string> decode_utf8(std::string_view text);
AISE_ML_EXPORT void append_utf8(std::string& out, char32_t cp);
AISE_ML_EXPORT std::string to_utf8(std::u32string_view s);
/// Python's str.lower() of `s` (one-to-one mappings, U+0130 → "i̇", and the
/// final sigma rule evaluated within `s`).
AISE_ML_EXPORT std::u32string python_lower(std::u32string_view s);
/// Python's re `\w`: str.isalnum() or '_'.
AISE_ML_EXPORT bool is_word_char(char32_t c) noexcept;

}  // namespace aise::ml::detail
