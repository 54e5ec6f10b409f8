#pragma once
/// @file
/// The artifact store: code, documents and logs that tasks produce, kept by
/// content (SHA-256) under a local directory, with their metadata (project,
/// task, name, media type, size, digest, version) in an `aise::store`.
/// See docs/artifacts.md for the layout on disk and the failure cases.
///
/// Contract:
/// - Names are metadata only. A user-given name (any bytes, "../x" and "a/b"
///   included) is never used to build a file path; blobs are named by their
///   digest.
/// - Writing the same (project, name) again makes a new version (the store
///   assigns 1, 2, … without gaps, also for concurrent writers); every
///   version stays readable until its metadata is removed.
/// - Atomic: an artifact becomes visible (its metadata exists) only after its
///   whole content is in place under its digest, synced to disk when
///   `artifact_store_options::sync` is set. A failed, aborted or abandoned
///   write leaves no metadata and no blob (only, after a crash, a temporary
///   file that `collect_garbage` removes).
/// - Streaming: writers and readers move the content in pieces; nothing ever
///   holds a whole artifact in memory (except `put` and `get`, which are for
///   small data).
/// - Thread safety: every member of `artifact_store` may be called from any
///   thread concurrently (any number of writers and readers, also of one
///   name). An `artifact_writer` or `artifact_reader` is used by one thread
///   at a time; different ones are independent.
/// - Blocking: calls do file I/O (and `commit` fsyncs) and call the metadata
///   store synchronously. From an agent, call them through
///   `runtime::run_blocking`.
/// - Errors are values: invalid_argument (a bad spec, range or use of a
///   closed writer), not_found (unknown artifact id), limit_exceeded (over
///   `max_size`), unavailable (a file system error, e.g. disk full; the
///   message names the operation and the OS error), and the metadata
///   store's own errors. No exception escapes a member function.

#include <aise/clock.hpp>
#include <aise/core_export.hpp>
#include <aise/error.hpp>
#include <aise/sha256.hpp>
#include <aise/store.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace aise {

/// Options of an artifact store.
struct AISE_CORE_EXPORT artifact_store_options {
  /// Root directory; created (with its parents) when missing. Required.
  /// Holds `blobs/` and `tmp/`; nothing else of libaise's is put there.
  std::filesystem::path root;
  /// Where the metadata goes. Required. Several artifact stores may share
  /// one metadata store only if they share the root too.
  std::shared_ptr<aise::store> metadata;
  /// Largest artifact in bytes; 0 = no limit. A write beyond it fails with
  /// `limit_exceeded` and stores nothing.
  std::uint64_t max_size = 0;
  /// `collect_garbage` leaves alone blobs and temporary files modified
  /// within this period, so a blob renamed into place by a writer in
  /// another process is never removed before that writer has inserted its
  /// metadata. Within one artifact store a lock makes this exact; the
  /// period protects writers in other processes sharing the root and slow
  /// writers of other processes. Keep it far above the time one commit
  /// takes; tests set 0.
  duration gc_grace = std::chrono::minutes(10);
  /// fsync every blob and the directories it is renamed into before its
  /// metadata is written, so a committed artifact survives a crash or power
  /// loss. Turn off only for scratch data.
  bool sync = true;
  /// Size of a writer's buffer: writes smaller than this are gathered
  /// before they reach the file. 0 = unbuffered.
  std::size_t write_buffer = 64 * 1024;
};

/// What to store: everything in `artifact_meta` that the caller chooses.
struct AISE_CORE_EXPORT artifact_spec {
  std::string project;  ///< Required.
  std::string task;     ///< Producing task, or empty.
  std::string name;     ///< Required (non-empty); any bytes; never a file path.
  std::string media_type = "application/octet-stream";
};

/// What one `collect_garbage` call found and removed.
struct AISE_CORE_EXPORT artifact_gc_stats {
  std::uint64_t blobs_seen = 0;          ///< Blobs looked at.
  std::uint64_t blobs_removed = 0;       ///< Unreferenced blobs older than the grace period.
  std::uint64_t bytes_removed = 0;       ///< Their total size.
  std::uint64_t blobs_kept_young = 0;    ///< Unreferenced or not, skipped for being too young.
  std::uint64_t temp_files_removed = 0;  ///< Stale temporary files (crashed writers).
  std::uint64_t temp_bytes_removed = 0;  ///< Their total size.
};

class artifact_store;

/// Streams one new artifact version into the store: `write` any number of
/// times, then `commit`. Move-only. Destroying or `abort`ing an uncommitted
/// writer discards what was written. After an error from `write` the writer
/// is aborted: later calls return that error again.
class AISE_CORE_EXPORT artifact_writer {
 public:
  artifact_writer(artifact_writer&&) noexcept;
  artifact_writer& operator=(artifact_writer&&) noexcept;
  artifact_writer(const artifact_writer&) = delete;
  artifact_writer& operator=(const artifact_writer&) = delete;
  /// Aborts an uncommitted write.
  ~artifact_writer();

  /// Appends `n` bytes at `data`. `limit_exceeded` past `max_size`,
  /// `unavailable` when the file system refuses (the message has the OS
  /// error); both abort the writer. `invalid_argument` after commit/abort.
  result<void> write(const void* data, std::size_t n);
  /// Appends `bytes`.
  result<void> write(std::string_view bytes) { return write(bytes.data(), bytes.size()); }

