// UTF-8 and Python-compatible lower-casing (src/ml/unicode.hpp).
#include "ml/unicode.hpp"

#include <algorithm>
#include <fmt/format.h>

#include "ml/unicode_data.hpp"

namespace aise::ml::detail {
namespace {

char32_t lower_of(char32_t c) {
  if (c < 0x80) return (c >= U'A' && c <= U'Z') ? c + 32 : c;
  const auto& t = tables().lower;
  auto it = std::lower_bound(t.begin(), t.end(), c,
                             [](const mapping& m, char32_t v) { return m.from < v; });
  return (it != t.end() && it->from == c) ? it->to : c;
}

}  // namespace

result<std::u32string> decode_utf8(std::string_view text) {
  std::u32string out;
  out.reserve(text.size());
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  std::size_t i = 0;
  auto bad = [&](std::size_t at) {
    return error(errc::invalid_argument, fmt::format("text is not valid UTF-8 (byte {})", at));
  };
  while (i < n) {
    const unsigned char b = s[i];
    if (b < 0x80) {
      out.push_back(b);
      ++i;
      continue;
    }
    std::size_t len = 0;
    char32_t cp = 0;
    char32_t min = 0;
    if ((b & 0xE0) == 0xC0) {
      len = 2, cp = b & 0x1F, min = 0x80;
    } else if ((b & 0xF0) == 0xE0) {
      len = 3, cp = b & 0x0F, min = 0x800;
    } else if ((b & 0xF8) == 0xF0) {
      len = 4, cp = b & 0x07, min = 0x10000;
    } else {
      return bad(i);
    }
    if (i + len > n) return bad(i);
    for (std::size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return bad(i + k);
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return bad(i);
    out.push_back(cp);
    i += len;
  }
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string to_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

std::u32string python_lower(std::u32string_view w) {
  const auto& t = tables();
  std::u32string out;
  out.reserve(w.size());
  for (std::size_t i = 0; i < w.size(); ++i) {
    const char32_t c = w[i];
    if (c == 0x130) {  // İ -> i + combining dot above (the one 1:2 mapping)
      out.push_back(U'i');
      out.push_back(0x307);
      continue;
    }
    if (c == 0x3A3) {  // Σ: final sigma when after a cased letter and not before one
      std::size_t j = i;
      while (j > 0 && in(t.case_ignorable, w[j - 1])) --j;
      bool final = j > 0 && in(t.cased, w[j - 1]);
      if (final) {
        std::size_t k = i + 1;
        while (k < w.size() && in(t.case_ignorable, w[k])) ++k;
        final = k == w.size() || !in(t.cased, w[k]);
      }
      out.push_back(final ? 0x3C2 : 0x3C3);
      continue;
    }
    out.push_back(lower_of(c));
  }
  return out;
}

bool is_word_char(char32_t c) noexcept {
  if (c < 0x80) {
    return (c >= U'a' && c <= U'z') || (c >= U'A' && c <= U'Z') || (c >= U'0' && c <= U'9') ||
           c == U'_';
  }
  return in(tables().word, c);
}

}  // namespace aise::ml::detail
