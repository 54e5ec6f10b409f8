// The content-addressed artifact store on a local directory (POSIX file
// calls: the atomicity and durability rules need open/fsync/rename on file
// descriptors, which std::filesystem does not offer).
//
// Layout: root/blobs/<2 hex>/<62 hex> (the SHA-256 of the content) and
// root/tmp/<writer>.tmp. Commit and garbage collection exclude each other
// through gc_mutex: a commit holds it shared from placing its blob until
// its metadata is written; the collector holds it exclusively while it
// decides about and removes one blob. So within one store a blob is never
// removed between "it exists" and "its metadata exists"; across processes
// the grace period covers that window (docs/artifacts.md).

#include <aise/artifacts.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <sys/stat.h>
#include <sys/types.h>
#include <system_error>
#include <unistd.h>
#include <unordered_set>
#include <utility>

namespace aise {
namespace {

namespace fs = std::filesystem;

std::string os_message(int err) {
  return std::generic_category().message(err);
}

error os_error(std::string_view what, const std::string& path, int err) {
  return fail(errc::unavailable,
              fmt::format("{} {}: {} (errno {})", what, path, os_message(err), err));
}

bool is_lower_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool is_digest(std::string_view s) {
  return s.size() == 64 && is_lower_hex(s);
}

std::string in_quotes(std::string_view s) {
  return fmt::format("\"{}\"", s);
}

// Runs `f`, turning an escaping exception (std::bad_alloc, in practice)
// into an `internal` error.
template <class F>
auto guarded(std::string_view what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::exception& e) {
    return fail(errc::internal, fmt::format("artifact store: {}: {}", what, e.what()));
  } catch (...) {
    return fail(errc::internal, fmt::format("artifact store: {}: unknown exception", what));
  }
}

// Owns a file descriptor.
class file {
 public:
  file() = default;
  explicit file(int fd) noexcept : fd_(fd) {}
  file(file&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  file& operator=(file&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  file(const file&) = delete;
  file& operator=(const file&) = delete;
  ~file() { reset(); }

  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] bool is_open() const noexcept { return fd_ >= 0; }
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Closes and reports the error close() gives (NFS reports late write
  // errors there).
  int close() noexcept {
    const int fd = std::exchange(fd_, -1);
    if (fd < 0) return 0;
    return ::close(fd) == 0 ? 0 : errno;
  }

 private:
  int fd_ = -1;
};

int fsync_directory(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  file dir(fd);
  if (::fsync(dir.get()) != 0) return errno;
  return dir.close();
}

std::uint64_t random_u64() {
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
}

time_point mtime_of(const struct ::stat& st) {
  return time_point(std::chrono::duration_cast<time_point::duration>(
      std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
}

}  // namespace

// ---------------------------------------------------------------- store --

class artifact_store::impl {
 public:
  explicit impl(artifact_store_options o)
      : options(std::move(o)),
        blobs((options.root / "blobs").string()),
        tmp((options.root / "tmp").string()),
        tag_(fmt::format("{:016x}", random_u64())) {}

  std::string new_id() { return fmt::format("a-{}-{:010}", tag_, next()); }
  std::string new_temp_name() { return fmt::format("{}-{:010}.tmp", tag_, next()); }

  [[nodiscard]] std::string blob_dir(std::string_view digest) const {
    return fmt::format("{}/{}", blobs, digest.substr(0, 2));
  }
  [[nodiscard]] std::string blob_path(std::string_view digest) const {
    return fmt::format("{}/{}/{}", blobs, digest.substr(0, 2), digest.substr(2));
  }
  [[nodiscard]] std::string temp_path(std::string_view name) const {
    return fmt::format("{}/{}", tmp, name);
  }

  // Temporary files of live writers: the collector never removes them.
  void add_active(const std::string& name) {
    std::lock_guard lock(active_mutex_);
    active_.insert(name);
  }
  void remove_active(const std::string& name) noexcept {
    std::lock_guard lock(active_mutex_);
    active_.erase(name);
  }
  bool is_active(const std::string& name) {
    std::lock_guard lock(active_mutex_);
    return active_.count(name) != 0;
  }

  const artifact_store_options options;
  const std::string blobs;
  const std::string tmp;
  std::shared_mutex gc_mutex;

 private:
  std::uint64_t next() noexcept { return counter_.fetch_add(1, std::memory_order_relaxed); }

  const std::string tag_;
  std::atomic<std::uint64_t> counter_{0};
  std::mutex active_mutex_;
  std::unordered_set<std::string> active_;
};

// --------------------------------------------------------------- writer --

class artifact_writer::impl {
 public:
  impl(std::shared_ptr<artifact_store::impl> s, artifact_spec sp, std::string name, file f)
      : store_(std::move(s)),
        spec_(std::move(sp)),
        temp_name_(std::move(name)),
        temp_path_(store_->temp_path(temp_name_)),
        file_(std::move(f)) {
    buffer_.reserve(store_->options.write_buffer);
  }
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;
  ~impl() { discard(); }

  result<void> write(const void* data, std::size_t n) {
    if (auto closed = check_open(); !closed) return closed;
    const std::uint64_t max = store_->options.max_size;
    if (max != 0 && (size_ > max || n > max - size_)) {
      return failed(fail(errc::limit_exceeded,
                         fmt::format("artifact {} in project {} is larger than max_size ({} bytes)",
                                     in_quotes(spec_.name), in_quotes(spec_.project), max)));
    }
    hasher_.update(data, n);
    size_ += n;
    const std::size_t capacity = buffer_.capacity();
    if (n < capacity) {
      if (buffer_.size() + n > capacity) {
        if (auto r = flush(); !r) return r;
      }
      const auto* p = static_cast<const char*>(data);
      buffer_.insert(buffer_.end(), p, p + n);
      return ok();
    }
    if (auto r = flush(); !r) return r;
    if (auto r = write_all(data, n); !r) return failed(r.error());
    return ok();
  }

  result<artifact_meta> commit() {
    if (auto closed = check_open(); !closed) return closed.error();
    if (auto r = flush(); !r) return r.error();
    const bool sync = store_->options.sync;
    if (sync && ::fsync(file_.get()) != 0) {
      return failed(os_error("cannot sync temporary file", temp_path_, errno));
    }
    if (const int err = file_.close(); err != 0) {
      return failed(os_error("cannot close temporary file", temp_path_, err));
    }
    const std::string digest = hasher_.hex_digest();
    const std::string path = store_->blob_path(digest);

    std::shared_lock gc_lock(store_->gc_mutex);
    // Same content already stored: refresh its time (so a collector in
    // another process sees it as young) and drop ours. A blob of the wrong
    // size (damaged, e.g. unsynced before a crash) is replaced by ours.
    bool place = true;
    struct ::stat st {};
    if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        static_cast<std::uint64_t>(st.st_size) == size_) {
      if (::utimensat(AT_FDCWD, path.c_str(), nullptr, 0) == 0) {
        place = false;
      } else if (errno != ENOENT) {
        return failed(os_error("cannot touch blob", path, errno));
      }
    }
    if (!place) {
      discard();
    } else {
      const std::string dir = store_->blob_dir(digest);
      if (::mkdir(dir.c_str(), 0755) == 0) {
        if (sync) {
          if (const int err = fsync_directory(store_->blobs); err != 0) {
            return failed(os_error("cannot sync directory", store_->blobs, err));
          }
        }
      } else if (errno != EEXIST) {
        return failed(os_error("cannot create directory", dir, errno));
      }
      if (::rename(temp_path_.c_str(), path.c_str()) != 0) {
        return failed(os_error("cannot move temporary file into place as", path, errno));
      }
      renamed_ = true;
      store_->remove_active(temp_name_);
      if (sync) {
        if (const int err = fsync_directory(dir); err != 0) {
          // The blob is in place but maybe not durable: no metadata, so
          // nothing refers to it and the collector will remove it.
          return failed(os_error("cannot sync directory", dir, err));
        }
      }
    }
    state_ = state::committed;

    artifact_meta meta;
    meta.id = store_->new_id();
    meta.project = std::move(spec_.project);
    meta.task = std::move(spec_.task);
    meta.name = std::move(spec_.name);
    meta.media_type = std::move(spec_.media_type);
    meta.size = size_;
    meta.sha256 = digest;
    return store_->options.metadata->put_artifact(std::move(meta));
  }

  void abort() noexcept {
    if (state_ != state::open) return;
    discard();
    state_ = state::aborted;
  }

  [[nodiscard]] std::uint64_t size() const noexcept { return size_; }
  [[nodiscard]] bool is_open() const noexcept { return state_ == state::open; }

 private:
  enum class state { open, committed, aborted };

  result<void> check_open() const {
    if (state_ == state::open) return ok();
    if (failure_) return *failure_;
    return fail(errc::invalid_argument, state_ == state::committed
                                            ? "artifact writer: already committed"
                                            : "artifact writer: aborted");
  }

  // Closes the writer after an error: the temporary file goes, the error
  // is kept for later calls.
  aise::error failed(aise::error e) {
    discard();
    state_ = state::aborted;
    failure_ = e;
    return e;
  }

  result<void> flush() {
    if (buffer_.empty()) return ok();
    auto r = write_all(buffer_.data(), buffer_.size());
    buffer_.clear();
    if (!r) return failed(r.error());
    return ok();
  }

  result<void> write_all(const void* data, std::size_t n) {
    const auto* p = static_cast<const char*>(data);
    while (n > 0) {
      const ::ssize_t w = ::write(file_.get(), p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        return os_error("cannot write temporary file", temp_path_, errno);
      }
      if (w == 0) return os_error("cannot write temporary file", temp_path_, ENOSPC);
      p += w;
      n -= static_cast<std::size_t>(w);
    }
    return ok();
  }

  // Closes and removes the temporary file (unless it became the blob).
  void discard() noexcept {
    file_.reset();
    if (!renamed_ && !temp_path_.empty()) {
      ::unlink(temp_path_.c_str());
      store_->remove_active(temp_name_);
      temp_path_.clear();
    }
    std::vector<char>().swap(buffer_);
  }

  std::shared_ptr<artifact_store::impl> store_;
  artifact_spec spec_;
  std::string temp_name_;
  std::string temp_path_;
  file file_;
  sha256 hasher_;
  std::uint64_t size_ = 0;
  std::vector<char> buffer_;
  state state_ = state::open;
  bool renamed_ = false;
  std::optional<aise::error> failure_;
};

artifact_writer::artifact_writer(std::unique_ptr<impl> i) noexcept : impl_(std::move(i)) {}
artifact_writer::artifact_writer(artifact_writer&&) noexcept = default;
artifact_writer& artifact_writer::operator=(artifact_writer&& o) noexcept {
  if (this != &o) {
    abort();
    impl_ = std::move(o.impl_);
  }
  return *this;
}
artifact_writer::~artifact_writer() {
  abort();
}

result<void> artifact_writer::write(const void* data, std::size_t n) {
  if (!impl_) return fail(errc::invalid_argument, "artifact writer: moved from");
  return guarded("write", [&] { return impl_->write(data, n); });
}

result<artifact_meta> artifact_writer::commit() {
  if (!impl_) return fail(errc::invalid_argument, "artifact writer: moved from");
  return guarded("commit", [&] { return impl_->commit(); });
}

void artifact_writer::abort() noexcept {
  if (impl_) impl_->abort();
}

std::uint64_t artifact_writer::size() const noexcept {
  return impl_ ? impl_->size() : 0;
}
bool artifact_writer::is_open() const noexcept {
  return impl_ && impl_->is_open();
}

// --------------------------------------------------------------- reader --

class artifact_reader::impl {
 public:
  impl(artifact_meta m, file f, std::uint64_t offset, std::uint64_t length)
      : meta(std::move(m)), file_(std::move(f)), offset(offset), length(length) {}

  result<std::size_t> read(void* buffer, std::size_t capacity) {
    const std::uint64_t left = length - position;
    if (left == 0 || capacity == 0) return std::size_t{0};
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(capacity, left));
    for (;;) {
      const ::ssize_t r = ::pread(file_.get(), buffer, n, static_cast<::off_t>(offset + position));
      if (r < 0) {
        if (errno == EINTR) continue;
        return os_error("cannot read blob of artifact " + in_quotes(meta.id) + ":", meta.sha256,
                        errno);
      }
      if (r == 0) {
        return fail(errc::unavailable,
                    fmt::format("blob of artifact {} ended after {} of {} bytes (truncated)",
                                in_quotes(meta.id), offset + position, meta.size));
      }
      position += static_cast<std::uint64_t>(r);
      return static_cast<std::size_t>(r);
    }
  }

  artifact_meta meta;
  file file_;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::uint64_t position = 0;
};

artifact_reader::artifact_reader(std::unique_ptr<impl> i) noexcept : impl_(std::move(i)) {}
artifact_reader::artifact_reader(artifact_reader&&) noexcept = default;
artifact_reader& artifact_reader::operator=(artifact_reader&&) noexcept = default;
artifact_reader::~artifact_reader() = default;

result<std::size_t> artifact_reader::read(void* buffer, std::size_t capacity) {
  if (!impl_) return fail(errc::invalid_argument, "artifact reader: moved from");
  return impl_->read(buffer, capacity);
}

const artifact_meta& artifact_reader::meta() const noexcept {
  static const artifact_meta none{};
  return impl_ ? impl_->meta : none;
}
std::uint64_t artifact_reader::size() const noexcept {
  return impl_ ? impl_->length : 0;
}
std::uint64_t artifact_reader::offset() const noexcept {
  return impl_ ? impl_->offset : 0;
}
std::uint64_t artifact_reader::remaining() const noexcept {
  return impl_ ? impl_->length - impl_->position : 0;
}

// ---------------------------------------------------------- the store --

artifact_store::artifact_store(std::shared_ptr<impl> i) noexcept : impl_(std::move(i)) {}
artifact_store::~artifact_store() = default;

const artifact_store_options& artifact_store::options() const noexcept {
  return impl_->options;
}

result<artifact_writer> artifact_store::create(artifact_spec spec) {
  return guarded("create", [&]() -> result<artifact_writer> {
    if (spec.project.empty()) {
      return fail(errc::invalid_argument,
                  "artifact " + in_quotes(spec.name) + " without a project");
    }
    if (spec.name.empty()) {
      return fail(errc::invalid_argument,
                  "artifact without a name in project " + in_quotes(spec.project));
    }
    // Registered before the file exists, so the collector never sees it
    // unregistered.
    std::string name = impl_->new_temp_name();
    impl_->add_active(name);
    const std::string path = impl_->temp_path(name);
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      const int err = errno;
      impl_->remove_active(name);
      return os_error("cannot create temporary file", path, err);
    }
    return artifact_writer(
        std::make_unique<artifact_writer::impl>(impl_, std::move(spec), std::move(name), file(fd)));
  });
}

result<artifact_meta> artifact_store::put(artifact_spec spec, std::string_view content) {
  auto w = create(std::move(spec));
  if (!w) return w.error();
  if (auto r = w->write(content); !r) return r.error();
  return w->commit();
}

result<artifact_reader> artifact_store::open(std::string_view id, std::uint64_t offset,
                                             std::uint64_t length) {
  return guarded("open", [&]() -> result<artifact_reader> {
    auto meta = impl_->options.metadata->get_artifact(id);
    if (!meta) return meta.error();
    if (!is_digest(meta->sha256)) {
      // Never build a path from a digest that is not one.
      return fail(errc::internal, fmt::format("artifact {} has a malformed digest {}",
                                              in_quotes(id), in_quotes(meta->sha256)));
    }
    if (offset > meta->size) {
      return fail(errc::invalid_argument,
                  fmt::format("offset {} is beyond the end of artifact {} ({} bytes)", offset,
                              in_quotes(id), meta->size));
    }
    const std::uint64_t len = std::min(length, meta->size - offset);
    const std::string path = impl_->blob_path(meta->sha256);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (err == ENOENT) {
        return fail(errc::unavailable,
                    fmt::format("blob {} of artifact {} is missing", meta->sha256, in_quotes(id)));
      }
      return os_error("cannot open blob of artifact " + in_quotes(id) + ":", path, err);
    }
    file f(fd);
    struct ::stat st {};
    if (::fstat(f.get(), &st) != 0) return os_error("cannot stat blob", path, errno);
    if (static_cast<std::uint64_t>(st.st_size) != meta->size) {
      return fail(errc::unavailable,
                  fmt::format("blob {} of artifact {} has {} bytes, its metadata says {}",
                              meta->sha256, in_quotes(id), st.st_size, meta->size));
    }
    ::posix_fadvise(f.get(), static_cast<::off_t>(offset), static_cast<::off_t>(len),
                    POSIX_FADV_SEQUENTIAL);
    return artifact_reader(
        std::make_unique<artifact_reader::impl>(std::move(*meta), std::move(f), offset, len));
  });
}

