#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Start the syncmesh test services on loopback; idempotent.
#
#   tests/services/start.sh                 # every service
#   tests/services/start.sh kafka mariadb   # only those (dependencies added)
#
# Services: kafka mariadb postgres s3 prometheus etcd kube-apiserver
#           kube-controller-manager (aliases: mysql, pg, moto, kube, kcm)
# State and logs: ${SYNCMESH_RUN_DIR:-/tmp/syncmesh-services}
#   pids/<svc>.pid, logs/<svc>.log, <svc>/ (data, config), env.sh
# A service whose PID file names a live process that answers is left alone.
# Each start polls for readiness with a deadline; on failure the tail of the
# service's log is printed and the script exits non-zero.
# Binaries come from install.sh (run it first).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "${HERE}/lib.sh"

# Readiness deadline per service, seconds (the apiserver gets more).
READY_TIMEOUT="${SYNCMESH_READY_TIMEOUT:-60}"
KUBE_READY_TIMEOUT="${SYNCMESH_KUBE_READY_TIMEOUT:-120}"

# --- helpers -----------------------------------------------------------------

show_log_tail() {
  local log
  log="$(logfile "$1")"
  printf -- '----- last 40 lines of %s -----\n' "$log" >&2
  tail -n 40 "$log" >&2 2>/dev/null || printf '(no log)\n' >&2
  printf -- '----- end of %s -----\n' "$log" >&2
}

# spawn SVC [RUNAS] -- CMD...: start CMD detached (own session), stdout and
# stderr appended to the service's log, PID recorded. RUNAS (optional) is a
# user to run as via setpriv (which execs, so the PID is the service's own).
spawn() {
  local svc="$1" runas="" log pid
  shift
  if [[ "$1" != -- ]]; then runas="$1"; shift; fi
  shift # --
  log="$(logfile "$svc")"
  printf '\n===== %s: starting %s =====\n' "$(date '+%F %T')" "$svc" >>"$log"
  if [[ -n "$runas" ]]; then
    setsid setpriv --reuid="$runas" --regid="$runas" --init-groups -- "$@" >>"$log" 2>&1 </dev/null &
  else
    setsid "$@" >>"$log" 2>&1 </dev/null &
  fi
  pid=$!
  write_pidfile "$(pidfile "$svc")" "$pid"
}

# wait_ready SVC TIMEOUT CHECK...: poll CHECK until it succeeds, the process
# dies, or TIMEOUT seconds pass.
wait_ready() {
  local svc="$1" timeout="$2" deadline pf
  shift 2
  pf="$(pidfile "$svc")"
  deadline=$(($(date +%s) + timeout))
  while :; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if ! pid_alive "$pf"; then
      log "${svc}: process exited before it was ready" >&2
      show_log_tail "$svc"
      rm -f "$pf"
      return 1
    fi
    if (($(date +%s) >= deadline)); then
      log "${svc}: not ready after ${timeout}s" >&2
      show_log_tail "$svc"
      return 1
    fi
    sleep 0.2
  done
}

# terminate SVC: TERM, then KILL after a polled deadline (used to replace a
# process that is alive but does not answer).
terminate() {
  local pf pid i
  pf="$(pidfile "$1")"
  if pid_alive "$pf"; then
    pid="$(pid_of "$pf")"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      proc_starttime "$pid" >/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pf"
}

require_port_free() {
  local svc="$1" port="$2"
  if tcp_open "$port"; then
    log "${svc}: port ${port} on 127.0.0.1 is already taken by another process" >&2
    log "${svc}: stop it, or pick another port (see tests/services/lib.sh for the variables)" >&2
    return 1
  fi
}

need_bin() {
  command -v "$1" >/dev/null 2>&1 || [[ -x "$1" ]] || die "$2: '$1' not found; run tests/services/install.sh first"
}

# --- readiness checks ----------------------------------------------------------

