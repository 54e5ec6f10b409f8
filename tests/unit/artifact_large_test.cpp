// The artifact store with a 1 GiB artifact: written and read back through
// the streaming API, chunk by chunk, with memory that stays small. Its own
// executable and CTest label (large): scripts/test.sh runs it in the
// release phase only, not under the sanitizers.

#include <aise/artifacts.hpp>
#include <aise/sha256.hpp>
#include <aise/store.hpp>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <doctest/doctest.h>
#include <iostream>
#include <sys/resource.h>
#include <vector>

#include "unit/artifact_test_util.hpp"

namespace {

long max_rss_kib() {
  struct rusage usage {};
  ::getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;  // KiB on Linux
}

// Fills `chunk` with the next bytes of a deterministic stream (xorshift64).
void fill(std::vector<char>& chunk, std::uint64_t& state) {
  for (std::size_t i = 0; i + 8 <= chunk.size(); i += 8) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    std::memcpy(chunk.data() + i, &state, 8);
  }
}

}  // namespace

TEST_CASE("artifacts: 1 GiB through the streaming API in small memory") {
  constexpr std::uint64_t total = std::uint64_t{1} << 30;
  constexpr std::size_t chunk_size = 1 << 20;
  aise::test::scratch_dir dir;
  aise::artifact_store_options o;
  o.root = dir.path();
  o.metadata = aise::make_memory_store();
  auto store = aise::open_artifact_store(o);
  REQUIRE(store.ok());

  std::vector<char> chunk(chunk_size);
  const long rss_before = max_rss_kib();
  const auto start = std::chrono::steady_clock::now();

  auto w = (*store)->create({.project = "p", .name = "huge.log", .media_type = "text/plain"});
  REQUIRE(w.ok());
  aise::sha256 expected;
  std::uint64_t state = 0x9e3779b97f4a7c15ULL;
  for (std::uint64_t written = 0; written < total; written += chunk_size) {
    fill(chunk, state);
    expected.update(chunk.data(), chunk.size());
    REQUIRE(w->write(chunk.data(), chunk.size()).ok());
  }
  auto meta = w->commit();
  REQUIRE(meta.ok());
  const std::string digest = expected.hex_digest();
  CHECK(meta->size == total);
  CHECK(meta->sha256 == digest);
  const auto written_at = std::chrono::steady_clock::now();

  auto r = (*store)->open(meta->id);
  REQUIRE(r.ok());
  CHECK(r->size() == total);
  aise::sha256 read_back;
  std::uint64_t read_total = 0;
  for (;;) {
    auto n = r->read(chunk.data(), chunk.size());
    REQUIRE(n.ok());
    if (*n == 0) break;
    read_back.update(chunk.data(), *n);
    read_total += *n;
  }
  CHECK(read_total == total);
  CHECK(read_back.hex_digest() == digest);
  const auto read_at = std::chrono::steady_clock::now();

  // A range at the very end, as an HTTP Range request would ask for it.
  auto tail = (*store)->open(meta->id, total - 10, 100);
  REQUIRE(tail.ok());
  CHECK(tail->size() == 10);

  const long rss_delta_kib = max_rss_kib() - rss_before;
  using ms = std::chrono::milliseconds;
  std::cout << "1 GiB artifact: write+commit "
            << std::chrono::duration_cast<ms>(written_at - start).count() << " ms, read "
            << std::chrono::duration_cast<ms>(read_at - written_at).count()
            << " ms, peak RSS delta " << rss_delta_kib / 1024 << " MiB\n";
  CHECK(rss_delta_kib < 100 * 1024);
}
