#!/usr/bin/env bash
# THE demo command (the main job): installs what is missing, builds the
# release variant of aise-server and runs it on the embedded defaults (a
# SQLite file, the in-process transport) with the demo team working a sample
# project. It prints the dashboard URL and how to log in; Ctrl-C stops it,
# and running this again resumes where it stopped. Arguments go to
# aise-server (e.g. --listen 0.0.0.0:8080; --help lists them). Set-up and
# build output go to stderr.
#
# Usage: scripts/demo.sh [aise-server arguments...]
#        AISE_DEMO_STATE=DIR scripts/demo.sh   (default build/demo-state; remove it to start over)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bash "$AISE_ROOT/scripts/setup.sh" >&2
aise_configure release >&2
aise_compile release aise-server >&2

server="$(aise_build_dir release)/server/aise-server"
if [[ ! -x $server ]]; then
  aise_log "aise-server was not built: $server is missing"
  exit 1
fi
exec "$server" --demo --data-dir "${AISE_DEMO_STATE:-$AISE_ROOT/build/demo-state}" "$@"
