// Passwords (Argon2id), JWT HS256, base64url and random tokens over
// libsodium: the only file besides authenticator.cpp that includes it.
#include <aise/auth.hpp>

#include <chrono>
#include <cmath>
#include <sodium.h>
#include <stdexcept>
#include <vector>

namespace aise {

namespace {

using json = nlohmann::json;

constexpr std::size_t max_token_size = 8192;

// sodium_init is idempotent and thread-safe; it fails only when the system
// has no entropy source, which nothing here could work around.
void ensure_sodium() {
  static const bool ready = sodium_init() >= 0;
  if (!ready) throw std::runtime_error("libsodium could not be initialized");
}

error rejected(std::string why) {
  return error(errc::rejected, "token rejected: " + std::move(why));
}

std::string hmac_sha256(std::string_view data, std::string_view key) {
  crypto_auth_hmacsha256_state state;
  crypto_auth_hmacsha256_init(&state, reinterpret_cast<const unsigned char*>(key.data()),
                              key.size());
  crypto_auth_hmacsha256_update(&state, reinterpret_cast<const unsigned char*>(data.data()),
                                data.size());
  std::string mac(crypto_auth_hmacsha256_BYTES, '\0');
  crypto_auth_hmacsha256_final(&state, reinterpret_cast<unsigned char*>(mac.data()));
  sodium_memzero(&state, sizeof state);
  return mac;
}

long long seconds_of(time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

time_point at_seconds(long long s) {
  return time_point{std::chrono::seconds(s)};
}

// A NumericDate: a JSON number of seconds (fractions allowed, as RFC 7519).
std::optional<long long> numeric_date(const json& payload, const char* name) {
  auto it = payload.find(name);
  if (it == payload.end()) return std::nullopt;
  if (it->is_number_integer()) return it->get<long long>();
  if (it->is_number_float()) {
    double d = it->get<double>();
    if (!std::isfinite(d) || std::fabs(d) > 1e15) return std::nullopt;
    return static_cast<long long>(std::floor(d));
  }
  return std::nullopt;
}

}  // namespace

result<std::string> hash_password(std::string_view password, const password_options& options) {
  ensure_sodium();
  if (options.opslimit < crypto_pwhash_OPSLIMIT_MIN ||
      options.memlimit < crypto_pwhash_MEMLIMIT_MIN) {
    return error(errc::invalid_argument, "hash_password: cost below libsodium's minimum");
  }
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str_alg(out, password.data(), password.size(), options.opslimit,
                            options.memlimit, crypto_pwhash_ALG_ARGON2ID13) != 0) {
    return error(errc::internal, "hash_password: out of memory");
  }
  return std::string(out);
}

bool verify_password(std::string_view hash, std::string_view password) noexcept {
  try {
    ensure_sodium();
    if (hash.empty() || hash.size() >= crypto_pwhash_STRBYTES) return false;
    std::string h(hash);  // crypto_pwhash_str_verify wants a C string
    return crypto_pwhash_str_verify(h.c_str(), password.data(), password.size()) == 0;
  } catch (...) {
    return false;
  }
}

std::string base64url_encode(std::string_view bytes) {
  ensure_sodium();
  const int variant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
  std::string out(sodium_base64_encoded_len(bytes.size(), variant), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), variant);
  out.resize(out.size() - 1);  // the terminating NUL
  return out;
}

std::optional<std::string> base64url_decode(std::string_view text) {
  ensure_sodium();
  std::string out(text.size() * 3 / 4 + 3, '\0');
  std::size_t n = 0;
  const char* end = nullptr;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), nullptr, &n, &end,
                        sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
      end != text.data() + text.size()) {
    return std::nullopt;
  }
  out.resize(n);
  return out;
}

std::string random_token(std::size_t n) {
  ensure_sodium();
  std::string bytes(n, '\0');
  randombytes_buf(bytes.data(), bytes.size());
  auto out = base64url_encode(bytes);
  sodium_memzero(bytes.data(), bytes.size());
  return out;
}

bool constant_time_equal(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string sign_jwt(const jwt_claims& claims, std::string_view key) {
  static const std::string header = base64url_encode(R"({"alg":"HS256","typ":"JWT"})");
  json payload = {{"sub", claims.sub},
                  {"iss", claims.iss},
                  {"aud", claims.aud},
                  {"iat", seconds_of(claims.iat)},
                  {"exp", seconds_of(claims.exp)}};
  std::string signing_input = header + "." + base64url_encode(payload.dump());
  auto mac = hmac_sha256(signing_input, key);
  return signing_input + "." + base64url_encode(mac);
}

result<jwt_claims> verify_jwt(std::string_view token, std::string_view key,
                              const jwt_check& check) {
  if (token.empty()) return rejected("empty");
  if (token.size() > max_token_size) return rejected("too long");
  auto dot1 = token.find('.');
  auto dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return rejected("not three dot-separated parts");
  }
  auto header_text = base64url_decode(token.substr(0, dot1));
  auto payload_text = base64url_decode(token.substr(dot1 + 1, dot2 - dot1 - 1));
  auto signature = base64url_decode(token.substr(dot2 + 1));
  if (!header_text || !payload_text || !signature) return rejected("bad base64url");

  json header = json::parse(*header_text, nullptr, false);
  if (header.is_discarded() || !header.is_object()) return rejected("the header is not JSON");
  auto alg = header.find("alg");
  // Exactly HS256: "none", other HMACs and public-key algorithms are refused
  // before the signature is even looked at.
  if (alg == header.end() || !alg->is_string() || alg->get<std::string>() != "HS256") {
    return rejected("alg must be HS256");
  }
  if (auto typ = header.find("typ");
      typ != header.end() && (!typ->is_string() || (typ->get<std::string>() != "JWT"))) {
    return rejected("typ must be JWT");
  }
  auto expected = hmac_sha256(token.substr(0, dot2), key);
  if (!constant_time_equal(expected, *signature)) return rejected("bad signature");

  json payload = json::parse(*payload_text, nullptr, false);
  if (payload.is_discarded() || !payload.is_object()) return rejected("the payload is not JSON");
  jwt_claims c;
  auto sub = payload.find("sub");
  if (sub == payload.end() || !sub->is_string() || sub->get<std::string>().empty()) {
    return rejected("no sub");
  }
  c.sub = sub->get<std::string>();
  auto iss = payload.find("iss");
  if (iss == payload.end() || !iss->is_string()) return rejected("no iss");
  c.iss = iss->get<std::string>();
  if (c.iss != check.issuer) return rejected("wrong iss");
  auto aud = payload.find("aud");
  if (aud == payload.end()) return rejected("no aud");
  bool aud_ok = false;
  if (aud->is_string()) {
    aud_ok = aud->get<std::string>() == check.audience;
  } else if (aud->is_array()) {
    for (const auto& a : *aud) aud_ok = aud_ok || (a.is_string() && a == check.audience);
  }
  if (!aud_ok) return rejected("wrong aud");
  c.aud = check.audience;
  auto iat = numeric_date(payload, "iat");
  auto exp = numeric_date(payload, "exp");
  if (!iat) return rejected("no iat");
  if (!exp) return rejected("no exp");
  c.iat = at_seconds(*iat);
  c.exp = at_seconds(*exp);
  if (check.now >= c.exp + check.leeway) return rejected("expired");
  if (c.iat > check.now + check.leeway) return rejected("issued in the future");
  return c;
}

}  // namespace aise