  /// Finishes the write: syncs the content, moves it to its digest's place
  /// (or drops it when that content is already stored), then inserts the
  /// metadata, which assigns the version. Returns the stored metadata. On
  /// an error nothing becomes visible (a blob already in place without
  /// metadata is left to `collect_garbage`). The writer is closed
  /// afterwards either way.
  result<artifact_meta> commit();

  /// Discards the write (removes the temporary file). Idempotent; a no-op
  /// after commit.
  void abort() noexcept;

  /// Bytes written so far.
  [[nodiscard]] std::uint64_t size() const noexcept;
  /// True until `commit`, `abort` or a failed `write`.
  [[nodiscard]] bool is_open() const noexcept;

  class impl;  ///< Private.

 private:
  friend class artifact_store;
  explicit artifact_writer(std::unique_ptr<impl> i) noexcept;
  std::unique_ptr<impl> impl_;
};

/// Reads one artifact version, or a byte range of it, in pieces. Move-only.
/// It keeps the content open: it stays readable through this reader even if
/// garbage collection removes the blob meanwhile.
class AISE_CORE_EXPORT artifact_reader {
 public:
  artifact_reader(artifact_reader&&) noexcept;
  artifact_reader& operator=(artifact_reader&&) noexcept;
  artifact_reader(const artifact_reader&) = delete;
  artifact_reader& operator=(const artifact_reader&) = delete;
  ~artifact_reader();

  /// Reads up to `capacity` bytes of the range into `buffer`; returns how
  /// many, 0 at the end of the range. `unavailable` on an I/O error, or when
  /// the file ended before the range did (a truncated blob).
  result<std::size_t> read(void* buffer, std::size_t capacity);
  /// Reads into `buffer`; see above.
  result<std::size_t> read(std::span<char> buffer) { return read(buffer.data(), buffer.size()); }

  /// The artifact's metadata.
  [[nodiscard]] const artifact_meta& meta() const noexcept;
  /// Length of the range being read (the whole size for a full read).
  [[nodiscard]] std::uint64_t size() const noexcept;
  /// First byte of the range within the artifact.
  [[nodiscard]] std::uint64_t offset() const noexcept;
  /// Bytes of the range not read yet.
  [[nodiscard]] std::uint64_t remaining() const noexcept;

  class impl;  ///< Private.

 private:
  friend class artifact_store;
  explicit artifact_reader(std::unique_ptr<impl> i) noexcept;
  std::unique_ptr<impl> impl_;
};

/// A content-addressed artifact store on a local directory. Create one with
/// `open_artifact_store`; share it by `shared_ptr`. Writers and readers it
/// hands out may outlive it.
class AISE_CORE_EXPORT artifact_store {
 public:
  /// "To the end of the artifact", for `open`'s `length`.
  static constexpr std::uint64_t to_end = std::numeric_limits<std::uint64_t>::max();

  ~artifact_store();
  artifact_store(const artifact_store&) = delete;
  artifact_store& operator=(const artifact_store&) = delete;

  /// Starts a new version of `spec.name` in `spec.project`.
  /// `invalid_argument` for an empty project or name; `unavailable` when
  /// the temporary file cannot be created.
  result<artifact_writer> create(artifact_spec spec);

  /// Stores `content` as a new version (create, write, commit). For small
  /// data; stream anything large through `create`.
  result<artifact_meta> put(artifact_spec spec, std::string_view content);

  /// Opens version `id` for reading, from byte `offset`, at most `length`
  /// bytes (clamped to the end), e.g. for an HTTP Range request.
  /// `not_found` for an unknown id; `invalid_argument` for an offset beyond
  /// the size (an offset equal to the size gives an empty range);
  /// `unavailable` when the blob is missing or its size does not match the
  /// metadata.
  result<artifact_reader> open(std::string_view id, std::uint64_t offset = 0,
                               std::uint64_t length = to_end);

  /// The whole content of version `id`, for small data;
  /// `limit_exceeded` when it is larger than `max_bytes`.
  result<std::string> get(std::string_view id, std::uint64_t max_bytes = 64 * 1024 * 1024);

  /// Metadata of version `id` (`not_found` if unknown).
  result<artifact_meta> info(std::string_view id);
  /// Every version of (project, name), ascending.
  result<std::vector<artifact_meta>> versions(std::string_view project, std::string_view name);
  /// The latest version of every name in `project`, ordered by name.
  result<std::vector<artifact_meta>> list(std::string_view project);

  /// Removes blobs that no artifact metadata references
  /// (`store::artifact_digest_in_use`) and temporary files of writers that
  /// are gone, leaving alone whatever was modified within `gc_grace`. Safe
  /// while writers and readers run. Stops at the first metadata or file
  /// system error and returns it (nothing is removed on a doubt).
  result<artifact_gc_stats> collect_garbage();

  /// The options in use (root made absolute).
  [[nodiscard]] const artifact_store_options& options() const noexcept;

  class impl;  ///< Private.
  /// Internal: use `open_artifact_store`.
  explicit artifact_store(std::shared_ptr<impl> i) noexcept;

 private:
  std::shared_ptr<impl> impl_;
};

/// Opens (creating the directories when missing) an artifact store.
/// `invalid_argument` without a root or a metadata store; `unavailable`
/// when the directories cannot be created or written.
AISE_CORE_EXPORT result<std::shared_ptr<artifact_store>> open_artifact_store(
    artifact_store_options options);

}  // namespace aise
