#include "workspace.hpp"

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fmt/format.h>
#include <fstream>
#include <iterator>
#include <system_error>
#include <unistd.h>
#include <vector>

namespace team {

namespace fs = std::filesystem;

aise::result<scratch_dir> scratch_dir::create(std::string_view prefix) {
  const char* tmp = std::getenv("TMPDIR");
  const fs::path base = (tmp != nullptr && *tmp != '\0') ? fs::path(tmp) : fs::path("/tmp");
  std::string pattern = (base / (std::string(prefix) + "XXXXXX")).string();
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (::mkdtemp(buffer.data()) == nullptr) {
    return aise::fail(aise::errc::unavailable,
                      fmt::format("mkdtemp {}: {}", pattern, std::strerror(errno)));
  }
  std::error_code ec;
  fs::path dir = fs::absolute(fs::path(buffer.data()), ec);
  if (ec) dir = fs::path(buffer.data());
  return scratch_dir(std::move(dir));
}

scratch_dir::scratch_dir(scratch_dir&& other) noexcept
    : path_(std::move(other.path_)), keep_(other.keep_) {
  other.path_.clear();
}

scratch_dir& scratch_dir::operator=(scratch_dir&& other) noexcept {
  if (this != &other) {
    remove();
    path_ = std::move(other.path_);
    keep_ = other.keep_;
    other.path_.clear();
  }
  return *this;
}

scratch_dir::~scratch_dir() {
  remove();
}

void scratch_dir::remove() noexcept {
  if (path_.empty() || keep_) return;
  std::error_code ec;  // best effort: a leftover temp directory is not worth an exception
  fs::remove_all(path_, ec);
}

aise::result<void> write_file(const fs::path& file, std::string_view content) {
  std::error_code ec;
  if (file.has_parent_path()) fs::create_directories(file.parent_path(), ec);
  if (ec) {
    return aise::fail(
        aise::errc::unavailable,
        fmt::format("cannot create {}: {}", file.parent_path().string(), ec.message()));
  }
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  out.close();
  if (!out)
    return aise::fail(aise::errc::unavailable, fmt::format("cannot write {}", file.string()));
  return aise::ok();
}

aise::result<std::string> read_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::error_code ec;
    const bool missing = !fs::exists(file, ec);
    return aise::fail(missing ? aise::errc::not_found : aise::errc::unavailable,
                      fmt::format("cannot read {}", file.string()));
  }
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string fingerprint(std::string_view content) {
  std::uint64_t h = 14695981039346656037ULL;  // FNV-1a, 64 bit
  for (const char c : content) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  return fmt::format("fnv1a:{:016x}", h);
}

}  // namespace team
