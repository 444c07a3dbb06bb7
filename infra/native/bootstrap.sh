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
uv sync --frozen --extra dev --python "$PYTHON_VERSION" -q

if $python_only; then
  step "bootstrap (host virtual environment for the compose backend) done in $((SECONDS - t0))s"
  exit 0
fi

# --- Maven: Kafka, Kafka Connect, Debezium ---------------------------------------------------
jars_key=$(.venv/bin/python -c 'from cdclab.lab.config import LabConfig; print(LabConfig.load().jars_key)')
jars="$cache/jars/$jars_key"
if [ ! -f "$jars/.complete" ]; then
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
if [ ! -x "$minio" ]; then
  step "go install github.com/minio/minio@$MINIO_MODULE_VERSION (a few minutes the first time)"
  tmp=$(mktemp -d)
  GOBIN="$tmp" GOFLAGS=-trimpath go install "github.com/minio/minio@$MINIO_MODULE_VERSION"
  mv "$tmp/minio" "$minio"
  rmdir "$tmp"
else
  step "minio: cached in $minio"
fi
step "bootstrap done in $((SECONDS - t0))s"
