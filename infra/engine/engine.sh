#!/usr/bin/env bash
# make engine: a Docker engine on a Debian machine that reaches no image registry (this project's CI
# machines). Never run by `make up`: users with Docker already have an engine and pull the base image.
#
# Steps (each idempotent, each named when it fails):
#   1. packages   Debian's docker.io (dockerd 20.10), debootstrap, iptables
#   2. compose    the Compose CLI v$COMPOSE_VERSION built once from the Go module proxy, cached under
#                 $CDCLAB_CACHE/bin and installed as the `docker compose` CLI plugin
#   3. dockerd    started in the background (log: $CDCLAB_CACHE/dockerd.log) unless one answers
#   4. certs      the host's CA bundle copied to infra/certs/ (git-ignored) for image builds
#   5. base image debian:bookworm-slim made by `debootstrap --variant=minbase` + `docker import`
#                 when the engine does not have it (users pull it from Docker Hub as usual)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck disable=SC1091
set -a; . infra/versions.env; set +a
CACHE=${CDCLAB_CACHE:-$HOME/.cache/cdclab}
mkdir -p "$CACHE/bin"
step=""
trap 'rc=$?; [ $rc -ne 0 ] && echo "make engine: step \"$step\" failed (exit $rc); see the lines above" >&2' EXIT
t0=$SECONDS
say() { echo "  · [engine] $* ($((SECONDS - t0))s)"; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

step="packages"
missing=()
for pkg in docker.io debootstrap iptables; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || { $SUDO apt-get update -q >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
fi
# Debian's CLI is /usr/bin/docker; another CLI earlier on PATH works too (it negotiates the API version).

step="compose"
plugin_dir=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
compose_bin="$CACHE/bin/docker-compose-$COMPOSE_VERSION"
if [ ! -x "$compose_bin" ]; then
  say "building the Compose CLI $COMPOSE_VERSION from the Go module proxy (about 2-4 min on 2 cores)"
  export GOFLAGS=-mod=mod GOTOOLCHAIN=auto
  go mod download "github.com/docker/compose/v5@$COMPOSE_VERSION"
  src=$(go env GOMODCACHE)/github.com/docker/compose/v5@$COMPOSE_VERSION
  (cd "$src" && CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/docker/compose/v5/internal.Version=$COMPOSE_VERSION" \
      -o "$compose_bin.tmp" ./cmd)
  mv "$compose_bin.tmp" "$compose_bin"
fi
mkdir -p "$plugin_dir"
ln -sf "$compose_bin" "$plugin_dir/docker-compose"
docker compose version >/dev/null

step="dockerd"
if ! docker info >/dev/null 2>&1; then
  say "starting dockerd (log: $CACHE/dockerd.log)"
  $SUDO bash -c "nohup setsid dockerd >>'$CACHE/dockerd.log' 2>&1 </dev/null &"
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 "$CACHE/dockerd.log" >&2; exit 1; }
fi

step="base image"
if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
  say "making debian:bookworm-slim with debootstrap (about 1 min)"
  root=$(mktemp -d)
  $SUDO debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/dev/null
  $SUDO rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  $SUDO tar -C "$root" -c . | docker import - debian:bookworm-slim >/dev/null
  $SUDO rm -rf "$root"
fi
step="certs"
# The host trusts a TLS-intercepting proxy's CA; image builds must too (infra/certs/README.md).
host_ca=${CDCLAB_HOST_CA:-/etc/ssl/certs/ca-certificates.crt}
if [ -f "$host_ca" ] && ! cmp -s "$host_ca" infra/certs/host-ca.crt; then
  say "copying the host's CA bundle $host_ca to infra/certs/host-ca.crt (git-ignored)"
  cp "$host_ca" infra/certs/host-ca.crt
fi
step=""
say "ready: $(docker version --format 'engine {{.Server.Version}}'), $(docker compose version --short | sed 's/^/compose /'), base image debian:bookworm-slim"
