// The metrics registry and its Prometheus text exposition (metrics.hpp).
#include <aise/metrics.hpp>
#include <aise/orchestrator.hpp>
#include <aise/store.hpp>

#include <algorithm>
#include <cmath>
#include <exception>
#include <fmt/format.h>
#include <set>

namespace aise::metrics {

namespace {

enum type_id : int { counter_type, gauge_type, histogram_type, counter_fn_type, gauge_fn_type };

bool valid_metric_name(std::string_view n) {
  if (n.empty()) return false;
  auto head = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
  };
  if (!head(n.front())) return false;
  return std::all_of(n.begin(), n.end(), [&](char c) { return head(c) || (c >= '0' && c <= '9'); });
}

bool valid_label_name(std::string_view n) {
  if (n.empty() || n.starts_with("__") || n == "le") return false;
  auto head = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
  if (!head(n.front())) return false;
  return std::all_of(n.begin(), n.end(), [&](char c) { return head(c) || (c >= '0' && c <= '9'); });
}

// Go's ParseFloat reads these; integers print without a fraction.
std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

void escape_to(std::string& out, std::string_view s, bool quotes) {
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quotes) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

// {a="x",b="y"} (with an extra label, e.g. le, when given); nothing when empty.
void labels_to(std::string& out, const std::vector<std::string>& names, const label_values& values,
               std::string_view extra_name = {}, std::string_view extra_value = {}) {
  if (names.empty() && extra_name.empty()) return;
  out += '{';
  bool first = true;
  for (std::size_t i = 0; i < names.size() && i < values.size(); ++i) {
    if (!first) out += ',';
    first = false;
    out += names[i];
    out += "=\"";
    escape_to(out, values[i], true);
    out += '"';
  }
  if (!extra_name.empty()) {
    if (!first) out += ',';
    out += extra_name;
    out += "=\"";
    out += extra_value;
    out += '"';
  }
  out += '}';
}

void add_to(std::atomic<double>& a, double d) noexcept {
  double cur = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(cur, cur + d, std::memory_order_relaxed)) {
  }
}

}  // namespace

void gauge::add(double d) noexcept {
  add_to(value_, d);
}

histogram::histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    if (!std::isfinite(bounds_[i]) || (i > 0 && bounds_[i] <= bounds_[i - 1])) {
      throw std::invalid_argument("metrics: histogram bounds must be finite and ascending");
    }
  }
  counts_ = std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1);
}

void histogram::observe(double v) noexcept {
  auto it = std::lower_bound(bounds_.begin(), bounds_.end(), v);  // first bound >= v: le
  counts_[static_cast<std::size_t>(it - bounds_.begin())].fetch_add(1, std::memory_order_relaxed);
  add_to(sum_, v);
}

