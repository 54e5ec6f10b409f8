#!/usr/bin/env bash
# Installs every Debian package that building, testing and running libaise
# needs. Idempotent: when everything is installed it only checks (well under
# a second) and changes nothing. Needs root (or password-less sudo) only when
# something is missing.
#
# Usage: scripts/setup.sh
set -euo pipefail

# The one list. Later components add their packages here.
AISE_PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config ccache git
  # aise::core
  libboost-dev libfmt-dev libspdlog-dev nlohmann-json3-dev
  # aise::sql (SOCI over SQLite and PostgreSQL; the backend headers need the client headers)
  libsoci-dev libsqlite3-dev libpq-dev
  # aise::auth (Argon2id, HMAC-SHA-256, random tokens)
  libsodium-dev
  # PostgreSQL 15 server for the tests (scripts/services.sh starts a private one) and sqlite3 CLI
  postgresql-15 postgresql-client-15 sqlite3
  # aise::llm (HTTPS through Boost.Beast)
  libssl-dev
  # aise::torch (LibTorch, CPU; TorchConfig.cmake). Debian's LibTorch calls the
  # generic libblas.so.3; OpenBLAS provides it (as an alternative) ~7x faster
  # than the reference BLAS that is otherwise chosen.
  libtorch-dev libopenblas0-pthread
  # scikit-learn: the reference values of the classic ML tests (tests/torch)
  python3-sklearn
  # aise::rabbitmq (rabbitmq-c) and RabbitMQ for the tests (scripts/services.sh starts a private one)
  librabbitmq-dev rabbitmq-server
  # tests (promtool, of the prometheus package, checks aise-server's /metrics)
  doctest-dev prometheus
  # the dashboard test (server/tests/dashboard_test.py): headless Chromium over WebDriver
  chromium chromium-driver
  # peer benchmark (CAF) in bench/
  libcaf-dev
  # format and lint checks
  clang-format clang-tidy
  # scripts (setarch comes from util-linux)
  python3 util-linux
)

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "setup.sh: no dpkg-query: this is not Debian/Ubuntu; install the equivalents of:" >&2
  echo "  ${AISE_PACKAGES[*]}" >&2
  exit 0
fi

declare -A installed=()
while read -r name status; do
  [[ $status == ii* ]] && installed[$name]=1
done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${AISE_PACKAGES[@]}" 2>/dev/null || true)

missing=()
for package in "${AISE_PACKAGES[@]}"; do
  [[ -n ${installed[$package]:-} ]] || missing+=("$package")
done

if ((${#missing[@]} == 0)); then
  echo "setup.sh: all ${#AISE_PACKAGES[@]} packages are installed" >&2
  exit 0
fi

sudo=()
if ((EUID != 0)); then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    echo "setup.sh: these packages are missing and installing them needs root:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi

echo "setup.sh: installing ${missing[*]}" >&2
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 -o Dpkg::Use-Pty=0)
"${apt[@]}" update -qq
"${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}"
echo "setup.sh: done" >&2
