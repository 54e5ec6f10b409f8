#pragma once
/// @file
/// SHA-256 (FIPS 180-4): an incremental hasher and a one-call helper. Used
/// for content addresses of artifacts and for migration checksums.
///
/// Contract: a `sha256` object is a plain value with no shared state; use one
/// object from one thread at a time (different objects are independent).
/// Nothing here allocates except the strings it returns, and nothing throws
/// except `std::bad_alloc` from those strings.

#include <aise/core_export.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace aise {

/// An incremental SHA-256 hasher: `update` any number of times, then
/// `finish` (or `hex_digest`) once.
///
/// After `finish`/`hex_digest` the object is reset to the empty state, so it
/// can hash a new message; a second `finish` therefore returns the digest of
/// the empty message, not the previous one.
class AISE_CORE_EXPORT sha256 {
 public:
  /// Size of a digest in bytes.
  static constexpr std::size_t digest_size = 32;
  /// A binary digest.
  using digest = std::array<std::uint8_t, digest_size>;

  /// An empty hasher (the digest of no bytes so far).
  sha256() noexcept;

  /// Appends `n` bytes at `data` to the message. `data` may be null when `n` is 0.
  void update(const void* data, std::size_t n) noexcept;
  /// Appends the bytes of `bytes` to the message.
  void update(std::string_view bytes) noexcept { update(bytes.data(), bytes.size()); }

  /// The digest of everything appended since construction or the last
  /// finish; resets the hasher.
  digest finish() noexcept;
  /// `finish()` as 64 lower-case hex characters; resets the hasher.
  std::string hex_digest();

  /// Discards what was appended: the hasher is empty again.
  void reset() noexcept;

 private:
  void compress(const std::uint8_t* block) noexcept;

  std::array<std::uint32_t, 8> state_{};
  std::array<std::uint8_t, 64> buffer_{};
  std::size_t buffered_ = 0;
  std::uint64_t length_ = 0;  // bytes appended so far
};

/// The SHA-256 of `data` as 64 lower-case hex characters.
AISE_CORE_EXPORT std::string sha256_hex(std::string_view data);

/// `digest` as lower-case hex characters (two per byte).
AISE_CORE_EXPORT std::string to_hex(const sha256::digest& digest);

}  // namespace aise
