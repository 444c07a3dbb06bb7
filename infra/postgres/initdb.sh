#!/usr/bin/env bash
# cdclab: create roles, databases, the shop schema and the publication, then apply the warehouse's
# versioned schema files (infra/postgres/warehouse, by migrate.sh). Idempotent.
# Used by both launchers: compose mounts it into /docker-entrypoint-initdb.d, the native launcher runs
# it against its own cluster. Needs PGHOST/PGPORT/PGUSER(superuser)/PGPASSWORD and the *_PASSWORD
# variables of infra/credentials.env in the environment.
set -euo pipefail
here=${CDCLAB_PG_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
psql -X -q -v ON_ERROR_STOP=1 -d postgres \
  -v shop_password="$SHOP_PASSWORD" -v warehouse_password="$WAREHOUSE_PASSWORD" \
  -v cdc_password="$CDC_PASSWORD" -v airflow_password="$AIRFLOW_DB_PASSWORD" \
  -f "$here/init.sql"
# The schema belongs to the shop role: run it as that role.
psql -X -q -v ON_ERROR_STOP=1 -d shop -c 'SET ROLE shop' -f "$here/shop.sql"
psql -X -q -v ON_ERROR_STOP=1 -d shop -f "$here/publication.sql"
# the warehouse's shared tables (state.*, dlq.*, lab-wide targets): versioned files, each applied once
bash "$here/migrate.sh" warehouse "$here/warehouse" warehouse
