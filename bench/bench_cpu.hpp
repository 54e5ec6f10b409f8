#pragma once
// CPU accounting shared by the benchmark programs: the machine's busy and
// total ticks (/proc/stat) and this process's own CPU time, from which each
// benchmark computes how much CPU other processes used while it measured
// (other_cpu_pct, the same measure as the peers').

#include <cstdio>
#include <sys/resource.h>
#include <unistd.h>

namespace aise::bench {

/// The machine's CPU ticks since boot: busy (user, nice, system, irq,
/// softirq, steal) and total (busy + idle + iowait).
struct system_ticks {
  long long busy = 0;
  long long total = 0;
};

/// False when /proc/stat cannot be read.
inline bool read_system_ticks(system_ticks& out) {
  long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  std::FILE* f = std::fopen("/proc/stat", "r");
  if (f == nullptr) return false;
  const bool ok = std::fscanf(f, "cpu %lld %lld %lld %lld %lld %lld %lld %lld", &user, &nice,
                              &system, &idle, &iowait, &irq, &softirq, &steal) == 8;
  std::fclose(f);
  if (!ok) return false;
  out.busy = user + nice + system + irq + softirq + steal;
  out.total = out.busy + idle + iowait;
  return true;
}

/// CPU seconds (user + system) of this process, and of its reaped children
/// when `with_children`.
inline double process_cpu_seconds(bool with_children) {
  double seconds = 0;
  for (int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
    if (who == RUSAGE_CHILDREN && !with_children) break;
    rusage ru{};
    getrusage(who, &ru);
    seconds += static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
               static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  }
  return seconds;
}

/// Clock ticks per second of /proc/stat.
inline double ticks_per_second() {
  return static_cast<double>(sysconf(_SC_CLK_TCK));
}

}  // namespace aise::bench
