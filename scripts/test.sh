#!/usr/bin/env bash
# THE test command of libaise (CI runs it through .ci/run).
#
#   1. setup    install missing Debian packages (scripts/setup.sh)
#   2. release  build the release variant; start a private PostgreSQL and a
#               private RabbitMQ (scripts/services.sh); run every CTest test
#               (all labels)
#   3. tsan     build with ThreadSanitizer; start RabbitMQ; run the unit,
#               rabbitmq and server tests
#   4. asan     build with ASan+UBSan; the same
#   5. fuzz     clang + libFuzzer over aise-server's request handling, 60 s
#   6. format   clang-format --dry-run --Werror over the C++ sources
#
# Every phase runs even when an earlier one failed (except after a failed
# setup); the exit status is non-zero if any failed. Timings go to stderr,
# the summary to stdout. Run only some phases with AISE_TEST_PHASES, e.g.
#   AISE_TEST_PHASES="release format" scripts/test.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$AISE_ROOT"

# Folders whose *.hpp/*.cpp must be clang-formatted (missing ones are skipped).
FORMAT_DIRS=(include src tests examples bench server bindings)

AISE_TEST_PHASES=${AISE_TEST_PHASES:-setup release tsan asan fuzz format}
read -r -a phases <<<"$AISE_TEST_PHASES"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# run_ctest <variant> [ctest args...]: runs CTest in build/<variant>, keeps the
# pass/fail counts for the summary.
run_ctest() {
  local variant=$1
  shift
  local log="$work/ctest-$variant.log"
  local rc=0
  aise_run "$variant" ctest --test-dir "$(aise_build_dir "$variant")" --output-on-failure \
    --no-tests=error "$@" 2>&1 | tee "$log" || rc=$?
  # "100% tests passed, 0 tests failed out of 57"
  sed -nE 's/^[0-9]+% tests passed, ([0-9]+) tests? failed out of ([0-9]+).*/\1 \2/p' "$log" \
    >>"$work/counts"
  return "$rc"
}

# One function per phase, phase_<name>; a new phase (e.g. starting
# PostgreSQL and RabbitMQ before the service tests) is a function here plus
# its name in the default AISE_TEST_PHASES above.
phase_setup() { bash scripts/setup.sh; }

# start_services <service>...: starts each with scripts/services.sh (a private
# server on loopback) and exports its URL (AISE_TEST_POSTGRES_URL,
# AISE_TEST_RABBITMQ_URL); the phase's EXIT trap stops again those that this
# call started (another run may be using the others). A service that does not
# start fails the phase.
start_services() {
  local service out var url
  started=() # global: the EXIT trap of the phase's subshell reads it
  trap 'for s in "${started[@]}"; do bash scripts/services.sh stop "$s" || true; done' EXIT
  for service in "$@"; do
    case $service in
      postgres) var=AISE_TEST_POSTGRES_URL ;;
      rabbitmq) var=AISE_TEST_RABBITMQ_URL ;;
    esac
    out=$(bash scripts/services.sh start "$service") || out=""
    url=$(sed -n "s/^$var=//p" <<<"$out")
    [[ -n $url ]] || { aise_log "$service did not start"; return 1; }
    export "$var=$url"
    if grep -q "^AISE_SERVICES_STARTED=$service" <<<"$out"; then started+=("$service"); fi
  done
}

phase_release() {
  aise_build release
  # The PostgreSQL and RabbitMQ tests (labels postgres, rabbitmq) need servers.
  start_services postgres rabbitmq
  run_ctest release
}

# The sanitizer builds run the unit tests, the RabbitMQ tests and the
# aise-server tests (threads of their own: worth ThreadSanitizer's and
# AddressSanitizer's eyes).
phase_tsan() {
  aise_build tsan
  start_services rabbitmq
  run_ctest tsan -L '^(unit|rabbitmq|server)$'
}

phase_asan() {
  aise_build asan
  start_services rabbitmq
  run_ctest asan -L '^(unit|rabbitmq|server)$'
}

# libFuzzer over aise-server's request handling (server/fuzz) for a bounded
# time (AISE_FUZZ_SECONDS, default 60), starting from the checked-in seeds;
# a crash, a 500 or a malformed answer fails the phase and leaves the input
# in build/fuzz/crashes.
phase_fuzz() {
  aise_configure fuzz
  aise_compile fuzz aise_api_fuzz
  local dir
  dir="$(aise_build_dir fuzz)"
  rm -rf "$dir/corpus" && mkdir -p "$dir/corpus" "$dir/crashes"
  cp server/fuzz/corpus/* "$dir/corpus/"
  "$dir/server/fuzz/aise_api_fuzz" -max_total_time="${AISE_FUZZ_SECONDS:-60}" -max_len=4096 \
    -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$dir/crashes/" \
    "$dir/corpus" 2>&1 | tail -n 25
}

phase_format() {
  local dirs=() dir
  for dir in "${FORMAT_DIRS[@]}"; do [[ -d $dir ]] && dirs+=("$dir"); done
  local files=()
  if ((${#dirs[@]})); then
    mapfile -d '' files < <(find "${dirs[@]}" -type f \( -name '*.hpp' -o -name '*.cpp' \) -print0 | sort -z)
  fi
  if ((${#files[@]} == 0)); then
    echo "format: no C++ files, skipped"
    return 0
  fi
  local log="$work/format.log"
  if clang-format --dry-run --Werror "${files[@]}" >"$log" 2>&1; then
    echo "format: ${#files[@]} files clean"
    return 0
  fi
  head -n 30 "$log"
  echo "format: these files are not clang-formatted (violations per file):"
  grep -oE '^[^:]+:[0-9]+:[0-9]+: (error|warning)' "$log" | cut -d: -f1 | sort | uniq -c
  echo "format: fix with: clang-format -i <files>"
  return 1
}

declare -a summary=()
failed=0
for phase in "${phases[@]}"; do
  if ! declare -F "phase_$phase" >/dev/null; then
    aise_log "unknown phase '$phase'"
    exit 2
  fi
  aise_log "=== phase $phase"
  start=$(date +%s.%N)
  set +e
  (
    set -euo pipefail
    "phase_$phase"
  )
  rc=$?
  set -e
  seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  if ((rc == 0)); then status=ok; else status="FAILED($rc)"; failed=1; fi
  aise_log "=== phase $phase: $status in ${seconds}s"
  summary+=("$(printf '  %-8s %-10s %8ss' "$phase" "$status" "$seconds")")
  if [[ $phase == setup && $rc -ne 0 ]]; then
    aise_log "setup failed: nothing else can run"
    break
  fi
done

echo
echo "=== libaise test summary"
printf '%s\n' "${summary[@]}"
if [[ -s $work/counts ]]; then
  awk '{ failed += $1; total += $2 } END { printf "tests: %d passed, %d failed\n", total - failed, failed }' \
    "$work/counts"
fi
if ((failed)); then
  echo "RESULT: FAILED"
  exit 1
fi
echo "RESULT: ok"
