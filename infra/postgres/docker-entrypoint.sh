#!/usr/bin/env bash
# cdclab/postgres entrypoint: the native launcher's initdb (same options), then the server on
# infra/postgres/postgresql.conf, listening on the container network instead of 127.0.0.1 only, then
# infra/postgres/initdb.sh on every start (idempotent); /run/postgresql/cdclab-ready marks the end.
# POSTGRES_PORT and POSTGRES_SUPERUSER_PASSWORD come from infra/{ports,credentials}.env.
set -euo pipefail
: "${POSTGRES_SUPERUSER_PASSWORD:?set POSTGRES_SUPERUSER_PASSWORD (infra/credentials.env)}"
port=${POSTGRES_PORT:-5432}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "cdclab/postgres: initdb into $PGDATA"
  mkdir -p "$PGDATA" && chmod 700 "$PGDATA"
  pw=$(mktemp) && printf '%s\n' "$POSTGRES_SUPERUSER_PASSWORD" > "$pw"
  initdb -D "$PGDATA" -U postgres --pwfile "$pw" --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pw"
  {
    echo "# cdclab"
    echo "include '$CDCLAB_PG_DIR/postgresql.conf'"
    echo "listen_addresses = '*'"
    echo "unix_socket_directories = '/run/postgresql'"
  } >> "$PGDATA/postgresql.conf"
  # other containers reach the server over the compose network (passwords, never trust)
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
fi
rm -f /run/postgresql/cdclab-ready
postgres -D "$PGDATA" -p "$port" &
pid=$!
trap 'kill -INT "$pid"; wait "$pid"' TERM INT
for _ in $(seq 120); do
  pg_isready -q -h /run/postgresql -p "$port" && break
  kill -0 "$pid" || exit 1
  sleep 0.5
done
# roles, databases, the shop schema and the publication (idempotent), as the native launcher does
PGHOST=/run/postgresql PGPORT=$port PGUSER=postgres bash "$CDCLAB_PG_DIR/initdb.sh"
touch /run/postgresql/cdclab-ready
echo "cdclab/postgres: ready"
wait "$pid"
