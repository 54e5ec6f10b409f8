// The artifact store: content addressing, versions, names that are never
// paths, streaming and ranges, atomicity on abort and failure (a real
// "disk full" through RLIMIT_FSIZE), limits, garbage collection and
// concurrent writers. The 1 GiB test lives in artifact_large_test.cpp.

#include <aise/artifacts.hpp>
#include <aise/sha256.hpp>
#include <aise/store.hpp>

#include <atomic>
#include <csignal>
#include <doctest/doctest.h>
#include <fstream>
#include <string>
#include <sys/resource.h>
#include <thread>
#include <vector>

#include "unit/artifact_test_util.hpp"

namespace {

namespace fs = std::filesystem;
using aise::errc;
using aise::test::files_under;
using aise::test::scratch_dir;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::shared_ptr<aise::artifact_store> open_store(const fs::path& root,
                                                 std::shared_ptr<aise::store> metadata,
                                                 aise::artifact_store_options o = {}) {
  o.root = root;
  o.metadata = std::move(metadata);
  o.gc_grace = aise::duration::zero();
  o.sync = false;  // fast tests; one test below runs with sync on
  auto s = aise::open_artifact_store(std::move(o));
  REQUIRE(s.ok());
  return *s;
}

aise::artifact_spec spec(std::string name, std::string project = "p") {
  aise::artifact_spec s;
  s.project = std::move(project);
  s.name = std::move(name);
  return s;
}

std::string blob_file(const std::string& digest) {
  return "blobs/" + digest.substr(0, 2) + "/" + digest.substr(2);
}

std::string read_all(aise::artifact_reader& r, std::size_t chunk = 7) {
  std::string out;
  std::string buf(chunk, '\0');
  for (;;) {
    auto n = r.read(buf.data(), buf.size());
    REQUIRE(n.ok());
    if (*n == 0) return out;
    out.append(buf.data(), *n);
  }
}

// Lowers RLIMIT_FSIZE (ignoring SIGXFSZ, so write fails with EFBIG instead
// of killing the process) and restores both afterwards.
class file_size_limit {
 public:
  explicit file_size_limit(rlim_t bytes) {
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved_) == 0);
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit lower = saved_;
    lower.rlim_cur = bytes;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &lower) == 0);
  }
  ~file_size_limit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, old_handler_);
  }
  file_size_limit(const file_size_limit&) = delete;
  file_size_limit& operator=(const file_size_limit&) = delete;

 private:
  struct rlimit saved_ {};
  void (*old_handler_)(int) = nullptr;
};

}  // namespace

TEST_CASE("artifacts: put and get, content-addressed on disk") {
  scratch_dir dir;
  auto metadata = aise::make_memory_store();
  auto store = open_store(dir.path() / "root", metadata);

  auto s = spec("src/main.cpp");
  s.task = "t-1";
  s.media_type = "text/x-c++";
  auto meta = store->put(s, "int main() {}\n");
  REQUIRE(meta.ok());
  CHECK(meta->project == "p");
  CHECK(meta->task == "t-1");
  CHECK(meta->name == "src/main.cpp");
  CHECK(meta->media_type == "text/x-c++");
  CHECK(meta->size == 14);
  CHECK(meta->sha256 == aise::sha256_hex("int main() {}\n"));
  CHECK(meta->version == 1);
  CHECK(!meta->id.empty());

  auto got = store->get(meta->id);
  REQUIRE(got.ok());
  CHECK(*got == "int main() {}\n");
  auto info = store->info(meta->id);
  REQUIRE(info.ok());
  CHECK(info->sha256 == meta->sha256);
  auto stored = metadata->get_artifact(meta->id);
  REQUIRE(stored.ok());
  CHECK(stored->name == "src/main.cpp");

  // Exactly one blob, named by its digest; no temporary file left.
  CHECK(files_under(dir.path() / "root") == std::set<std::string>{blob_file(meta->sha256)});
  std::ifstream in(dir.path() / "root" / blob_file(meta->sha256), std::ios::binary);
  CHECK(std::string(std::istreambuf_iterator<char>(in), {}) == "int main() {}\n");

  // An empty artifact is an artifact too.
  auto empty = store->put(spec("empty"), "");
  REQUIRE(empty.ok());
  CHECK(empty->size == 0);
  CHECK(empty->sha256 == aise::sha256_hex(""));
  CHECK(store->get(empty->id).value().empty());
}