kafka_check() { tcp_open "$SYNCMESH_KAFKA_PORT"; }
mariadb_check() {
  tcp_open "$SYNCMESH_MYSQL_PORT" &&
    mariadb-admin --no-defaults --connect-timeout=3 --protocol=socket --socket="${RUN}/mariadb/mysqld.sock" -u"$(id -un)" ping
}
postgres_check() { "$(pg_bindir)/pg_isready" -q -h 127.0.0.1 -p "$SYNCMESH_POSTGRES_PORT"; }
s3_check() { curl -fsS --max-time 3 -o /dev/null "http://127.0.0.1:${SYNCMESH_S3_PORT}/"; }
prometheus_check() { curl -fsS --max-time 3 -o /dev/null "http://127.0.0.1:${SYNCMESH_PROMETHEUS_PORT}/-/ready"; }
etcd_check() { curl -fsS --max-time 3 "http://127.0.0.1:${SYNCMESH_ETCD_CLIENT_PORT}/health" | grep -q '"health":"true"'; }
kube_curl() {
  curl -fsS --max-time 5 --cacert "${RUN}/kube/pki/ca.crt" -H "Authorization: Bearer ${SYNCMESH_KUBE_TOKEN}" \
    "https://127.0.0.1:${SYNCMESH_KUBE_PORT}$1"
}
kube_check() {
  # readyz covers etcd and the post-start hooks (RBAC bootstrap roles...); the
  # default namespace is made by a controller right after.
  [[ "$(kube_curl /readyz)" == ok ]] && kube_curl /api/v1/namespaces/default >/dev/null
}
kcm_check() { curl -fsSk --max-time 3 "https://127.0.0.1:${SYNCMESH_KCM_PORT}/healthz" | grep -qx ok; }

# check_running SVC CHECK...: 0 if already running and answering (leave it);
# 1 if it must be started (a live but silent process is replaced).
check_running() {
  local svc="$1" pf
  shift
  pf="$(pidfile "$svc")"
  pid_alive "$pf" || {
    rm -f "$pf"
    return 1
  }
  # Alive: give a process that is still starting a short while to answer.
  local deadline=$(($(date +%s) + 10))
  while (($(date +%s) < deadline)); do
    if "$@" >/dev/null 2>&1; then
      log "${svc}: already running (pid $(pid_of "$pf")), left alone"
      return 0
    fi
    pid_alive "$pf" || break
    sleep 0.2
  done
  log "${svc}: pid $(pid_of "$pf") does not answer; restarting it"
  terminate "$svc"
  return 1
}

# --- services ----------------------------------------------------------------

start_kafka() {
  check_running kafka kafka_check && return 0
  local bin="${SYNCMESH_BIN}/tansu" url="tcp://127.0.0.1:${SYNCMESH_KAFKA_PORT}"
  need_bin "$bin" kafka
  require_port_free kafka "$SYNCMESH_KAFKA_PORT"
  # Memory storage: topics and records are gone after a restart.
  spawn kafka -- env -u OTEL_EXPORTER_OTLP_ENDPOINT "$bin" broker \
    --listener-url "$url" --advertised-listener-url "$url" --storage-engine memory://tansu/
  wait_ready kafka "$READY_TIMEOUT" kafka_check
  save_env kafka SYNCMESH_KAFKA_BROKERS="127.0.0.1:${SYNCMESH_KAFKA_PORT}" \
    SYNCMESH_TANSU_BIN="$bin"
}

