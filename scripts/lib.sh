# shellcheck shell=bash
# Shared helpers of the scripts in scripts/: source this file, do not run it.
#
#   aise_configure <variant> [cmake args...]   configure build/<variant> (Ninja)
#   aise_compile <variant> [targets...]        build it (all targets by default)
#   aise_build <variant>                       both
#   aise_run <variant> <command...>            run a command with the variant's
#                                              environment (sanitizer options)
#
# Variants:
#   release  RelWithDebInfo, warnings are errors; tests, examples, bench
#   tsan     Debug + ThreadSanitizer; tests only (examples and bench off)
#   asan     Debug + AddressSanitizer/UndefinedBehaviorSanitizer; tests only
#   fuzz     clang + libFuzzer; the fuzz targets only (server/fuzz)
#
# Builds use ccache (found by CMake) keyed relative to the repository root,
# so fresh clones in other directories reuse the same cache.

AISE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CCACHE_BASEDIR="$AISE_ROOT"
export CCACHE_NOHASHDIR=1

aise_log() { printf '[aise] %s\n' "$*" >&2; }

aise_jobs() { nproc 2>/dev/null || echo 2; }

aise_build_dir() { printf '%s/build/%s\n' "$AISE_ROOT" "$1"; }

# aise_variant_cmake_args <variant>: sets the array AISE_VARIANT_ARGS.
aise_variant_cmake_args() {
  case "$1" in
    release) AISE_VARIANT_ARGS=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DAISE_WERROR=ON) ;;
    # LibTorch is not built with the sanitizers: aise::torch and its tests
    # (label torch) are checked in the release variant only.
    tsan) AISE_VARIANT_ARGS=(-DCMAKE_BUILD_TYPE=Debug -DAISE_SANITIZE=thread
      -DAISE_BUILD_EXAMPLES=OFF -DAISE_BUILD_BENCH=OFF -DAISE_WITH_TORCH=OFF) ;;
    asan) AISE_VARIANT_ARGS=(-DCMAKE_BUILD_TYPE=Debug -DAISE_SANITIZE=address
      -DAISE_BUILD_EXAMPLES=OFF -DAISE_BUILD_BENCH=OFF -DAISE_WITH_TORCH=OFF) ;;
    # libFuzzer targets: clang, only what the fuzzers need.
    fuzz) AISE_VARIANT_ARGS=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DAISE_FUZZ=ON
      -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DAISE_BUILD_TESTS=OFF
      "-DCMAKE_CXX_FLAGS=-fsanitize=fuzzer-no-link,address,undefined"
      "-DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link,address,undefined"
      -DAISE_BUILD_EXAMPLES=OFF -DAISE_BUILD_BENCH=OFF -DAISE_WITH_TORCH=OFF -DAISE_WITH_LLM=OFF
      -DAISE_WITH_RABBITMQ=OFF -DAISE_INSTALL=OFF) ;;
    *)
      aise_log "unknown build variant '$1' (release, tsan, asan, fuzz)"
      return 2
      ;;
  esac
}

# aise_run <variant> <command...>: runs the command with the environment the
# variant's programs need. The sanitizer options apply to the build too,
# because doctest lists the test cases by running the test binary.
aise_run() {
  local variant=$1
  shift
  case "$variant" in
    tsan)
      # Older TSan runtimes abort on kernels with high mmap randomisation;
      # running without address-space randomisation avoids that.
      local norandom=()
      if setarch "$(uname -m)" -R true >/dev/null 2>&1; then
        norandom=(setarch "$(uname -m)" -R)
      fi
      TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1 second_deadlock_stack=1} \
        "${norandom[@]}" "$@"
      ;;
    asan)
      ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} \
        UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
        "$@"
      ;;
    *) "$@" ;;
  esac
}

aise_configure() {
  local variant=$1
  shift
  aise_variant_cmake_args "$variant" || return
  cmake -S "$AISE_ROOT" -B "$(aise_build_dir "$variant")" -G Ninja \
    "${AISE_VARIANT_ARGS[@]}" "$@"
}

aise_compile() {
  local variant=$1
  shift
  local targets=()
  local target
  for target in "$@"; do targets+=(--target "$target"); done
  aise_run "$variant" cmake --build "$(aise_build_dir "$variant")" -j"$(aise_jobs)" "${targets[@]}"
}

aise_build() {
  aise_configure "$1" && aise_compile "$1"
}
