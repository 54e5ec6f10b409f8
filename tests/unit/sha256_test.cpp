// SHA-256 against the FIPS 180-4 / NIST CAVS example vectors, and
// incremental hashing in every split.

#include <aise/sha256.hpp>

#include <doctest/doctest.h>
#include <string>

namespace {

const std::string two_blocks =
    "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";  // 448 bits
const std::string four_blocks =
    "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnop"
    "qrsmnopqrstnopqrstu";  // 896 bits

}  // namespace

TEST_CASE("sha256: NIST vectors") {
  CHECK(aise::sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(aise::sha256_hex("abc") ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(two_blocks.size() * 8 == 448);
  CHECK(aise::sha256_hex(two_blocks) ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(four_blocks.size() * 8 == 896);
  CHECK(aise::sha256_hex(four_blocks) ==
        "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

TEST_CASE("sha256: one million 'a'") {
  const std::string expected = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
  CHECK(aise::sha256_hex(std::string(1'000'000, 'a')) == expected);
  // The same in uneven pieces through the incremental interface.
  aise::sha256 h;
  const std::string piece(997, 'a');
  std::size_t left = 1'000'000;
  while (left > 0) {
    const std::size_t n = std::min(left, piece.size());
    h.update(piece.data(), n);
    left -= n;
  }
  CHECK(h.hex_digest() == expected);
}

TEST_CASE("sha256: every split of a message gives the same digest") {
  // 200 bytes cover 0, 1, 2 and 3 blocks plus the padding edge cases
  // (55, 56, 63, 64 bytes left over).
  std::string message;
  for (int i = 0; i < 200; ++i) message.push_back(static_cast<char>((i * 37 + 11) & 0xff));
  for (std::size_t len : {0U, 1U, 55U, 56U, 63U, 64U, 65U, 119U, 120U, 128U, 200U}) {
    const std::string m = message.substr(0, len);
    const std::string whole = aise::sha256_hex(m);
    for (std::size_t i = 0; i <= len; ++i) {
      for (std::size_t j = i; j <= len; ++j) {
        aise::sha256 h;
        h.update(std::string_view(m).substr(0, i));
        h.update(std::string_view(m).substr(i, j - i));
        h.update(std::string_view(m).substr(j));
        REQUIRE_MESSAGE(h.hex_digest() == whole, "len " << len << " split " << i << "/" << j);
      }
    }
  }
  // Byte by byte.
  aise::sha256 h;
  for (char c : message) h.update(&c, 1);
  CHECK(h.hex_digest() == aise::sha256_hex(message));
}

TEST_CASE("sha256: finish resets the hasher") {
  aise::sha256 h;
  h.update("abc");
  const auto first = h.finish();
  CHECK(aise::to_hex(first) == aise::sha256_hex("abc"));
  CHECK(h.hex_digest() == aise::sha256_hex(""));
  h.update("ab");
  h.reset();
  h.update("abc");
  CHECK(h.hex_digest() == aise::sha256_hex("abc"));
  h.update(nullptr, 0);
  CHECK(h.hex_digest() == aise::sha256_hex(""));
}
