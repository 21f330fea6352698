#!/usr/bin/env bash
# The project's one test command.
#
#   tests/run-all.sh [extra cargo test args...]
#
# 1. tests/services/install.sh   (idempotent; cached in ${SYNCMESH_CACHE:-~/.cache/syncmesh})
# 2. tests/services/start.sh     (real services on loopback; writes env.sh)
# 3. source ${SYNCMESH_RUN_DIR:-/tmp/syncmesh-services}/env.sh
# 4. cargo test --workspace --all-targets "$@"   (from the repo root)
# 5. tests/services/stop.sh      (always, on any exit)
# Exits with cargo's status.
#
# Environment:
#   SYNCMESH_SERVICES=none           unit tier only: no install, no services
#   SYNCMESH_SERVICES="kafka mariadb" only those services (default: all)
#   SYNCMESH_KEEP_SERVICES=1         leave the services running afterwards
#                                    (fast repeated local runs; start.sh skips
#                                    what is already running)
#   CI=<anything>                    start from a purged run dir
#   SYNCMESH_SKIP_INSTALL=1          do not run install.sh (already installed)
#   SYNCMESH_CACHE, SYNCMESH_RUN_DIR, SYNCMESH_*_PORT: see tests/services/lib.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SERVICES_DIR="${ROOT}/tests/services"
RUN_DIR="${SYNCMESH_RUN_DIR:-/tmp/syncmesh-services}"
export SYNCMESH_RUN_DIR="$RUN_DIR"
SERVICES="${SYNCMESH_SERVICES:-all}"

say() { printf '[run-all %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local rc=$?
  if [[ "$SERVICES" != none ]]; then
    if [[ "${SYNCMESH_KEEP_SERVICES:-0}" == 1 ]]; then
      say "SYNCMESH_KEEP_SERVICES=1: services left running (stop: tests/services/stop.sh)"
    else
      # --purge: the next run starts from empty databases and buckets.
      say "stopping services"
      "${SERVICES_DIR}/stop.sh" --purge || say "stop.sh failed (ignored)"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ "$SERVICES" == none ]]; then
  say "SYNCMESH_SERVICES=none: unit tier only, no services"
else
  if [[ "${SYNCMESH_SKIP_INSTALL:-0}" == 1 ]]; then
    say "SYNCMESH_SKIP_INSTALL=1: install.sh skipped"
  elif [[ "$(id -u)" != 0 ]]; then
    say "not root: install.sh skipped (run it once as root)"
  else
    "${SERVICES_DIR}/install.sh"
  fi
  if [[ -n "${CI:-}" && "${SYNCMESH_KEEP_SERVICES:-0}" != 1 ]]; then
    # CI: never inherit state (or half-dead processes) from an earlier run.
    "${SERVICES_DIR}/stop.sh" --purge
  fi
  start_args=()
  if [[ "$SERVICES" != all ]]; then
    read -r -a start_args <<<"${SERVICES//,/ }"
  fi
  "${SERVICES_DIR}/start.sh" "${start_args[@]}"
  # shellcheck source=/dev/null
  source "${RUN_DIR}/env.sh"
fi

cd "$ROOT"
say "cargo test --workspace --all-targets $*"
status=0
cargo test --workspace --all-targets "$@" || status=$?
say "cargo test exited ${status}"
exit "$status"