histogram::snapshot histogram::read() const {
  snapshot s;
  s.buckets.resize(bounds_.size() + 1);
  for (std::size_t i = 0; i < s.buckets.size(); ++i) {
    s.buckets[i] = counts_[i].load(std::memory_order_relaxed);
    s.count += s.buckets[i];
  }
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

std::vector<double> default_latency_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

struct registry::entry {
  std::string name;
  std::string help;
  int type = counter_type;
  std::vector<std::string> label_names;
  std::vector<double> bounds;
  std::unique_ptr<family<counter>> counters;
  std::unique_ptr<family<gauge>> gauges;
  std::unique_ptr<family<histogram>> histograms;
  std::function<std::vector<sample>()> fn;
};

registry::registry(std::size_t max_series) : max_series_(std::max<std::size_t>(1, max_series)) {}
registry::~registry() = default;

registry::entry& registry::add(std::string name, std::string help, int type,
                               std::vector<std::string> label_names,
                               const std::vector<double>* bounds) {
  if (!valid_metric_name(name))
    throw std::invalid_argument("metrics: bad metric name '" + name + "'");
  std::set<std::string_view> seen;
  for (const auto& l : label_names) {
    if (!valid_label_name(l) || !seen.insert(l).second) {
      throw std::invalid_argument("metrics: bad or repeated label name '" + l + "' of " + name);
    }
  }
  std::lock_guard lock(mutex_);
  if (auto it = entries_.find(name); it != entries_.end()) {
    entry& e = *it->second;
    bool same = e.type == type && e.label_names == label_names &&
                (bounds == nullptr || e.bounds == *bounds) && type != counter_fn_type &&
                type != gauge_fn_type;
    if (!same) throw std::invalid_argument("metrics: '" + name + "' is registered already");
    return e;
  }
  auto e = std::make_unique<entry>();
  e->name = name;
  e->help = std::move(help);
  e->type = type;
  e->label_names = std::move(label_names);
  if (bounds != nullptr) e->bounds = *bounds;
  const auto& names = e->label_names;
  switch (type) {
    case counter_type:
      e->counters = std::make_unique<family<counter>>(names, max_series_,
                                                      [] { return std::make_unique<counter>(); });
      break;
    case gauge_type:
      e->gauges = std::make_unique<family<gauge>>(names, max_series_,
                                                  [] { return std::make_unique<gauge>(); });
      break;
    case histogram_type:
      e->histograms = std::make_unique<family<histogram>>(
          names, max_series_, [b = e->bounds] { return std::make_unique<histogram>(b); });
      break;
    default:
      break;
  }
  auto& ref = *e;
  entries_.emplace(std::move(name), std::move(e));
  return ref;
}

family<counter>& registry::counter_family(std::string name, std::string help,
                                          std::vector<std::string> label_names) {
  return *add(std::move(name), std::move(help), counter_type, std::move(label_names), nullptr)
              .counters;
}

family<gauge>& registry::gauge_family(std::string name, std::string help,
                                      std::vector<std::string> label_names) {
  return *add(std::move(name), std::move(help), gauge_type, std::move(label_names), nullptr).gauges;
}

family<histogram>& registry::histogram_family(std::string name, std::string help,
                                              std::vector<std::string> label_names,
                                              std::vector<double> bounds) {
  histogram check(bounds);  // throws on bad bounds before anything is registered
  return *add(std::move(name), std::move(help), histogram_type, std::move(label_names), &bounds)
              .histograms;
}

void registry::gauge_fn(std::string name, std::string help, std::function<double()> fn) {
  if (!fn) throw std::invalid_argument("metrics: empty gauge function");
  collect(std::move(name), std::move(help), kind::gauge, {}, [fn = std::move(fn)] {
    return std::vector<sample>{{{}, fn()}};
  });
}

void registry::collect(std::string name, std::string help, kind k,
                       std::vector<std::string> label_names,
                       std::function<std::vector<sample>()> fn) {
  if (!fn) throw std::invalid_argument("metrics: empty collect function");
  auto& e =
      add(std::move(name), std::move(help), k == kind::counter ? counter_fn_type : gauge_fn_type,
          std::move(label_names), nullptr);
  std::lock_guard lock(mutex_);
  e.fn = std::move(fn);
}

std::string registry::expose() const {
  // The entries are never removed: pointers stay valid without the lock,
  // so scrape-time functions run unlocked (they may query a store).
  std::vector<const entry*> list;
  {
    std::lock_guard lock(mutex_);
    list.reserve(entries_.size());
    for (const auto& [name, e] : entries_) list.push_back(e.get());
  }
  std::string out;
  out.reserve(4096);
  for (const entry* e : list) {
    std::vector<sample> samples;
    std::function<std::vector<sample>()> fn;
    if (e->type == counter_fn_type || e->type == gauge_fn_type) {
      {
        std::lock_guard lock(mutex_);
        fn = e->fn;
      }
      if (!fn) continue;
      try {
        samples = fn();
      } catch (...) {
        continue;  // this metric is missing from this scrape
      }
    }
    out += "# HELP ";
    out += e->name;
    out += ' ';
    escape_to(out, e->help, false);
    out += "\n# TYPE ";
    out += e->name;
    switch (e->type) {
      case counter_type:
      case counter_fn_type:
        out += " counter\n";
        break;
      case gauge_type:
      case gauge_fn_type:
        out += " gauge\n";
        break;
      default:
        out += " histogram\n";
        break;
    }
    switch (e->type) {
      case counter_type:
        e->counters->for_each([&](const label_values& v, const counter& c) {
          out += e->name;
          labels_to(out, e->label_names, v);
          out += ' ';
          out += std::to_string(c.value());
          out += '\n';
        });
        break;
      case gauge_type:
        e->gauges->for_each([&](const label_values& v, const gauge& g) {
          out += e->name;
          labels_to(out, e->label_names, v);
          out += ' ';
          out += number(g.value());
          out += '\n';
        });
        break;
      case histogram_type:
        e->histograms->for_each([&](const label_values& v, const histogram& h) {
          auto s = h.read();
          std::uint64_t cumulative = 0;
          for (std::size_t i = 0; i < s.buckets.size(); ++i) {
            cumulative += s.buckets[i];
            out += e->name;
            out += "_bucket";
            labels_to(out, e->label_names, v, "le",
                      i < e->bounds.size() ? number(e->bounds[i]) : std::string("+Inf"));
            out += ' ';
            out += std::to_string(cumulative);
            out += '\n';
          }
          out += e->name;
          out += "_sum";
          labels_to(out, e->label_names, v);
          out += ' ';
          out += number(s.sum);
          out += '\n';
          out += e->name;
          out += "_count";
          labels_to(out, e->label_names, v);
          out += ' ';
          out += std::to_string(s.count);
          out += '\n';
        });
        break;
      default:
        std::sort(samples.begin(), samples.end(),
                  [](const sample& a, const sample& b) { return a.labels < b.labels; });
        for (const auto& s : samples) {
          if (s.labels.size() != e->label_names.size()) continue;
          out += e->name;
          labels_to(out, e->label_names, s.labels);
          out += ' ';
          out += number(s.value);
          out += '\n';
        }
        break;
    }
  }
  return out;
}

// ---- orchestrator gauges ----

namespace {

// Store readings shared by the gauges of one registry, refreshed at most
// once per `cache_for`.
class orchestrator_reading {
 public:
  orchestrator_reading(orchestrator& orch, duration cache_for)
      : orch_(orch), cache_for_(cache_for) {}

  struct values {
    task_counts tasks;
    std::map<std::string, double> stored_agents;  // by status, not supervised here
    bool up = false;
  };

  values get() {
    std::lock_guard lock(mutex_);
    auto now = std::chrono::steady_clock::now();
    if (!read_once_ || now - read_at_ >= cache_for_) {
      refresh();
      read_at_ = now;
      read_once_ = true;
    }
    return values_;
  }

 private:
  void refresh() {
    auto& s = orch_.store();
    auto counts = s.count_tasks("");
    auto agents = s.list_agents("");
    values_.up = counts.ok() && agents.ok();
    if (counts) values_.tasks = *counts;
    if (agents) {
      std::set<std::string> live;
      for (const auto& a : orch_.agents()) live.insert(a.name);
      values_.stored_agents.clear();
      for (const auto& a : *agents) {
        if (live.count(a.id) == 0) values_.stored_agents[a.status.empty() ? "unknown" : a.status]++;
      }
    }
  }

  orchestrator& orch_;
  duration cache_for_;
  std::mutex mutex_;
  values values_;
  std::chrono::steady_clock::time_point read_at_{};
  bool read_once_ = false;
};

constexpr task_state all_states[] = {task_state::pending,  task_state::queued,
                                     task_state::running,  task_state::succeeded,
                                     task_state::failed,   task_state::cancelled,
                                     task_state::retrying, task_state::awaiting_approval};

}  // namespace

void add_orchestrator_metrics(registry& reg, orchestrator& orch,
                              orchestrator_metrics_options options) {
  auto reading = std::make_shared<orchestrator_reading>(orch, options.cache_for);
  reg.collect("aise_tasks", "Tasks by state (from the store).", kind::gauge, {"state"}, [reading] {
    auto v = reading->get();
    std::vector<sample> out;
    for (auto s : all_states) {
      out.push_back({{std::string(to_string(s))}, static_cast<double>(v.tasks[s])});
    }
    return out;
  });
  reg.gauge_fn("aise_task_queue_depth", "Tasks queued and waiting for an agent.",
               [reading] { return static_cast<double>(reading->get().tasks[task_state::queued]); });
  reg.collect("aise_agents",
              "Agents by status: those supervised here (live), and those only the store knows.",
              kind::gauge, {"status"}, [reading, &orch] {
                auto v = reading->get();
                std::map<std::string, double> by_status = v.stored_agents;
                for (const char* s : {"running", "restarting", "stopped", "failed"}) {
                  by_status.try_emplace(s, 0);
                }
                for (const auto& a : orch.agents()) by_status[a.status] += 1;
                std::vector<sample> out;
                for (auto& [status, n] : by_status) out.push_back({{status}, n});
                return out;
              });
  reg.gauge_fn("aise_store_up", "1 when the last store query of the metrics succeeded.",
               [reading] { return reading->get().up ? 1.0 : 0.0; });
}

}  // namespace aise::metrics