TEST_CASE("artifacts: writing a name again makes a new version, old ones stay readable") {
  scratch_dir dir;
  auto store = open_store(dir.path(), aise::make_memory_store());
  const std::vector<std::string> contents = {"v1", "version two", "v1", "third"};
  std::vector<aise::artifact_meta> metas;
  for (const auto& c : contents) {
    auto m = store->put(spec("report.md"), c);
    REQUIRE(m.ok());
    metas.push_back(*m);
  }
  for (std::size_t i = 0; i < metas.size(); ++i) {
    CHECK(metas[i].version == static_cast<int>(i + 1));
    CHECK(store->get(metas[i].id).value() == contents[i]);
  }
  CHECK(metas[0].id != metas[2].id);
  CHECK(metas[0].sha256 == metas[2].sha256);  // same content, one blob
  CHECK(files_under(dir.path() / "blobs").size() == 3);

  auto versions = store->versions("p", "report.md");
  REQUIRE(versions.ok());
  REQUIRE(versions->size() == 4);
  CHECK(versions->back().id == metas.back().id);
  REQUIRE(store->put(spec("other"), "x").ok());
  REQUIRE(store->put(spec("report.md", "q"), "other project").ok());
  auto list = store->list("p");
  REQUIRE(list.ok());
  REQUIRE(list->size() == 2);
  CHECK(list->at(1).name == "report.md");
  CHECK(list->at(1).version == 4);
  CHECK(store->versions("q", "report.md").value().size() == 1);
}

