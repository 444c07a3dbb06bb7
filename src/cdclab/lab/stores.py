"""The lab's data stores as native processes: PostgreSQL (shop, warehouse, airflow), MinIO and its
buckets, MariaDB (see :mod:`cdclab.lab.native`)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from cdclab.cdc.connect import http_json as http_json  # the launcher's and the tests' JSON requests
from cdclab.lab.config import LabConfig
from cdclab.lab.processes import ServiceError, http_get, pid_alive, proc_cmdline, progress, wait_for
from cdclab.lab.service import Service

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/{major}/bin",)


def _as_postgres_user() -> list[str]:
    """Postgres refuses to run as root: as root, run its tools as the ``postgres`` OS user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ServiceError(
            "postgres", "running as root needs the 'postgres' OS user (apt-get install postgresql creates it)"
        ) from None
    return ["runuser", "-u", "postgres", "--"]


class Postgres(Service):
    def __init__(self) -> None:
        super().__init__("postgres", ("postgres",), 60)

    def bin(self, cfg: LabConfig, tool: str) -> str:
        for pattern in PG_BIN_CANDIDATES:
            path = Path(pattern.format(major=cfg["POSTGRES_MAJOR"])) / tool
            if path.exists():
                return str(path)
        found = shutil.which(tool)
        if found:
            return found
        raise ServiceError(
            "postgres", f"{tool} not found: install postgresql-{cfg['POSTGRES_MAJOR']} (make bootstrap does)"
        )

    def address(self, cfg: LabConfig) -> str:
        return f"postgresql://{cfg.host}:{cfg.port('postgres')} (shop, warehouse, airflow)"

    def pid(self, cfg: LabConfig) -> int | None:
        try:
            pid = int((cfg.pg_data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        # postmaster.pid is Postgres' own lock file (it checks it at start): only a postgres server
        # on this data directory is ours, a reused pid is not
        cmdline = proc_cmdline(pid) or []
        ours = any(os.path.basename(p) == "postgres" for p in cmdline[:1]) and any(
            str(cfg.pg_data).rstrip("/") in part for part in cmdline
        )
        return pid if pid_alive(pid) and ours else None

    def healthy(self, cfg: LabConfig) -> bool:
        import psycopg2

        try:
            conn = psycopg2.connect(cfg.pg_dsn("postgres", "postgres"), connect_timeout=2)
        except psycopg2.Error:
            return False
        conn.close()
        return True

    def _log(self, cfg: LabConfig) -> Path:
        return cfg.log_file("postgres")

    def start(self, cfg: LabConfig) -> None:
        data = cfg.pg_data
        runas = _as_postgres_user()
        log = self._log(cfg)
        log.parent.mkdir(parents=True, exist_ok=True)
        if runas:
            # the server writes its own log file: let the postgres user own it
            log.touch()
            shutil.chown(log, "postgres", "postgres")
            os.chmod(log.parent, 0o755)
            self._allow_traverse(log.parent)
        if not (data / "PG_VERSION").exists():
            progress(f"postgres: initdb into {data}")
            data.mkdir(parents=True, exist_ok=True)
            pwfile = data.parent / f".pw-{uuid.uuid4().hex}"
            pwfile.write_text(cfg["POSTGRES_SUPERUSER_PASSWORD"] + "\n")
            if runas:
                shutil.chown(data, "postgres", "postgres")
                shutil.chown(pwfile, "postgres", "postgres")
            os.chmod(data, 0o700)
            try:
                out = subprocess.run(
                    [
                        *runas,
                        self.bin(cfg, "initdb"),
                        "-D",
                        str(data),
                        "-U",
                        "postgres",
                        "--pwfile",
                        str(pwfile),
                        "--auth-local=trust",
                        "--auth-host=scram-sha-256",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                    ],
                    capture_output=True,
                    text=True,
                )
            finally:
                pwfile.unlink(missing_ok=True)
            if out.returncode != 0:
                with open(log, "a") as fh:
                    fh.write(out.stdout + out.stderr)
                raise ServiceError("postgres", "initdb failed", log)
            conf = cfg.root / "infra" / "postgres" / "postgresql.conf"
            with open(data / "postgresql.conf", "a") as fh:
                fh.write(f"\n# cdclab\ninclude '{conf}'\nunix_socket_directories = '{data}'\n")
        self.check_ports_free(cfg)
        progress("postgres: starting")
        out = subprocess.run(
            [
                *runas,
                self.bin(cfg, "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {cfg.port('postgres')} -k {data}",
                "start",
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise ServiceError(
                "postgres", f"pg_ctl start failed: {out.stderr.strip() or out.stdout.strip()}", log
            )
        self.wait_ready(cfg)
        self.initialise(cfg)

    @staticmethod
    def _allow_traverse(path: Path) -> None:
        """Let the postgres OS user reach the log folder (o+x on each parent it lacks)."""
        for parent in (path, *path.parents):
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)

    def initialise(self, cfg: LabConfig) -> None:
        env = cfg.service_env()
        env.update(
            PGHOST=cfg.host_of("postgres"),
            PGPORT=str(cfg.port("postgres")),
            PGUSER="postgres",
            PGPASSWORD=cfg["POSTGRES_SUPERUSER_PASSWORD"],
        )
        out = subprocess.run(
            ["bash", str(cfg.root / "infra" / "postgres" / "initdb.sh")],
            capture_output=True,
            text=True,
            env=env,
        )
        if out.returncode != 0:
            with open(self._log(cfg), "a") as fh:
                fh.write(out.stdout + out.stderr)
            raise ServiceError(
                "postgres", f"creating roles/databases failed: {out.stderr.strip()[-500:]}", self._log(cfg)
            )

    def stop(self, cfg: LabConfig, timeout: float = 60.0) -> None:
        if self.pid(cfg) is None:
            return
        subprocess.run(
            [
                *_as_postgres_user(),
                self.bin(cfg, "pg_ctl"),
                "-D",
                str(cfg.pg_data),
                "-m",
                "fast",
                "-w",
                "-t",
                str(int(timeout)),
                "stop",
            ],
            capture_output=True,
        )


class MinIO(Service):
    def __init__(self) -> None:
        super().__init__("minio", ("minio", "minio_console"), 60)

    def address(self, cfg: LabConfig) -> str:
        return f"{cfg.minio_url} (console http://{cfg.host}:{cfg.port('minio_console')})"

    def healthy(self, cfg: LabConfig) -> bool:
        status, _ = http_get(f"{cfg.minio_url}/minio/health/ready")
        return status == 200

    def start(self, cfg: LabConfig) -> None:
        binary = cfg.minio_binary
        if not binary.exists():
            raise ServiceError("minio", f"{binary} missing: run make bootstrap")
        self.check_ports_free(cfg)
        data = cfg.state / "minio"
        data.mkdir(parents=True, exist_ok=True)
        env = cfg.service_env()
        env.update(
            MINIO_ROOT_USER=cfg["MINIO_ROOT_USER"],
            MINIO_ROOT_PASSWORD=cfg["MINIO_ROOT_PASSWORD"],
            MINIO_BROWSER="on",
            MINIO_UPDATE="off",
        )
        progress("minio: starting")
        pid = self.spawn(
            cfg,
            [
                str(binary),
                "server",
                str(data),
                "--address",
                f"{cfg.host}:{cfg.port('minio')}",
                "--console-address",
                f"{cfg.host}:{cfg.port('minio_console')}",
                "--quiet",
            ],
            env=env,
        )
        self.wait_ready(cfg, pid)
        create_buckets(cfg)


BUCKETS = ("landing", "archive", "quarantine", "manifests", "lab-tests")


def create_buckets(cfg: LabConfig) -> None:
    s3 = cfg.s3_client()
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in BUCKETS:
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
    progress(f"minio: buckets {', '.join(BUCKETS)}")


class MariaDB(Service):
    """The MySQL side of CDC: MariaDB from Debian packages with a row-based binlog."""

    def __init__(self) -> None:
        super().__init__("mariadb", ("mariadb",), 60)

    def address(self, cfg: LabConfig) -> str:
        return f"mysql://{cfg.host}:{cfg.port('mariadb')} (shop)"

    def socket(self, cfg: LabConfig) -> Path:
        return cfg.mariadb_data / "mariadb.sock"

    def healthy(self, cfg: LabConfig) -> bool:
        import pymysql

        try:
            conn = pymysql.connect(
                host=cfg.host_of("mariadb"),
                port=cfg.port("mariadb"),
                user="root",
                password=cfg["MARIADB_ROOT_PASSWORD"],
                connect_timeout=2,
            )
        except pymysql.MySQLError:
            return False
        conn.close()
        return True

    def start(self, cfg: LabConfig) -> None:
        data = cfg.mariadb_data
        runas: list[str] = []
        if os.geteuid() == 0:
            runas = ["runuser", "-u", "mysql", "--"]
        self.check_ports_free(cfg)
        log = cfg.log_file(self.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        fresh = not (data / "mysql").exists()
        if fresh:
            progress(f"mariadb: mariadb-install-db into {data}")
            data.mkdir(parents=True, exist_ok=True)
            if runas:
                shutil.chown(data, "mysql", "mysql")
            # as root, root@localhost logs in through the unix socket (no password to manage)
            auth = "socket" if runas else "normal"
            out = subprocess.run(
                [
                    *runas,
                    "mariadb-install-db",
                    f"--datadir={data}",
                    f"--auth-root-authentication-method={auth}",
                    "--skip-test-db",
                ],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                with open(log, "a") as fh:
                    fh.write(out.stdout + out.stderr)
                raise ServiceError("mariadb", "mariadb-install-db failed", log)
        progress("mariadb: starting")
        pid = self.spawn(
            cfg,
            [
                *runas,
                "mariadbd",
                f"--defaults-file={cfg.root / 'infra' / 'mariadb' / 'my.cnf'}",
                f"--datadir={data}",
                f"--port={cfg.port('mariadb')}",
                f"--socket={self.socket(cfg)}",
                f"--pid-file={data / 'mariadb.pid'}",
                f"--log-bin={data / 'binlog'}",
            ],
        )
        if not wait_for(lambda: self.socket(cfg).exists(), self.start_timeout, alive=lambda: pid_alive(pid)):
            raise ServiceError("mariadb", "failed to start (no socket)", log)
        # the TCP login the lab uses: root@127.0.0.1 with the password from infra/credentials.env
        pw = cfg["MARIADB_ROOT_PASSWORD"].replace("'", "''")
        statements = (
            f"CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '{pw}'; "
            f"ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '{pw}'; "
            "GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
        )
        for _ in range(20):
            out = subprocess.run(
                ["mariadb", "-uroot", f"--socket={self.socket(cfg)}", "-e", statements],
                capture_output=True,
                text=True,
            )
            if out.returncode == 0:
                break
            time.sleep(0.5)
        else:
            raise ServiceError("mariadb", f"setting the root login failed: {out.stderr.strip()}", log)
        self.wait_ready(cfg, pid)
        self.initialise(cfg)

    def initialise(self, cfg: LabConfig) -> None:
        import pymysql

        text = (cfg.root / "infra" / "mariadb" / "init.sql").read_text()
        for key in ("SHOP_PASSWORD", "MAXWELL_PASSWORD"):
            text = text.replace("${" + key + "}", cfg[key])
        conn = pymysql.connect(
            host=cfg.host_of("mariadb"),
            port=cfg.port("mariadb"),
            user="root",
            password=cfg["MARIADB_ROOT_PASSWORD"],
            autocommit=True,
        )
        try:
            with conn.cursor() as cur:
                for statement in _sql_statements(text):
                    cur.execute(statement)
        finally:
            conn.close()


def _sql_statements(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