start_mariadb() {
  check_running mariadb mariadb_check && return 0
  need_bin mariadbd mariadb
  need_bin mariadb-install-db mariadb
  require_port_free mariadb "$SYNCMESH_MYSQL_PORT"
  local dir="${RUN}/mariadb" cnf="${RUN}/mariadb/my.cnf"
  mkdir -p "${dir}/data" "${dir}/binlog" "${dir}/tmp"
  cat >"$cnf" <<EOF
# Generated by tests/services/start.sh
[mysqld]
datadir=${dir}/data
tmpdir=${dir}/tmp
socket=${dir}/mysqld.sock
pid-file=${dir}/mysqld.pid
port=${SYNCMESH_MYSQL_PORT}
bind-address=127.0.0.1
skip-name-resolve
user=$(id -un)
server-id=1
log-bin=${dir}/binlog/mariadb-bin
binlog_format=ROW
binlog_row_image=FULL
binlog_row_metadata=FULL
character-set-server=utf8mb4
collation-server=utf8mb4_general_ci
max_connections=500
innodb_buffer_pool_size=128M
innodb_flush_log_at_trx_commit=2
sync_binlog=0
[client]
socket=${dir}/mysqld.sock
EOF
  if [[ ! -d "${dir}/data/mysql" ]]; then
    log "mariadb: initialising ${dir}/data"
    mariadb-install-db --defaults-file="$cnf" --auth-root-authentication-method=socket \
      --skip-test-db >>"$(logfile mariadb)" 2>&1 || {
      show_log_tail mariadb
      return 1
    }
  fi
  spawn mariadb -- mariadbd --defaults-file="$cnf"
  wait_ready mariadb "$READY_TIMEOUT" mariadb_check
  # Test user and database (idempotent). The user may create other databases
  # and read the binlog over the replication protocol.
  mariadb --no-defaults --protocol=socket --socket="${dir}/mysqld.sock" -u"$(id -un)" <<EOF
CREATE DATABASE IF NOT EXISTS \`${SYNCMESH_DB_NAME}\`;
CREATE USER IF NOT EXISTS '${SYNCMESH_DB_USER}'@'%' IDENTIFIED BY '${SYNCMESH_DB_PASSWORD}';
CREATE USER IF NOT EXISTS '${SYNCMESH_DB_USER}'@'localhost' IDENTIFIED BY '${SYNCMESH_DB_PASSWORD}';
GRANT ALL PRIVILEGES ON *.* TO '${SYNCMESH_DB_USER}'@'%' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO '${SYNCMESH_DB_USER}'@'localhost' WITH GRANT OPTION;
FLUSH PRIVILEGES;
EOF
  save_env mariadb \
    SYNCMESH_MYSQL_URL="mysql://${SYNCMESH_DB_USER}:${SYNCMESH_DB_PASSWORD}@127.0.0.1:${SYNCMESH_MYSQL_PORT}/${SYNCMESH_DB_NAME}"
}

start_postgres() {
  local bindir
  bindir="$(pg_bindir)" || die "postgres: initdb/pg_ctl not found; run tests/services/install.sh first"
  check_running postgres postgres_check && return 0
  require_port_free postgres "$SYNCMESH_POSTGRES_PORT"
  local dir="${RUN}/postgres" runas="" sock="${RUN}/postgres/sock"
  # PostgreSQL refuses to run as root: use Debian's postgres user then.
  if [[ "$(id -u)" == 0 ]]; then runas=postgres; fi
  mkdir -p "$dir" "$sock"
  [[ -n "$runas" ]] && chown "$runas:" "$dir" "$sock"
  local -a as=()
  [[ -n "$runas" ]] && as=(setpriv --reuid="$runas" --regid="$runas" --init-groups --)
  if [[ ! -f "${dir}/data/PG_VERSION" ]]; then
    log "postgres: initialising ${dir}/data"
    rm -rf "${dir}/data"
    # Socket connections trust (for bootstrap); TCP needs the password.
    "${as[@]}" "${bindir}/initdb" -D "${dir}/data" -U postgres --auth-local=trust \
      --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >>"$(logfile postgres)" 2>&1 || {
      show_log_tail postgres
      return 1
    }
  fi
  spawn postgres "$runas" -- "${bindir}/postgres" -D "${dir}/data" \
    -c port="$SYNCMESH_POSTGRES_PORT" -c listen_addresses=127.0.0.1 \
    -c unix_socket_directories="$sock" -c max_connections=300 \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c wal_level=logical -c max_wal_senders=10 -c max_replication_slots=10
  wait_ready postgres "$READY_TIMEOUT" postgres_check
  local psql="${bindir}/psql"
  [[ -x "$psql" ]] || psql="psql"
  "${as[@]}" "$psql" -v ON_ERROR_STOP=1 -q -h "$sock" -p "$SYNCMESH_POSTGRES_PORT" -U postgres -d postgres <<EOF
SELECT format('CREATE ROLE %I LOGIN SUPERUSER', '${SYNCMESH_DB_USER}')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${SYNCMESH_DB_USER}') \gexec
ALTER ROLE "${SYNCMESH_DB_USER}" PASSWORD '${SYNCMESH_DB_PASSWORD}';
SELECT format('CREATE DATABASE %I OWNER %I', '${SYNCMESH_DB_NAME}', '${SYNCMESH_DB_USER}')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '${SYNCMESH_DB_NAME}') \gexec
EOF
  save_env postgres \
    SYNCMESH_POSTGRES_URL="postgres://${SYNCMESH_DB_USER}:${SYNCMESH_DB_PASSWORD}@127.0.0.1:${SYNCMESH_POSTGRES_PORT}/${SYNCMESH_DB_NAME}"
}

start_s3() {
  check_running s3 s3_check && return 0
  need_bin "${SYNCMESH_VENV}/bin/moto_server" s3
  require_port_free s3 "$SYNCMESH_S3_PORT"
  # moto keeps everything in memory: buckets are gone after a restart.
  spawn s3 -- "${SYNCMESH_VENV}/bin/moto_server" -H 127.0.0.1 -p "$SYNCMESH_S3_PORT"
  wait_ready s3 "$READY_TIMEOUT" s3_check
  save_env s3 SYNCMESH_S3_ENDPOINT="http://127.0.0.1:${SYNCMESH_S3_PORT}" \
    SYNCMESH_S3_ACCESS_KEY="$SYNCMESH_S3_ACCESS_KEY" SYNCMESH_S3_SECRET_KEY="$SYNCMESH_S3_SECRET_KEY" \
    SYNCMESH_S3_REGION="$SYNCMESH_S3_REGION"
}

start_prometheus() {
  check_running prometheus prometheus_check && return 0
  need_bin prometheus prometheus
  require_port_free prometheus "$SYNCMESH_PROMETHEUS_PORT"
  local dir="${RUN}/prometheus"
  mkdir -p "${dir}/data" "${dir}/sd" "${dir}/rules"
  # Tests add scrape targets by writing <name>.json files into sd/ (file_sd
  # format: [{"targets": ["127.0.0.1:PORT"], "labels": {...}}]) and rules into
  # rules/*.yml (then POST /-/reload).
  cat >"${dir}/prometheus.yml" <<EOF
# Generated by tests/services/start.sh
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - ${dir}/rules/*.yml
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['127.0.0.1:${SYNCMESH_PROMETHEUS_PORT}']
  - job_name: syncmesh
    file_sd_configs:
      - files: ['${dir}/sd/*.json', '${dir}/sd/*.yml', '${dir}/sd/*.yaml']
        refresh_interval: 1s
EOF
  if command -v promtool >/dev/null 2>&1; then
    promtool check config "${dir}/prometheus.yml" >>"$(logfile prometheus)" 2>&1 || {
      show_log_tail prometheus
      return 1
    }
  fi
  spawn prometheus -- prometheus --config.file="${dir}/prometheus.yml" \
    --storage.tsdb.path="${dir}/data" --storage.tsdb.retention.time=1d \
    --web.listen-address="127.0.0.1:${SYNCMESH_PROMETHEUS_PORT}" \
    --web.enable-lifecycle --web.enable-admin-api
  wait_ready prometheus "$READY_TIMEOUT" prometheus_check
  save_env prometheus SYNCMESH_PROMETHEUS_URL="http://127.0.0.1:${SYNCMESH_PROMETHEUS_PORT}" \
    SYNCMESH_PROMETHEUS_SD_DIR="${dir}/sd" SYNCMESH_PROMETHEUS_RULES_DIR="${dir}/rules" \
    SYNCMESH_PROMTOOL="$(command -v promtool || echo /usr/bin/promtool)"
}

start_etcd() {
  check_running etcd etcd_check && return 0
  need_bin etcd etcd
  require_port_free etcd "$SYNCMESH_ETCD_CLIENT_PORT"
  require_port_free etcd "$SYNCMESH_ETCD_PEER_PORT"
  local dir="${RUN}/etcd" client="http://127.0.0.1:${SYNCMESH_ETCD_CLIENT_PORT}"
  local peer="http://127.0.0.1:${SYNCMESH_ETCD_PEER_PORT}"
  mkdir -p "$dir"
  spawn etcd -- etcd --name syncmesh --data-dir "${dir}/data" \
    --listen-client-urls "$client" --advertise-client-urls "$client" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "syncmesh=${peer}" --initial-cluster-state new \
    --quota-backend-bytes=$((2 * 1024 * 1024 * 1024)) --log-level warn
  wait_ready etcd "$READY_TIMEOUT" etcd_check
  save_env etcd SYNCMESH_ETCD_ENDPOINTS="$client"
}

make_kube_pki() {
  local pki="${RUN}/kube/pki"
  [[ -s "${pki}/ca.crt" && -s "${pki}/apiserver.crt" && -s "${pki}/sa.pub" ]] && return 0
  need_bin openssl kube-apiserver
  mkdir -p "$pki"
  (
    cd "$pki"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
      -keyout ca.key -out ca.crt -subj "/CN=syncmesh-test-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout apiserver.key -out apiserver.csr \
      -subj "/CN=kube-apiserver" 2>/dev/null
    cat >apiserver.ext <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -days 3650 -sha256 -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    # Service-account token signing key pair.
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    chmod 0644 ca.crt apiserver.crt sa.pub
  )
}

write_kubeconfig() { # write_kubeconfig FILE
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: syncmesh-test
  cluster:
    server: https://127.0.0.1:${SYNCMESH_KUBE_PORT}
    certificate-authority: ${RUN}/kube/pki/ca.crt
users:
- name: syncmesh-admin
  user:
    token: ${SYNCMESH_KUBE_TOKEN}
contexts:
- name: syncmesh-test
  context:
    cluster: syncmesh-test
    user: syncmesh-admin
    namespace: default
current-context: syncmesh-test
EOF
  chmod 0600 "$1"
}

start_kube_apiserver() {
  check_running kube-apiserver kube_check && return 0
  local bin="${SYNCMESH_BIN}/kube-apiserver" dir="${RUN}/kube"
  need_bin "$bin" kube-apiserver
  etcd_check >/dev/null 2>&1 || die "kube-apiserver: etcd is not answering"
  require_port_free kube-apiserver "$SYNCMESH_KUBE_PORT"
  make_kube_pki
  mkdir -p "${dir}/certs"
  # One static token in system:masters (cluster-admin through RBAC).
  printf '%s,syncmesh-admin,syncmesh-admin,"system:masters"\n' "$SYNCMESH_KUBE_TOKEN" >"${dir}/tokens.csv"
  chmod 0600 "${dir}/tokens.csv"
  write_kubeconfig "${dir}/kubeconfig"
  # --insecure-port=0: 1.20 would otherwise also serve plain HTTP on 8080.
  spawn kube-apiserver -- "$bin" \
    --etcd-servers="http://127.0.0.1:${SYNCMESH_ETCD_CLIENT_PORT}" \
    --etcd-prefix=/registry \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
    --secure-port="$SYNCMESH_KUBE_PORT" --insecure-port=0 \
    --cert-dir="${dir}/certs" \
    --tls-cert-file="${dir}/pki/apiserver.crt" --tls-private-key-file="${dir}/pki/apiserver.key" \
    --client-ca-file="${dir}/pki/ca.crt" \
    --token-auth-file="${dir}/tokens.csv" \
    --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="${dir}/pki/sa.pub" \
    --service-account-signing-key-file="${dir}/pki/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --allow-privileged=true \
    --profiling=false \
    --logtostderr=true --v=1
  wait_ready kube-apiserver "$KUBE_READY_TIMEOUT" kube_check
  save_env kube-apiserver KUBECONFIG="${dir}/kubeconfig" SYNCMESH_KUBECONFIG="${dir}/kubeconfig"
}

start_kube_controller_manager() {
  check_running kube-controller-manager kcm_check && return 0
  local bin="${SYNCMESH_BIN}/kube-controller-manager" dir="${RUN}/kube"
  need_bin "$bin" kube-controller-manager
  kube_check >/dev/null 2>&1 || die "kube-controller-manager: kube-apiserver is not answering"
  require_port_free kube-controller-manager "$SYNCMESH_KCM_PORT"
  mkdir -p "${dir}/kcm-certs"
  # Runs the garbage collector (owner references), namespace deletion,
  # deployment/replicaset, service-account and token controllers... No kubelet
  # exists, so pods never run. --port=0: no plain-HTTP port (1.20 default 10252).
  spawn kube-controller-manager -- "$bin" \
    --kubeconfig="${dir}/kubeconfig" \
    --authentication-kubeconfig="${dir}/kubeconfig" \
    --authorization-kubeconfig="${dir}/kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SYNCMESH_KCM_PORT" --port=0 \
    --cert-dir="${dir}/kcm-certs" \
    --leader-elect=false \
    --service-account-private-key-file="${dir}/pki/sa.key" \
    --root-ca-file="${dir}/pki/ca.crt" \
    --cluster-signing-cert-file="${dir}/pki/ca.crt" \
    --cluster-signing-key-file="${dir}/pki/ca.key" \
    --controllers='*' \
    --logtostderr=true --v=1
  wait_ready kube-controller-manager "$READY_TIMEOUT" kcm_check
  # Owner references are garbage-collected; namespaces can be deleted.
  save_env kube-controller-manager SYNCMESH_KUBE_CONTROLLER_MANAGER=1
}

# --- main --------------------------------------------------------------------

main() {
  local -A want=()
  local explicit_kcm=0 s t0 t
  if (($# == 0)); then
    for s in "${SYNCMESH_ALL_SERVICES[@]}"; do want[$s]=1; done
  else
    for s in "$@"; do
      s="$(canonical "$s")"
      want[$s]=1
      [[ "$s" == kube-controller-manager ]] && explicit_kcm=1
    done
  fi
  # Dependencies.
  [[ -n "${want[kube-controller-manager]:-}" ]] && want[kube-apiserver]=1
  [[ -n "${want[kube-apiserver]:-}" ]] && want[etcd]=1
  # kube-controller-manager is optional: install.sh may not have built it.
  if [[ -n "${want[kube-controller-manager]:-}" && ! -x "${SYNCMESH_BIN}/kube-controller-manager" ]] &&
    ((explicit_kcm == 0)); then
    log "kube-controller-manager: not built (see install.sh); skipped, owner references will not be collected"
    unset 'want[kube-controller-manager]'
  fi

  mkdir -p "$RUN" "$PIDS" "$LOGS"
  chmod 0755 "$RUN"
  t0="$(now)"
  local failed=()
  for s in "${SYNCMESH_ALL_SERVICES[@]}"; do
    [[ -n "${want[$s]:-}" ]] || continue
    t="$(now)"
    run_errexit "start_${s//-/_}"
    if ((RUN_RC == 0)); then
      log "${s}: ready (pid $(pid_of "$(pidfile "$s")"), $(elapsed "$t")s)"
    else
      log "${s}: FAILED to start" >&2
      failed+=("$s")
    fi
  done
  write_env
  log "env: ${RUN}/env.sh"
  if ((${#failed[@]})); then
    log "start: FAILED: ${failed[*]} ($(elapsed "$t0")s)" >&2
    exit 1
  fi
  log "start: all requested services ready in $(elapsed "$t0")s"
}

main "$@"