TEST_CASE("artifacts: names are metadata, never file paths") {
  scratch_dir dir;
  const fs::path root = dir.path() / "root";
  auto store = open_store(root, aise::make_memory_store());
  const std::vector<std::string> names = {
      "../../etc/passwd",
      "a/b",
      "/etc/shadow",
      "..",
      ".",
      "C:\\windows\\win.ini",
      std::string(10'000, 'n'),
      "\xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x93\x84",
      std::string("nul\0byte", 8),
      "blobs/00/x",
      "tmp/evil"};
  std::set<std::string> expected_files;
  for (const auto& name : names) {
    auto m = store->put(spec(name, name), "content of " + name);
    REQUIRE(m.ok());
    CHECK(m->name == name);
    CHECK(m->project == name);
    CHECK(store->get(m->id).value() == "content of " + name);
    CHECK(store->versions(name, name).value().size() == 1);
    expected_files.insert(blob_file(m->sha256));
  }
  // Nothing but digest-named blobs inside the root, nothing outside it.
  CHECK(files_under(root) == expected_files);
  CHECK(files_under(dir.path()).size() == expected_files.size());

  auto empty_name = store->create(spec(""));
  REQUIRE(!empty_name.ok());
  CHECK(empty_name.error().code() == errc::invalid_argument);
  auto empty_project = store->put(spec("x", ""), "data");
  REQUIRE(!empty_project.ok());
  CHECK(empty_project.error().code() == errc::invalid_argument);
  CHECK(files_under(root) == expected_files);
}

TEST_CASE("artifacts: streaming writes in pieces of any size") {
  scratch_dir dir;
  aise::artifact_store_options o;
  o.write_buffer = 1000;
  auto store = open_store(dir.path(), aise::make_memory_store(), o);
  auto w = store->create(spec("log.txt"));
  REQUIRE(w.ok());
  CHECK(w->is_open());
  std::string all;
  aise::sha256 h;
  // Sizes below, at and above the buffer, so both paths interleave.
  for (std::size_t n : {1U, 999U, 1000U, 1U, 5000U, 0U, 17U, 2048U, 3U}) {
    std::string piece(n, '\0');
    for (std::size_t i = 0; i < n; ++i) piece[i] = static_cast<char>('a' + (all.size() + i) % 26);
    REQUIRE(w->write(piece).ok());
    all += piece;
    h.update(piece);
  }
  CHECK(w->size() == all.size());
  // Nothing is visible before commit.
  CHECK(store->list("p").value().empty());
  auto meta = w->commit();
  REQUIRE(meta.ok());
  CHECK(!w->is_open());
  CHECK(meta->size == all.size());
  CHECK(meta->sha256 == h.hex_digest());
  CHECK(store->get(meta->id).value() == all);
  auto r = store->open(meta->id);
  REQUIRE(r.ok());
  CHECK(r->size() == all.size());
  CHECK(read_all(*r, 333) == all);
  CHECK(r->remaining() == 0);
  CHECK(r->read(nullptr, 0).value() == 0);

  // A closed writer refuses more.
  auto again = w->write("x");
  REQUIRE(!again.ok());
  CHECK(again.error().code() == errc::invalid_argument);
  auto commit_again = w->commit();
  REQUIRE(!commit_again.ok());
  CHECK(commit_again.error().code() == errc::invalid_argument);

  // Writers move.
  auto w2 = store->create(spec("moved"));
  REQUIRE(w2.ok());
  REQUIRE(w2->write("abc").ok());
  aise::artifact_writer moved = std::move(*w2);
  CHECK(moved.commit().value().size == 3);
}

TEST_CASE("artifacts: reading a range") {
  scratch_dir dir;
  auto store = open_store(dir.path(), aise::make_memory_store());
  const std::string content = "0123456789abcdefghij";
  auto meta = store->put(spec("r"), content);
  REQUIRE(meta.ok());

  auto r = store->open(meta->id, 5, 4);
  REQUIRE(r.ok());
  CHECK(r->offset() == 5);
  CHECK(r->size() == 4);
  CHECK(r->meta().id == meta->id);
  CHECK(read_all(*r, 3) == "5678");

  auto tail = store->open(meta->id, 15);  // to the end
  REQUIRE(tail.ok());
  CHECK(read_all(*tail) == "fghij");
  auto clamped = store->open(meta->id, 18, 100);
  REQUIRE(clamped.ok());
  CHECK(clamped->size() == 2);
  CHECK(read_all(*clamped) == "ij");
  auto at_end = store->open(meta->id, content.size());
  REQUIRE(at_end.ok());
  CHECK(at_end->size() == 0);
  CHECK(read_all(*at_end).empty());
  auto zero = store->open(meta->id, 3, 0);
  REQUIRE(zero.ok());
  CHECK(read_all(*zero).empty());

  auto beyond = store->open(meta->id, content.size() + 1);
  REQUIRE(!beyond.ok());
  CHECK(beyond.error().code() == errc::invalid_argument);
  auto unknown = store->open("a-nope");
  REQUIRE(!unknown.ok());
  CHECK(unknown.error().code() == errc::not_found);
  auto too_big = store->get(meta->id, 10);
  REQUIRE(!too_big.ok());
  CHECK(too_big.error().code() == errc::limit_exceeded);
}

TEST_CASE("artifacts: an aborted or abandoned write leaves nothing") {
  scratch_dir dir;
  auto metadata = aise::make_memory_store();
  auto store = open_store(dir.path(), metadata);
  {
    auto w = store->create(spec("a"));
    REQUIRE(w.ok());
    REQUIRE(w->write(std::string(100'000, 'x')).ok());
    CHECK(files_under(dir.path()).size() == 1);  // the temporary file
    w->abort();
    CHECK(!w->is_open());
    w->abort();  // idempotent
    auto after = w->write("y");
    REQUIRE(!after.ok());
    CHECK(after.error().code() == errc::invalid_argument);
    CHECK(!w->commit().ok());
  }
  {
    auto w = store->create(spec("b"));
    REQUIRE(w.ok());
    REQUIRE(w->write("never committed").ok());
  }  // destroyed uncommitted
  {
    auto w = store->create(spec("c"));
    REQUIRE(w.ok());
    REQUIRE(w->write("replaced").ok());
    auto other = store->create(spec("d"));
    REQUIRE(other.ok());
    *w = std::move(*other);  // the overwritten writer aborts
    CHECK(w->commit().ok());
  }
  CHECK(files_under(dir.path()) ==
        std::set<std::string>{blob_file(aise::sha256_hex(""))});  // only "d", empty
  auto list = metadata->list_artifacts("p");
  REQUIRE(list.ok());
  REQUIRE(list->size() == 1);
  CHECK(list->front().name == "d");
}

TEST_CASE("artifacts: max_size refuses larger artifacts and stores nothing") {
  scratch_dir dir;
  auto metadata = aise::make_memory_store();
  aise::artifact_store_options o;
  o.max_size = 1000;
  auto store = open_store(dir.path(), metadata, o);
  CHECK(store->put(spec("fits"), std::string(1000, 'a')).ok());

  auto w = store->create(spec("big"));
  REQUIRE(w.ok());
  REQUIRE(w->write(std::string(600, 'b')).ok());
  auto over = w->write(std::string(401, 'b'));
  REQUIRE(!over.ok());
  CHECK(over.error().code() == errc::limit_exceeded);
  CHECK(contains(over.error().message(), "max_size"));
  CHECK(!w->is_open());
  auto commit = w->commit();  // the same error again
  REQUIRE(!commit.ok());
  CHECK(commit.error() == over.error());
  auto put = store->put(spec("big"), std::string(5000, 'c'));
  REQUIRE(!put.ok());
  CHECK(put.error().code() == errc::limit_exceeded);

  CHECK(metadata->artifact_versions("p", "big").value().empty());
  CHECK(files_under(dir.path()).size() == 1);
}

TEST_CASE("artifacts: a full disk fails the write cleanly (RLIMIT_FSIZE)") {
  scratch_dir dir;
  auto metadata = aise::make_memory_store();
  auto store = open_store(dir.path(), metadata);
  {
    file_size_limit limit(64 * 1024);
    // Fails in write: pieces above the buffer size go straight to the file.
    auto w = store->create(spec("log"));
    REQUIRE(w.ok());
    aise::error failure;
    const std::string piece(100 * 1024, 'z');
    for (int i = 0; i < 4; ++i) {
      auto r = w->write(piece);
      if (!r) {
        failure = r.error();
        break;
      }
    }
    CHECK(failure.code() == errc::unavailable);
    CHECK(contains(failure.message(), "File too large"));
    CHECK(contains(failure.message(), "temporary file"));
    CHECK(!w->is_open());
    CHECK(w->commit().error() == failure);

    // Fails in commit: the data sat in the writer's buffer until then.
    auto small = store->create(spec("small"));
    REQUIRE(small.ok());
    for (int i = 0; i < 100; ++i) REQUIRE(small->write(std::string(1000, 's')).ok());
    auto commit = small->commit();
    REQUIRE(!commit.ok());
    CHECK(commit.error().code() == errc::unavailable);
    CHECK(contains(commit.error().message(), "File too large"));
  }
  CHECK(files_under(dir.path()).empty());
  CHECK(metadata->list_artifacts("p").value().empty());
  // And with the limit gone, the same write works.
  CHECK(store->put(spec("log"), std::string(100 * 1024, 'z')).ok());
}

TEST_CASE("artifacts: committed with sync on, across a reopen of the store") {
  scratch_dir dir;
  auto metadata = aise::make_memory_store();
  aise::artifact_store_options o;
  o.root = dir.path();
  o.metadata = metadata;
  auto first = aise::open_artifact_store(o);
  REQUIRE(first.ok());
  CHECK((*first)->options().sync);
  auto meta = (*first)->put(spec("durable"), "kept");
  REQUIRE(meta.ok());
  auto same = (*first)->put(spec("durable"), "kept");  // existing blob
  REQUIRE(same.ok());
  first->reset();
  auto second = aise::open_artifact_store(o);
  REQUIRE(second.ok());
  CHECK((*second)->get(meta->id).value() == "kept");
  CHECK((*second)->get(same->id).value() == "kept");
}

TEST_CASE("artifacts: open_artifact_store rejects bad options") {
  scratch_dir dir;
  aise::artifact_store_options o;
  o.metadata = aise::make_memory_store();
  auto no_root = aise::open_artifact_store(o);
  REQUIRE(!no_root.ok());
  CHECK(no_root.error().code() == errc::invalid_argument);

  o.root = dir.path();
  o.metadata = nullptr;
  auto no_metadata = aise::open_artifact_store(o);
  REQUIRE(!no_metadata.ok());
  CHECK(no_metadata.error().code() == errc::invalid_argument);

  std::ofstream(dir.path() / "a-file") << "x";
  o.root = dir.path() / "a-file";
  o.metadata = aise::make_memory_store();
  auto on_a_file = aise::open_artifact_store(o);
  REQUIRE(!on_a_file.ok());
  CHECK(on_a_file.error().code() == errc::unavailable);
}

TEST_CASE("artifacts: missing or truncated blobs are reported, not served") {
  scratch_dir dir;
  auto store = open_store(dir.path(), aise::make_memory_store());
  auto a = store->put(spec("a"), "aaaa");
  auto b = store->put(spec("b"), "bbbb");
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  fs::remove(dir.path() / blob_file(a->sha256));
  auto missing = store->open(a->id);
  REQUIRE(!missing.ok());
  CHECK(missing.error().code() == errc::unavailable);
  CHECK(contains(missing.error().message(), "missing"));
  fs::resize_file(dir.path() / blob_file(b->sha256), 2);
  auto truncated = store->get(b->id);
  REQUIRE(!truncated.ok());
  CHECK(truncated.error().code() == errc::unavailable);
}

TEST_CASE("artifacts: writing content again repairs a damaged blob") {
  scratch_dir dir;
  auto store = open_store(dir.path(), aise::make_memory_store());
  auto first = store->put(spec("a"), "abcdef");
  REQUIRE(first.ok());
  fs::resize_file(dir.path() / blob_file(first->sha256), 1);
  CHECK(!store->get(first->id).ok());
  auto second = store->put(spec("a"), "abcdef");
  REQUIRE(second.ok());
  CHECK(second->version == 2);
  CHECK(store->get(second->id).value() == "abcdef");
  CHECK(store->get(first->id).value() == "abcdef");  // same blob, whole again
  CHECK(files_under(dir.path()) == std::set<std::string>{blob_file(first->sha256)});
}

TEST_CASE("artifacts: garbage collection removes unreferenced blobs and stale temp files") {
  scratch_dir dir;
  // Two stores on one root with separate metadata: what only the first
  // knows is unreferenced for the second.
  auto first = open_store(dir.path(), aise::make_memory_store());
  auto second_metadata = aise::make_memory_store();
  auto second = open_store(dir.path(), second_metadata);
  auto only_first = first->put(spec("a"), "only in the first store");
  auto shared = first->put(spec("b"), "in both");
  REQUIRE(only_first.ok());
  REQUIRE(shared.ok());
  auto kept = second->put(spec("b"), "in both");
  REQUIRE(kept.ok());
  std::ofstream(dir.path() / "tmp" / "crashed-writer.tmp") << "half a file";
  std::ofstream(dir.path() / "blobs" / "not-a-blob") << "left alone";
  auto open_writer = second->create(spec("in flight"));  // its temp file stays
  REQUIRE(open_writer.ok());
  REQUIRE(open_writer->write("partial").ok());
  auto reader = first->open(only_first->id);  // keeps reading after removal
  REQUIRE(reader.ok());

  // With a grace period, everything is too young.
  {
    aise::artifact_store_options o;
    o.gc_grace = std::chrono::hours(1);
    o.root = dir.path();
    o.metadata = second_metadata;
    auto patient = aise::open_artifact_store(o);
    REQUIRE(patient.ok());
    auto stats = (*patient)->collect_garbage();
    REQUIRE(stats.ok());
    CHECK(stats->blobs_seen == 2);
    CHECK(stats->blobs_kept_young == 2);
    CHECK(stats->blobs_removed == 0);
    CHECK(stats->temp_files_removed == 0);
  }

  auto stats = second->collect_garbage();
  REQUIRE(stats.ok());
  CHECK(stats->blobs_seen == 2);
  CHECK(stats->blobs_removed == 1);
  CHECK(stats->bytes_removed == only_first->size);
  CHECK(stats->temp_files_removed == 1);
  CHECK(stats->temp_bytes_removed == 11);
  CHECK(!fs::exists(dir.path() / blob_file(only_first->sha256)));
  CHECK(fs::exists(dir.path() / blob_file(kept->sha256)));
  CHECK(fs::exists(dir.path() / "blobs" / "not-a-blob"));
  CHECK(read_all(*reader) == "only in the first store");
  CHECK(second->get(kept->id).value() == "in both");
  auto committed = open_writer->commit();
  REQUIRE(committed.ok());
  CHECK(second->get(committed->id).value() == "partial");

  auto again = second->collect_garbage();
  REQUIRE(again.ok());
  CHECK(again->blobs_removed == 0);
  CHECK(again->temp_files_removed == 0);
}

TEST_CASE("artifacts: concurrent writers of one name get versions 1..N, with GC running") {
  scratch_dir dir;
  auto store = open_store(dir.path(), aise::make_memory_store());
  constexpr int threads = 4;
  constexpr int per_thread = 25;
  std::atomic<bool> writing{true};
  std::atomic<int> failures{0};
  std::thread collector([&] {
    while (writing.load()) {
      if (!store->collect_garbage().ok()) failures.fetch_add(1);
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < threads; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        // Half the contents repeat across threads (blobs shared and
        // touched while the collector runs).
        const std::string content = i % 2 == 0 ? "shared " + std::to_string(i)
                                               : "t" + std::to_string(t) + " i" + std::to_string(i);
        auto w = store->create(spec("same-name"));
        if (!w || !w->write(content) || !w->commit()) failures.fetch_add(1);
      }
    });
  }
  for (auto& w : writers) w.join();
  writing = false;
  collector.join();
  CHECK(failures.load() == 0);

  auto versions = store->versions("p", "same-name");
  REQUIRE(versions.ok());
  REQUIRE(versions->size() == threads * per_thread);
  std::multiset<std::string> seen;
  for (std::size_t i = 0; i < versions->size(); ++i) {
    const auto& v = versions->at(i);
    CHECK(v.version == static_cast<int>(i + 1));
    auto content = store->get(v.id);
    REQUIRE_MESSAGE(content.ok(), content.error().describe());
    CHECK(aise::sha256_hex(*content) == v.sha256);
    seen.insert(*content);
  }
  for (int t = 0; t < threads; ++t) {
    for (int i = 1; i < per_thread; i += 2) {
      CHECK(seen.count("t" + std::to_string(t) + " i" + std::to_string(i)) == 1);
    }
  }
  CHECK(seen.count("shared 0") == threads);
  // Everything is referenced: a last collection removes nothing.
  auto stats = store->collect_garbage();
  REQUIRE(stats.ok());
  CHECK(stats->blobs_removed == 0);
  CHECK(files_under(dir.path() / "tmp").empty());
}
