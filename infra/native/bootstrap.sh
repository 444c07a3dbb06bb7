#!/usr/bin/env bash
# cdclab native launcher, step 1: install what is missing on this machine. Idempotent and cached:
# a second run only checks. Sources: Debian packages (Postgres, wal2json), PyPI (uv, Airflow and the
# rest, pinned by uv.lock), Maven Central (Kafka, Connect, Debezium; infra/maven/pom.xml), the Go
# module proxy (MinIO). Everything downloaded goes to $CDCLAB_CACHE (~/.cache/cdclab) or .venv.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
set -a; . infra/versions.env; set +a
cache=${CDCLAB_CACHE:-$HOME/.cache/cdclab}
mkdir -p "$cache/bin"
step() { printf '\n==> %s\n' "$*"; }
t0=$SECONDS

# from_image IMAGE DEST SRC...: on a machine where the Dockerised lab's images are already built
# (CI builds them first), copy the same pinned artifacts out of an image instead of building them a
# second time. The image and the native build come from the same versions.env; any failure falls
# back to the native build.
from_image() {
  local image=$1 dest=$2; shift 2
  command -v docker >/dev/null && docker image inspect "$image" >/dev/null 2>&1 || return 1
  local cid src
  cid=$(docker create "$image" true 2>/dev/null) || return 1
  mkdir -p "$dest"
  for src in "$@"; do
    docker cp -q "$cid:${src%%=*}" "$dest/${src#*=}" 2>/dev/null || { docker rm -f "$cid" >/dev/null; return 1; }
  done
  docker rm -f "$cid" >/dev/null
}

python_only=false
[ "${1:-}" = "--python-only" ] && python_only=true  # the compose backend needs only the host venv

# --- Debian packages ------------------------------------------------------------------------
need_apt=()
if ! $python_only; then
dpkg -s "postgresql-$POSTGRES_MAJOR" >/dev/null 2>&1 || need_apt+=("postgresql-$POSTGRES_MAJOR" "postgresql-client-$POSTGRES_MAJOR")
dpkg -s "postgresql-$POSTGRES_MAJOR-wal2json" >/dev/null 2>&1 || need_apt+=("postgresql-$POSTGRES_MAJOR-wal2json")
command -v mariadbd >/dev/null || need_apt+=(mariadb-server mariadb-client)
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
command -v go >/dev/null || need_apt+=(golang-go)
command -v ss >/dev/null || need_apt+=(iproute2)
if ((${#need_apt[@]})); then
  step "apt-get install ${need_apt[*]}"
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  $sudo apt-get update -qq
  # do not let the package start a distribution cluster on 5432
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
else
  step "Debian packages: present (postgresql-$POSTGRES_MAJOR, wal2json, mariadb, java, maven, go)"
fi
fi

# --- Python: uv + the locked virtual environment --------------------------------------------
if ! command -v uv >/dev/null || [ "$(uv --version | awk '{print $2}')" != "$UV_VERSION" ]; then
  step "pip install uv==$UV_VERSION"
  python3 -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
step "uv sync --frozen (Airflow $AIRFLOW_VERSION and the providers, from uv.lock)"
# --compile-bytecode: the .pyc files ship with the venv; this machine sets PYTHONDONTWRITEBYTECODE=1,
# and without them every Python process (each test run, each Airflow task) compiled Airflow anew
uv sync --frozen --extra dev --python "$PYTHON_VERSION" -q --compile-bytecode

if $python_only; then
  step "bootstrap (host virtual environment for the compose backend) done in $((SECONDS - t0))s"
  exit 0
fi

# --- Maven: Kafka, Kafka Connect, Debezium ---------------------------------------------------
jars_key=$(.venv/bin/python -c 'from cdclab.lab.config import LabConfig; print(LabConfig.load().jars_key)')
jars="$cache/jars/$jars_key"
if [ ! -f "$jars/.complete" ] && rm -rf "$jars" \
   && from_image "cdclab/connect:$DEBEZIUM_VERSION" "$jars" /opt/kafka/libs=kafka /opt/connect/plugins=plugins; then
  touch "$jars/.complete"
  step "jars: copied from the image cdclab/connect:$DEBEZIUM_VERSION (same pom, same versions) -> $jars"
elif [ ! -f "$jars/.complete" ]; then
  step "mvn package: Kafka $KAFKA_VERSION, Debezium $DEBEZIUM_VERSION (jdbc sink $DEBEZIUM_JDBC_VERSION) -> $jars"
  rm -rf "$jars"
  mvn -B -ntp -q -f infra/maven/pom.xml package \
    -Djars.dir="$jars" -Dkafka.version="$KAFKA_VERSION" -Dscala.binary="$SCALA_BINARY" \
    -Dlog4j.version="$LOG4J_VERSION" -Ddebezium.version="$DEBEZIUM_VERSION" \
    -Ddebezium.jdbc.version="$DEBEZIUM_JDBC_VERSION" -Dhibernate.version="$HIBERNATE_VERSION"
  touch "$jars/.complete"
else
  step "jars: cached in $jars"
fi

# --- Go module proxy: MinIO -------------------------------------------------------------------
minio="$cache/bin/minio-$MINIO_MODULE_VERSION"
if [ ! -x "$minio" ] && tmp=$(mktemp -d) \
   && from_image "cdclab/minio:$MINIO_MODULE_VERSION" "$tmp" /usr/local/bin/minio=minio; then
  mv "$tmp/minio" "$minio" && rmdir "$tmp"
  step "minio: copied from the image cdclab/minio:$MINIO_MODULE_VERSION (same module version) -> $minio"
elif [ ! -x "$minio" ]; then
  rm -rf "${tmp:-/nonexistent}"
  step "go install github.com/minio/minio@$MINIO_MODULE_VERSION (a few minutes the first time)"
  tmp=$(mktemp -d)
  GOBIN="$tmp" GOFLAGS=-trimpath go install "github.com/minio/minio@$MINIO_MODULE_VERSION"
  mv "$tmp/minio" "$minio"
  rmdir "$tmp"
else
  step "minio: cached in $minio"
fi
step "bootstrap done in $((SECONDS - t0))s"
