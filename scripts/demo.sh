#!/usr/bin/env bash
# THE demo command: installs what is missing, builds the release variant of
# the team example and runs it; arguments go to the example. Set-up and build
# output go to stderr, so stdout is the example's alone.
#
# Usage: scripts/demo.sh [example arguments...]   (--fresh starts over, --help lists them)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bash "$AISE_ROOT/scripts/setup.sh" >&2
aise_configure release >&2
aise_compile release aise_team_example >&2

example="$(aise_build_dir release)/examples/team/aise_team_example"
if [[ ! -x $example ]]; then
  aise_log "the example was not built: $example is missing"
  exit 1
fi
# State lives in build/demo-state unless the arguments choose (--state, --memory):
# stop the demo at any moment and run this again to resume.
for arg in "$@"; do
  case $arg in --state | --state=* | --memory | -h | --help) exec "$example" "$@" ;; esac
done
exec "$example" --state "$AISE_ROOT/build/demo-state" "$@"
