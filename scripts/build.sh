#!/usr/bin/env bash
# Configures and builds one or more variants into build/<variant>.
#
# Usage: scripts/build.sh [release|tsan|asan]...   (default: release)
#        extra CMake arguments can be given in AISE_CMAKE_ARGS, e.g.
#        AISE_CMAKE_ARGS="-DBUILD_SHARED_LIBS=ON" scripts/build.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

read -r -a extra_args <<<"${AISE_CMAKE_ARGS:-}"
variants=("$@")
((${#variants[@]})) || variants=(release)
for variant in "${variants[@]}"; do
  aise_configure "$variant" "${extra_args[@]}"
  aise_compile "$variant"
done
