#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Stop the syncmesh test services started by start.sh; idempotent.
#
#   tests/services/stop.sh                  # every service
#   tests/services/stop.sh kafka mariadb    # only those
#   tests/services/stop.sh --purge          # all, then delete all state but logs/
#
# Each service is stopped by the PID in its PID file: SIGTERM, then SIGKILL if
# it has not exited by a polled deadline (SYNCMESH_STOP_TIMEOUT, default 20 s).
# Services stop in reverse start order (controller manager before the
# apiserver, the apiserver before etcd).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "${HERE}/lib.sh"

STOP_TIMEOUT="${SYNCMESH_STOP_TIMEOUT:-20}"

stop_one() {
  local svc="$1" pf pid deadline t0
  pf="${PIDS}/${svc}.pid"
  if [[ ! -e "$pf" ]]; then
    return 0
  fi
  if ! pid_alive "$pf"; then
    rm -f "$pf"
    log "${svc}: not running (stale PID file removed)"
    return 0
  fi
  pid="$(pid_of "$pf")"
  t0="$(now)"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$(($(date +%s) + STOP_TIMEOUT))
  while proc_starttime "$pid" >/dev/null; do
    if (($(date +%s) >= deadline)); then
      log "${svc}: pid ${pid} ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
  # After SIGKILL, wait (bounded) until the process is really gone.
  deadline=$(($(date +%s) + 10))
  while proc_starttime "$pid" >/dev/null && (($(date +%s) < deadline)); do sleep 0.1; done
  rm -f "$pf"
  log "${svc}: stopped pid ${pid} in $(elapsed "$t0")s"
}

main() {
  local purge=0 s i
  local -A want=()
  for s in "$@"; do
    case "$s" in
      --purge) purge=1 ;;
      *)
        s="$(canonical "$s")"
        want[$s]=1
        ;;
    esac
  done
  if ((${#want[@]} == 0)); then
    for s in "${SYNCMESH_ALL_SERVICES[@]}"; do want[$s]=1; done
  fi
  for ((i = ${#SYNCMESH_ALL_SERVICES[@]} - 1; i >= 0; i--)); do
    s="${SYNCMESH_ALL_SERVICES[i]}"
    [[ -n "${want[$s]:-}" ]] || continue
    stop_one "$s"
  done
  if ((purge)); then
    # Only when nothing of ours is left running.
    for s in "${SYNCMESH_ALL_SERVICES[@]}"; do
      if pid_alive "${PIDS}/${s}.pid"; then die "--purge: ${s} still running"; fi
    done
    # Keep logs/ (appended to, with a header per start) for post-mortems.
    if [[ -d "$RUN" ]]; then
      find "$RUN" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
    fi
    log "purged ${RUN} (logs kept)"
  elif [[ -d "$RUN" ]]; then
    # env.sh describes running services only.
    local any=0
    for s in "${SYNCMESH_ALL_SERVICES[@]}"; do
      if running "$s"; then any=1; fi
    done
    if ((any)); then write_env; else rm -f "${RUN}/env.sh"; fi
  fi
}

main "$@"
