#!/usr/bin/env bash
# cdclab/mariadb entrypoint: mariadb-install-db on first start, the server on infra/mariadb/my.cnf
# reachable on the container network, then (every start, idempotent) the root login of
# infra/credentials.env for TCP and infra/mariadb/init.sql. /run/mysqld/cdclab-ready marks the end.
# The server runs as the OS user mysql (--user); this script, as root, logs in as root@localhost
# through the socket (unix_socket authentication), as the native launcher does.
set -euo pipefail
: "${MARIADB_ROOT_PASSWORD:?set MARIADB_ROOT_PASSWORD (infra/credentials.env)}"
data=/var/lib/mysql sock=/run/mysqld/mysqld.sock
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld "$data"
rm -f /run/mysqld/cdclab-ready
if [ ! -d "$data/mysql" ]; then
  echo "cdclab/mariadb: mariadb-install-db into $data"
  mariadb-install-db --user=mysql --datadir="$data" --auth-root-authentication-method=socket --skip-test-db >/dev/null
fi
mariadbd --defaults-file=/etc/cdclab/mariadb/my.cnf --user=mysql --datadir="$data" --port="${MARIADB_PORT:-3306}" \
  --bind-address=0.0.0.0 --socket="$sock" --pid-file=/run/mysqld/mariadb.pid --log-bin="$data/binlog" &
pid=$!
trap 'kill -TERM "$pid"; wait "$pid"' TERM INT
for _ in $(seq 120); do
  mariadb -uroot --socket="$sock" -e 'SELECT 1' >/dev/null 2>&1 && break
  kill -0 "$pid" || exit 1
  sleep 0.5
done
pw=${MARIADB_ROOT_PASSWORD//\'/\'\'}
sql=$(cat /etc/cdclab/mariadb/init.sql)
sql=${sql//'${SHOP_PASSWORD}'/${SHOP_PASSWORD//\'/\'\'}}
sql=${sql//'${MAXWELL_PASSWORD}'/${MAXWELL_PASSWORD//\'/\'\'}}
mariadb -uroot --socket="$sock" <<SQL
CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY '$pw';
ALTER USER 'root'@'%' IDENTIFIED BY '$pw';
GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;
$sql
SQL
touch /run/mysqld/cdclab-ready
echo "cdclab/mariadb: ready"
wait "$pid"