result<std::string> artifact_store::get(std::string_view id, std::uint64_t max_bytes) {
  return guarded("get", [&]() -> result<std::string> {
    auto reader = open(id);
    if (!reader) return reader.error();
    if (reader->size() > max_bytes) {
      return fail(errc::limit_exceeded,
                  fmt::format("artifact {} has {} bytes, more than the {} asked for; stream it "
                              "with open()",
                              in_quotes(id), reader->size(), max_bytes));
    }
    std::string out(static_cast<std::size_t>(reader->size()), '\0');
    std::size_t at = 0;
    while (at < out.size()) {
      auto n = reader->read(out.data() + at, out.size() - at);
      if (!n) return n.error();
      at += *n;
    }
    return out;
  });
}

result<artifact_meta> artifact_store::info(std::string_view id) {
  return impl_->options.metadata->get_artifact(id);
}

result<std::vector<artifact_meta>> artifact_store::versions(std::string_view project,
                                                            std::string_view name) {
  return impl_->options.metadata->artifact_versions(project, name);
}

result<std::vector<artifact_meta>> artifact_store::list(std::string_view project) {
  return impl_->options.metadata->list_artifacts(project);
}

result<artifact_gc_stats> artifact_store::collect_garbage() {
  return guarded("collect_garbage", [&]() -> result<artifact_gc_stats> {
    artifact_gc_stats stats;
    const duration grace = impl_->options.gc_grace;
    auto young = [&](const struct ::stat& st) {
      return std::chrono::system_clock::now() - mtime_of(st) < grace;
    };

    // Blobs: blobs/<2 hex>/<62 hex>; anything else is not ours and stays.
    std::error_code ec;
    for (fs::directory_iterator prefixes(impl_->blobs, ec), end; !ec && prefixes != end;
         prefixes.increment(ec)) {
      const std::string prefix = prefixes->path().filename().string();
      if (prefix.size() != 2 || !is_lower_hex(prefix)) continue;
      std::error_code ec2;
      for (fs::directory_iterator blobs(prefixes->path(), ec2); !ec2 && blobs != end;
           blobs.increment(ec2)) {
        const std::string rest = blobs->path().filename().string();
        const std::string digest = prefix + rest;
        if (!is_digest(digest)) continue;
        const std::string path = impl_->blob_path(digest);
        struct ::stat st {};
        if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
        ++stats.blobs_seen;
        if (young(st)) {
          ++stats.blobs_kept_young;
          continue;
        }
        std::unique_lock gc_lock(impl_->gc_mutex);
        // Look again under the lock: a commit may have touched it.
        if (::lstat(path.c_str(), &st) != 0) continue;
        if (young(st)) {
          ++stats.blobs_kept_young;
          continue;
        }
        auto in_use = impl_->options.metadata->artifact_digest_in_use(digest);
        if (!in_use) return in_use.error();
        if (*in_use) continue;
        if (::unlink(path.c_str()) != 0) {
          if (errno == ENOENT) continue;
          return os_error("cannot remove blob", path, errno);
        }
        ++stats.blobs_removed;
        stats.bytes_removed += static_cast<std::uint64_t>(st.st_size);
      }
      if (ec2) return os_error("cannot list", prefixes->path().string(), ec2.value());
    }
    if (ec) return os_error("cannot list", impl_->blobs, ec.value());

    // Temporary files of writers that are gone (crashed processes).
    for (fs::directory_iterator temps(impl_->tmp, ec), end; !ec && temps != end;
         temps.increment(ec)) {
      const std::string name = temps->path().filename().string();
      if (impl_->is_active(name)) continue;
      const std::string path = impl_->temp_path(name);
      struct ::stat st {};
      if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || young(st)) continue;
      // A writer of this store registers its name before creating the
      // file, so an unregistered file is not one of ours in flight.
      if (::unlink(path.c_str()) != 0) {
        if (errno == ENOENT) continue;
        return os_error("cannot remove temporary file", path, errno);
      }
      ++stats.temp_files_removed;
      stats.temp_bytes_removed += static_cast<std::uint64_t>(st.st_size);
    }
    if (ec) return os_error("cannot list", impl_->tmp, ec.value());
    return stats;
  });
}

result<std::shared_ptr<artifact_store>> open_artifact_store(artifact_store_options options) {
  return guarded("open", [&]() -> result<std::shared_ptr<artifact_store>> {
    if (options.root.empty()) return fail(errc::invalid_argument, "artifact store: no root");
    if (!options.metadata) {
      return fail(errc::invalid_argument, "artifact store: no metadata store");
    }
    if (options.gc_grace < duration::zero()) {
      return fail(errc::invalid_argument, "artifact store: negative gc_grace");
    }
    std::error_code ec;
    options.root = fs::absolute(options.root, ec).lexically_normal();
    if (ec) return os_error("artifact store: bad root", options.root.string(), ec.value());
    for (const char* sub : {"blobs", "tmp"}) {
      const fs::path dir = options.root / sub;
      fs::create_directories(dir, ec);
      if (ec) return os_error("artifact store: cannot create directory", dir.string(), ec.value());
      if (::access(dir.c_str(), W_OK | X_OK) != 0) {
        return os_error("artifact store: cannot write to", dir.string(), errno);
      }
    }
    return std::make_shared<artifact_store>(
        std::make_shared<artifact_store::impl>(std::move(options)));
  });
}

}  // namespace aise
