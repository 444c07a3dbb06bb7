#!/usr/bin/env bash
# cdclab: apply the versioned schema files of one database, in order, each once; idempotent.
#   migrate.sh DATABASE DIR ROLE    e.g. migrate.sh warehouse infra/postgres/warehouse warehouse
# Every DIR/V<n>__<name>.sql not yet recorded in DATABASE's public.schema_version runs in one
# transaction, as ROLE (who then owns what it creates), together with its row in schema_version
# (version, name, sha256). A recorded file is skipped; a recorded file whose content changed is an
# error: a lab that applied it would never see the change, so add V<n+1>__<name>.sql instead.
# Run by initdb.sh, so by both launchers on every start; needs the PG* variables of a superuser.
set -euo pipefail
db=$1 dir=$2 role=$3
psql -X -q -v ON_ERROR_STOP=1 -d "$db" <<SQL
SET client_min_messages = warning;
CREATE TABLE IF NOT EXISTS public.schema_version (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    sha256     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.schema_version OWNER TO "$role";
SQL
shopt -s nullglob
for file in "$dir"/V*__*.sql; do
  base=$(basename "$file" .sql)
  [[ $base =~ ^V([0-9]+)__([a-z0-9_]+)$ ]] || { echo "migrate.sh: bad file name $file (want V<n>__<name>.sql)" >&2; exit 1; }
  version=$((10#${BASH_REMATCH[1]})) name=${BASH_REMATCH[2]}
  sum=$(sha256sum "$file" | cut -c1-64)
  applied=$(psql -X -At -v ON_ERROR_STOP=1 -d "$db" \
    -c "SELECT name || ' ' || sha256 FROM public.schema_version WHERE version = $version")
  if [ -n "$applied" ]; then
    if [ "$applied" != "$name $sum" ]; then
      echo "migrate.sh: $db version $version was applied as '${applied% *}' with another content than $file;" \
        "a version never changes once applied: put the change in a new V<n>__<name>.sql" >&2
      exit 1
    fi
    continue
  fi
  psql -X -q -v ON_ERROR_STOP=1 --single-transaction -d "$db" \
    -c "SET client_min_messages = warning" -c "SET ROLE \"$role\"" -f "$file" \
    -c "INSERT INTO public.schema_version (version, name, sha256) VALUES ($version, '$name', '$sum')"
  echo "migrate.sh: $db: applied V$version $name"
done
