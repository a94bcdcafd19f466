#!/usr/bin/env bash
# Build a local Kubernetes control plane for tests from source, the way
# controller-runtime's envtest runs one: etcd + kube-apiserver (+ kubectl and
# helm as clients), plus kube-controller-manager so tests can run the garbage
# collector. No container engine, no prebuilt downloads: everything is
# compiled with the local Go toolchain from the Go module proxy.
#
# Versions are pinned by the wrapper modules next to this script:
#   etcd/go.mod  -> go.etcd.io/etcd/server/v3   (etcd)
#   kube/go.mod  -> k8s.io/kubernetes           (kube-apiserver,
#                                                kube-controller-manager, kubectl)
# and HELM_VERSION below (overridable with NEURELAY_HELM_VERSION).
#
# Output: ${NEURELAY_CACHE:-$HOME/.cache/neurelay}/control-plane/<k8s-version>/bin
# Progress goes to stderr; the bin dir is printed as the only (last) line on
# stdout, so `bin_dir=$(e2e/control-plane/build.sh)` works.
#
# Usage: build.sh [--print-bin-dir | --check | -h]
#   (no option)      build what is missing, then print the bin dir
#   --print-bin-dir  print the bin dir without building anything
#   --check          exit 0 if every binary is built and current, 1 otherwise
set -euo pipefail

readonly HELM_VERSION="${NEURELAY_HELM_VERSION:-v3.22.0}"

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly script_dir

log() {
  printf '[control-plane] %s\n' "$*" >&2
}

die() {
  log "ERROR: $*"
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
}

mode=build
case "${1:-}" in
  "") ;;
  --print-bin-dir) mode=print ;;
  --check) mode=check ;;
  -h | --help)
    usage
    exit 0
    ;;
  *)
    usage
    die "unknown argument: $1"
    ;;
esac

# --- Go toolchain -----------------------------------------------------------
go_bin="${GO:-}"
if [[ -z "${go_bin}" ]]; then
  if command -v go >/dev/null 2>&1; then
    go_bin="$(command -v go)"
  elif [[ -x /usr/local/go/bin/go ]]; then
    go_bin=/usr/local/go/bin/go
  else
    die "no Go toolchain found (set GO=/path/to/go)"
  fi
fi
readonly go_bin

# Never download a toolchain, never pick up a go.work from a parent directory,
# build static binaries.
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0

# Version of a module required by one of the wrapper modules.
module_version() { # <wrapper dir> <module path>
  (cd "${script_dir}/$1" && "${go_bin}" list -mod=readonly -m -f '{{.Version}}' "$2")
}

k8s_version="$(module_version kube k8s.io/kubernetes)"
etcd_version="$(module_version etcd go.etcd.io/etcd/server/v3)"
readonly k8s_version etcd_version

cache_root="${NEURELAY_CACHE:-${HOME}/.cache/neurelay}"
bin_dir="${cache_root}/control-plane/${k8s_version}/bin"
readonly cache_root bin_dir

if [[ "${mode}" == print ]]; then
  printf '%s\n' "${bin_dir}"
  exit 0
fi

# --- helpers ----------------------------------------------------------------

# True if <binary> exists, runs with <args...> and its output mentions <expected>.
is_built() { # <binary> <expected substring> <args...>
  local binary="$1" expected="$2" out
  shift 2
  [[ -x "${binary}" ]] || return 1
  out="$("${binary}" "$@" 2>&1)" || return 1
  [[ "${out}" == *"${expected}"* ]]
}

elapsed() { # <start seconds>
  local d=$((SECONDS - $1))
  printf '%dm%02ds' $((d / 60)) $((d % 60))
}

# Move a freshly built binary into place atomically and sanity-check it.
install_binary() { # <tmp path> <name> <expected substring> <version args...>
  local tmp="$1" name="$2" expected="$3"
  shift 3
  is_built "${tmp}" "${expected}" "$@" ||
    die "${name}: built binary does not report '${expected}' for '$*'"
  mv -f "${tmp}" "${bin_dir}/${name}"
}

kube_ldflags() {
  local minor="${k8s_version#v1.}"
  minor="${minor%%.*}"
  local build_date
  build_date="$(cd "${script_dir}/kube" && "${go_bin}" list -mod=readonly -m \
    -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)"
  local flags=(-s -w)
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=(
      "-X ${pkg}.gitVersion=${k8s_version}"
      "-X ${pkg}.gitMajor=1"
      "-X ${pkg}.gitMinor=${minor}"
      "-X ${pkg}.gitTreeState=clean"
    )
    if [[ -n "${build_date}" ]]; then
      flags+=("-X ${pkg}.buildDate=${build_date}")
    fi
  done
  printf '%s ' "${flags[@]}"
}

