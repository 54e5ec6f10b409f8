#include <aise/clock.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace aise {

namespace {

class system_clock_impl final : public clock {
 public:
  [[nodiscard]] time_point now() const noexcept override {
    return std::chrono::system_clock::now();
  }
};

// Writes `value` as exactly `width` decimal digits. Hand-rolled rather than
// printf/iostreams so that no locale can change the output.
void append_digits(std::string& out, std::int64_t value, int width) {
  char buf[20];
  for (int i = width - 1; i >= 0; --i) {
    buf[i] = static_cast<char>('0' + value % 10);
    value /= 10;
  }
  out.append(buf, static_cast<std::size_t>(width));
}

// Reads exactly `count` ASCII digits at `pos`; false on anything else.
bool read_digits(const std::string& text, std::size_t pos, std::size_t count, int& out) noexcept {
  if (pos + count > text.size()) return false;
  int value = 0;
  for (std::size_t i = pos; i < pos + count; ++i) {
    const char c = text[i];
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  out = value;
  return true;
}

}  // namespace

std::shared_ptr<clock> make_system_clock() {
  return std::make_shared<system_clock_impl>();
}

manual_clock::manual_clock(time_point start) : now_(start) {}

time_point manual_clock::now() const noexcept {
  std::lock_guard lock(mutex_);
  return now_;
}

void manual_clock::advance(duration d) {
  if (d < duration::zero()) return;
  {
    std::lock_guard lock(mutex_);
    // Saturate instead of overflowing: "advance by a lot" in a test means
    // "past every timer", not "wrap around to 1677". Only a clock after the
    // epoch can overflow, and only then is max() - now_ itself safe.
    const auto step = std::chrono::duration_cast<time_point::duration>(d);
    const bool overflows =
        now_.time_since_epoch() > time_point::duration::zero() && step > time_point::max() - now_;
    now_ = overflows ? time_point::max() : now_ + step;
  }
  notify();
}

void manual_clock::set(time_point t) {
  {
    std::lock_guard lock(mutex_);
    if (t <= now_) return;
    now_ = t;
  }
  notify();
}

std::size_t manual_clock::add_listener(std::function<void()> fn) {
  std::lock_guard lock(mutex_);
  const std::size_t key = next_key_++;
  listeners_.emplace_back(key, std::move(fn));
  return key;
}

void manual_clock::remove_listener(std::size_t key) {
  std::lock_guard lock(mutex_);
  std::erase_if(listeners_, [key](const auto& entry) { return entry.first == key; });
}

time_point manual_clock::default_start() noexcept {
  using namespace std::chrono;
  return sys_days{year{2026} / January / 1};
}

void manual_clock::notify() {
  // Listeners run outside the lock on a copy: they read now() and may add or
  // remove listeners. A listener removed concurrently can therefore still be
  // called once; owners guard against that (timer_service holds a weak_ptr).
  std::vector<std::pair<std::size_t, std::function<void()>>> listeners;
  {
    std::lock_guard lock(mutex_);
    listeners = listeners_;
  }
  for (const auto& entry : listeners) entry.second();
}

std::string format_time(time_point t) {
  using namespace std::chrono;
  const auto micros = floor<microseconds>(t);
  const auto day = floor<days>(micros);
  const year_month_day ymd{day};
  const hh_mm_ss hms{micros - day};

  std::string out;
  out.reserve(27);
  append_digits(out, static_cast<int>(ymd.year()), 4);
  out += '-';
  append_digits(out, static_cast<unsigned>(ymd.month()), 2);
  out += '-';
  append_digits(out, static_cast<unsigned>(ymd.day()), 2);
  out += 'T';
  append_digits(out, hms.hours().count(), 2);
  out += ':';
  append_digits(out, hms.minutes().count(), 2);
  out += ':';
  append_digits(out, hms.seconds().count(), 2);
  out += '.';
  append_digits(out, hms.subseconds().count(), 6);
  out += 'Z';
  return out;
}

bool parse_time(const std::string& text, time_point& out) noexcept {
  using namespace std::chrono;
  // Fixed layout "YYYY-MM-DDTHH:MM:SS" then an optional ".f{1,9}" then "Z".
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
  if (text.size() < 20 || !read_digits(text, 0, 4, y) || text[4] != '-' ||
      !read_digits(text, 5, 2, mo) || text[7] != '-' || !read_digits(text, 8, 2, d) ||
      text[10] != 'T' || !read_digits(text, 11, 2, h) || text[13] != ':' ||
      !read_digits(text, 14, 2, mi) || text[16] != ':' || !read_digits(text, 17, 2, s)) {
    return false;
  }

  std::size_t pos = 19;
  std::int64_t nanos = 0;
  if (text[pos] == '.') {
    ++pos;
    int digits = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      if (++digits > 9) return false;
      nanos = nanos * 10 + (text[pos] - '0');
      ++pos;
    }
    if (digits == 0) return false;
    for (int i = digits; i < 9; ++i) nanos *= 10;
  }
  if (pos + 1 != text.size() || text[pos] != 'Z') return false;

  // Leap seconds (":60") are rejected: system_clock cannot represent them.
  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)},
                           day{static_cast<unsigned>(d)}};
  if (!ymd.ok() || h > 23 || mi > 59 || s > 59) return false;

  // Reject instants the time_point cannot hold (about 1677..2262 with
  // nanosecond ticks) rather than let the arithmetic below overflow.
  const std::int64_t secs =
      (sys_days{ymd}.time_since_epoch().count() * 86400LL) + (h * 3600LL) + (mi * 60LL) + s;
  constexpr std::int64_t max_secs = floor<seconds>(time_point::max()).time_since_epoch().count();
  constexpr std::int64_t min_secs = ceil<seconds>(time_point::min()).time_since_epoch().count();
  if (secs >= max_secs || secs <= min_secs) return false;

  out = time_point{seconds{secs}} + duration_cast<time_point::duration>(nanoseconds{nanos});
  return true;
}

}  // namespace aise
