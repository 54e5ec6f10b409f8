#pragma once
/// @file
/// One aligned line of text per orchestrator event, for the console:
///
///     +0.082s  #16  task.retrying           code        attempt 1 failed: ...; retry in 81 ms
///
/// A plain function from event to text: no I/O, no state, easy to test.

#include <aise/clock.hpp>
#include <aise/event.hpp>

#include <string>

namespace team {

/// Formats `e` as one line (no line break): time since `start`, sequence,
/// type, subject and the interesting parts of its data (attempt, agent,
/// error — only an error's first line, cut to fit about 120 columns).
std::string event_line(const aise::event& e, aise::time_point start);

}  // namespace team
