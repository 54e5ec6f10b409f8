#pragma once
/// @file
/// The team's working directory and the few file operations the agents need.
///
/// Every call here does file I/O and may block briefly; agents doing more
/// than a few small files should move it to `agent::run_blocking`.

#include <aise/error.hpp>

#include <filesystem>
#include <string>
#include <string_view>

namespace team {

/// A fresh private directory (mode 0700) under $TMPDIR or /tmp, removed with
/// everything in it when destroyed unless `keep` was called. Movable.
class scratch_dir {
 public:
  /// Creates "<tmp>/<prefix>XXXXXX" with mkdtemp. `unavailable` on failure.
  static aise::result<scratch_dir> create(std::string_view prefix);

  scratch_dir(scratch_dir&& other) noexcept;
  scratch_dir& operator=(scratch_dir&& other) noexcept;
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
  ~scratch_dir();

  /// The directory's absolute path.
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  /// Leaves the directory in place on destruction.
  void keep() noexcept { keep_ = true; }

 private:
  explicit scratch_dir(std::filesystem::path p) : path_(std::move(p)) {}
  void remove() noexcept;

  std::filesystem::path path_;
  bool keep_ = false;
};

/// Writes `content` to `file` (replacing it), creating missing parent
/// directories. `unavailable` naming the file on failure.
aise::result<void> write_file(const std::filesystem::path& file, std::string_view content);

/// Reads a whole file. `not_found` / `unavailable` naming the file on failure.
aise::result<std::string> read_file(const std::filesystem::path& file);

/// A short content fingerprint, "fnv1a:<16 hex digits>". It detects changes
/// between steps; it is not a cryptographic hash.
std::string fingerprint(std::string_view content);

}  // namespace team