# --- per-binary builds ------------------------------------------------------
# Each entry: name | expected version substring | version-args
etcd_expect="etcd Version: ${etcd_version#v}"
kube_apiserver_expect="Kubernetes ${k8s_version}"
kube_controller_manager_expect="Kubernetes ${k8s_version}"
kubectl_expect="Client Version: ${k8s_version}"
helm_expect="${HELM_VERSION}"

all_built() {
  is_built "${bin_dir}/etcd" "${etcd_expect}" --version &&
    is_built "${bin_dir}/kube-apiserver" "${kube_apiserver_expect}" --version &&
    is_built "${bin_dir}/kube-controller-manager" "${kube_controller_manager_expect}" --version &&
    is_built "${bin_dir}/kubectl" "${kubectl_expect}" version --client &&
    is_built "${bin_dir}/helm" "${helm_expect}" version --template '{{.Version}}'
}

if [[ "${mode}" == check ]]; then
  if all_built; then
    printf '%s\n' "${bin_dir}"
    exit 0
  fi
  exit 1
fi

mkdir -p "${bin_dir}"

# Serialise concurrent builds (e.g. several pytest-xdist workers).
if command -v flock >/dev/null 2>&1; then
  exec 9>"${bin_dir}/.build.lock"
  if ! flock -n 9; then
    log "another build is running in ${bin_dir}; waiting for it ..."
    flock 9
  fi
fi

work_dir="$(mktemp -d "${bin_dir}/.build.XXXXXX")"
readonly work_dir
trap 'rm -rf "${work_dir}"' EXIT

build_etcd() {
  if is_built "${bin_dir}/etcd" "${etcd_expect}" --version; then
    log "etcd ${etcd_version} already built"
    return
  fi
  log "building etcd ${etcd_version} (this takes a few minutes) ..."
  local start=${SECONDS}
  (cd "${script_dir}/etcd" &&
    "${go_bin}" build -mod=readonly -trimpath -ldflags='-s -w' \
      -o "${work_dir}/etcd" .)
  install_binary "${work_dir}/etcd" etcd "${etcd_expect}" --version
  log "built etcd ${etcd_version} in $(elapsed "${start}")"
}

build_kube() { # <name> <expected> <version args...>
  local name="$1" expected="$2"
  shift 2
  if is_built "${bin_dir}/${name}" "${expected}" "$@"; then
    log "${name} ${k8s_version} already built"
    return
  fi
  log "building ${name} ${k8s_version} (this takes several minutes) ..."
  local start=${SECONDS} ldflags
  ldflags="$(kube_ldflags)"
  (cd "${script_dir}/kube" &&
    "${go_bin}" build -mod=readonly -trimpath -ldflags="${ldflags}" \
      -o "${work_dir}/${name}" "k8s.io/kubernetes/cmd/${name}")
  install_binary "${work_dir}/${name}" "${name}" "${expected}" "$@"
  log "built ${name} ${k8s_version} in $(elapsed "${start}")"
}

build_helm() {
  if is_built "${bin_dir}/helm" "${helm_expect}" version --template '{{.Version}}'; then
    log "helm ${HELM_VERSION} already built"
    return
  fi
  log "building helm ${HELM_VERSION} (this takes a few minutes) ..."
  local start=${SECONDS} pkg=helm.sh/helm/v3/internal/version
  # `go install pkg@version` ignores the current module, so cd out of the repo.
  (cd "${work_dir}" &&
    GOBIN="${work_dir}" "${go_bin}" install -trimpath \
      -ldflags="-s -w -X ${pkg}.version=${HELM_VERSION} -X ${pkg}.gitTreeState=clean" \
      "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}")
  install_binary "${work_dir}/helm" helm "${helm_expect}" version --template '{{.Version}}'
  log "built helm ${HELM_VERSION} in $(elapsed "${start}")"
}

log "Go: $("${go_bin}" version); output: ${bin_dir}"
build_etcd
build_kube kube-apiserver "${kube_apiserver_expect}" --version
build_kube kube-controller-manager "${kube_controller_manager_expect}" --version
build_kube kubectl "${kubectl_expect}" version --client
build_helm
all_built || die "some binaries are missing or broken in ${bin_dir}"
log "control plane binaries ready"
printf '%s\n' "${bin_dir}"
