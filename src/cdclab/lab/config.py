"""One configuration for both launchers.

Vocabulary:
- *root*: the project checkout (holds ``infra/``, ``connectors/``, ``dags/``).
- *state*: where a running lab keeps data, pid files and logs (``$CDCLAB_STATE`` or ``<root>/.lab``);
  ``make down`` keeps it, ``make clean`` wipes it.
- *cache*: what the native launcher built or downloaded once per machine (``$CDCLAB_CACHE`` or
  ``~/.cache/cdclab``): Maven jars, the MinIO binary.
- *env files*: ``infra/versions.env``, ``infra/ports.env`` and ``infra/credentials.env``, read by
  the native launcher (here), by ``compose.yaml`` (``--env-file``) and by the tests that check both
  launchers agree.

Nothing here opens a connection; everything is derived from the env files and the environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import quote

ENV_FILES = ("versions.env", "ports.env", "credentials.env")


def find_root(start: Path | None = None) -> Path:
    """The project root: ``$CDCLAB_ROOT``, else the first parent holding ``infra/versions.env``."""
    if os.environ.get("CDCLAB_ROOT"):
        return Path(os.environ["CDCLAB_ROOT"]).resolve()
    here = (start or Path(__file__)).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "infra" / "versions.env").is_file():
            return candidate
    cwd = Path.cwd().resolve()
    for candidate in (cwd, *cwd.parents):
        if (candidate / "infra" / "versions.env").is_file():
            return candidate
    raise FileNotFoundError("cannot find the cdclab project root (infra/versions.env); set CDCLAB_ROOT")


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a ``KEY=value`` file as docker compose does for ``--env-file`` (no expansion, # comments)."""
    values: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise ValueError(f"{path}:{lineno}: expected KEY=value, got {raw!r}")
        key, value = line.split("=", 1)
        values[key.strip()] = value.strip().strip('"').strip("'")
    return values


@dataclass(frozen=True)
class LabConfig:
    root: Path
    state: Path
    cache: Path
    values: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path | None = None) -> LabConfig:
        root = root or find_root()
        values: dict[str, str] = {}
        for name in ENV_FILES:
            values.update(read_env_file(root / "infra" / name))
        # The environment may override any value (e.g. POSTGRES_PORT=25432 make up).
        for key in list(values):
            if key in os.environ:
                values[key] = os.environ[key]
        state = Path(os.environ.get("CDCLAB_STATE", root / ".lab")).resolve()
        cache = Path(os.environ.get("CDCLAB_CACHE", Path.home() / ".cache" / "cdclab")).resolve()
        return cls(root=root, state=state, cache=cache, values=values)

    def __getitem__(self, key: str) -> str:
        try:
            return self.values[key]
        except KeyError:
            raise KeyError(f"{key} is not set in infra/{{{','.join(ENV_FILES)}}}") from None

    # ---- addresses -------------------------------------------------------------------------
    @property
    def host(self) -> str:
        """The address users and host tools reach every service on (``LAB_HOST``, 127.0.0.1)."""
        return self["LAB_HOST"]

    def host_of(self, service: str) -> str:
        """Where a client reaches ``service``: ``$<SERVICE>_HOST`` if set, else ``LAB_HOST``.

        On the host both launchers answer on 127.0.0.1. Inside the compose network the containers
        set ``POSTGRES_HOST=postgres``, ``KAFKA_HOST=kafka`` and so on (compose.yaml, ``x-network``),
        so the same code reaches the services by name there.
        """
        return os.environ.get(f"{service.upper().replace('-', '_')}_HOST") or self.host

    def port(self, name: str) -> int:
        return int(self[f"{name.upper()}_PORT"])

    def address(self, service: str) -> str:
        """``host:port`` of ``service`` for a client (:meth:`host_of`, :meth:`port`)."""
        return f"{self.host_of(service)}:{self.port(service)}"

    def url(self, service: str) -> str:
        """``http://host:port`` of ``service`` (:meth:`address`)."""
        return f"http://{self.address(service)}"

    @property
    def kafka_bootstrap(self) -> str:
        return self.address("kafka")

    @property
    def connect_url(self) -> str:
        return self.url("connect")

    @property
    def minio_url(self) -> str:
        return self.url("minio")

    def s3_client(self, config: Any = None) -> Any:
        """A boto3 S3 client for the lab's MinIO (its root login); ``config``: a ``botocore`` Config."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.minio_url,
            aws_access_key_id=self["MINIO_ROOT_USER"],
            aws_secret_access_key=self["MINIO_ROOT_PASSWORD"],
            region_name="us-east-1",
            config=config,
        )

    @property
    def airflow_url(self) -> str:
        """Where lab processes reach the api-server (inside compose: the service name)."""
        return self.url("airflow")

    @property
    def airflow_public_url(self) -> str:
        """The UI's address in the user's browser: ``LAB_HOST`` and the published port (inside a
        container ``AIRFLOW_PUBLIC_PORT``, as the api-server listens on its own port there)."""
        return f"http://{self.host}:{os.environ.get('AIRFLOW_PUBLIC_PORT') or self.port('airflow')}"

    @property
    def partner_api_url(self) -> str:
        return self.url("partner_api")

    def pg_dsn(self, database: str, role: str | None = None) -> str:
        """A libpq DSN for ``database`` as ``role`` (default: the database's owner role)."""
        role = role or database
        user, password = self._pg_login(role)
        return (
            f"host={self.host_of('postgres')} port={self.port('postgres')} dbname={database} "
            f"user={user} password={password} application_name=cdclab"
        )

    def pg_uri(self, database: str, role: str | None = None, scheme: str = "postgresql") -> str:
        user, password = self._pg_login(role or database)
        return f"{scheme}://{quote(user)}:{quote(password, safe='')}@{self.address('postgres')}/{database}"

    def _pg_login(self, role: str) -> tuple[str, str]:
        logins = {
            "postgres": ("postgres", self["POSTGRES_SUPERUSER_PASSWORD"]),
            "shop": (self["SHOP_USER"], self["SHOP_PASSWORD"]),
            "warehouse": (self["WAREHOUSE_USER"], self["WAREHOUSE_PASSWORD"]),
            "cdc": (self["CDC_USER"], self["CDC_PASSWORD"]),
            "airflow": (self["AIRFLOW_DB_USER"], self["AIRFLOW_DB_PASSWORD"]),
        }
        if role not in logins:
            raise KeyError(f"unknown lab role {role!r}; one of {sorted(logins)}")
        return logins[role]

    # ---- paths -----------------------------------------------------------------------------
    def log_file(self, service: str) -> Path:
        return self.state / "logs" / f"{service}.log"

    def pid_file(self, service: str) -> Path:
        return self.state / "run" / f"{service}.pid"

    @cached_property
    def pg_data(self) -> Path:
        """The Postgres data directory.

        Postgres refuses to run as root, so as root the cluster runs as the ``postgres`` OS user,
        which must be able to reach its directory: it then lives under ``/var/lib/cdclab`` in a
        folder named after this checkout's state directory.
        """
        return self._data_dir("CDCLAB_PG_DATA", "pg", "postgres")

    @cached_property
    def mariadb_data(self) -> Path:
        """MariaDB's data directory (as root it runs as the ``mysql`` OS user, like Postgres above)."""
        return self._data_dir("CDCLAB_MARIADB_DATA", "mariadb", "mariadb")

    def _data_dir(self, env_var: str, root_prefix: str, folder: str) -> Path:
        """A database's data directory: ``$env_var`` when set; as root
        ``/var/lib/cdclab/<root_prefix>-<digest of the state directory>``; else ``<state>/<folder>``."""
        if os.environ.get(env_var):
            return Path(os.environ[env_var])
        if os.geteuid() == 0:
            digest = hashlib.sha256(str(self.state).encode()).hexdigest()[:12]
            return Path("/var/lib/cdclab") / f"{root_prefix}-{digest}"
        return self.state / folder

    @property
    def jars(self) -> Path:
        return self.cache / "jars" / self.jars_key

    @property
    def jars_key(self) -> str:
        """A folder name that changes whenever a version or a pom changes (no stale jars mixed in)."""
        h = hashlib.sha256()
        for key in (
            "KAFKA_VERSION",
            "SCALA_BINARY",
            "LOG4J_VERSION",
            "DEBEZIUM_VERSION",
            "DEBEZIUM_JDBC_VERSION",
            "HIBERNATE_VERSION",
        ):
            h.update(f"{key}={self[key]}\n".encode())
        for pom in sorted((self.root / "infra" / "maven").rglob("pom.xml")):
            h.update(pom.read_bytes())
        return h.hexdigest()[:16]

    @property
    def minio_binary(self) -> Path:
        return self.cache / "bin" / f"minio-{self['MINIO_MODULE_VERSION']}"

    # ---- the user's DAGs (docs/harness.md) ---------------------------------------------------
    @property
    def user_dags(self) -> Path | None:
        """``$CDCLAB_USER_DAGS``: a folder of the user's DAGs the lab's Airflow parses and schedules
        beside (or instead of) the bundled ones; inside compose it is mounted at a fixed path."""
        value = os.environ.get("CDCLAB_USER_DAGS", "").strip()
        return Path(value).resolve() if value else None

    @property
    def user_pythonpath(self) -> list[Path]:
        """``$CDCLAB_USER_PYTHONPATH``: folders holding the user's own Python package (``src/``),
        importable by their DAGs; ``:``-separated."""
        value = os.environ.get("CDCLAB_USER_PYTHONPATH", "").strip()
        return [Path(p).resolve() for p in value.split(os.pathsep) if p]

    @property
    def bundled_dags(self) -> bool:
        """``$CDCLAB_BUNDLED_DAGS`` (default true): whether the lab's own fifty DAGs are loaded."""
        value = os.environ.get("CDCLAB_BUNDLED_DAGS", "true").strip().lower()
        if value not in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            raise ValueError(f"CDCLAB_BUNDLED_DAGS must be true or false, got {value!r}")
        return value in ("true", "1", "yes", "on")

    def dag_bundles(self) -> list[dict[str, object]]:
        """Airflow's DAG bundles: ``dags-folder`` (the bundled DAGs, ``dags/``) and ``user-dags``."""
        local = "airflow.dag_processing.bundles.local.LocalDagBundle"
        bundles: list[dict[str, object]] = []
        if self.bundled_dags:
            bundles.append({"name": "dags-folder", "classpath": local, "kwargs": {}})
        if self.user_dags is not None:
            if not self.user_dags.is_dir():
                raise FileNotFoundError(f"CDCLAB_USER_DAGS={self.user_dags} is not a folder")
            bundles.append({"name": "user-dags", "classpath": local, "kwargs": {"path": str(self.user_dags)}})
        if not bundles:
            raise ValueError("CDCLAB_BUNDLED_DAGS=false needs CDCLAB_USER_DAGS (a folder of your DAGs)")
        return bundles

    def _user_dag_env(self) -> dict[str, str]:
        """Only set when the user configured something: the default lab's environment is unchanged."""
        env: dict[str, str] = {}
        if self.user_dags is not None or not self.bundled_dags:
            env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(self.dag_bundles())
        if self.user_pythonpath:
            inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
            env["PYTHONPATH"] = os.pathsep.join([*map(str, self.user_pythonpath), *inherited])
        return env

    # ---- environment handed to services and DAGs -------------------------------------------
    def airflow_connections(self) -> dict[str, str]:
        """``AIRFLOW_CONN_*`` variables: the only way DAGs learn addresses and logins."""
        kafka = {
            "conn_type": "kafka",
            "extra": {"bootstrap.servers": self.kafka_bootstrap, "group.id": "cdclab-airflow"},
        }
        minio = {
            "conn_type": "aws",
            "login": self["MINIO_ROOT_USER"],
            "password": self["MINIO_ROOT_PASSWORD"],
            "extra": {"endpoint_url": self.minio_url, "region_name": "us-east-1"},
        }
        return {
            "AIRFLOW_CONN_SHOP": self.pg_uri("shop"),
            "AIRFLOW_CONN_WAREHOUSE": self.pg_uri("warehouse"),
            "AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps(kafka),
            "AIRFLOW_CONN_MINIO": json.dumps(minio),
            "AIRFLOW_CONN_KAFKA_CONNECT": json.dumps({"conn_type": "http", "host": self.connect_url}),
            "AIRFLOW_CONN_PARTNER_API": json.dumps({"conn_type": "http", "host": self.partner_api_url}),
            # where the lab's applications write their log files (71.9.2): a File (path) connection
            # (the standard provider's FSHook), so DAGs never read the launcher's configuration
            "AIRFLOW_CONN_APPLOGS": json.dumps(
                {"conn_type": "fs", "extra": {"path": str(self.state / "applogs")}}
            ),
        }

    @property
    def bind_host(self) -> str:
        """The address servers listen on: ``LAB_HOST`` (127.0.0.1) natively; inside a container every
        interface (``CDCLAB_BIND_HOST=0.0.0.0``), published by compose on 127.0.0.1 only."""
        return os.environ.get("CDCLAB_BIND_HOST") or self.host

    @property
    def airflow_secrets_file(self) -> Path:
        return self.state / "airflow" / "secrets.json"

    def airflow_secrets(self) -> dict[str, str]:
        """Airflow's secret keys for this install, generated once and kept in the state directory.

        ``jwt_secret`` signs the API's tokens, ``secret_key`` the log servers' and the UI's requests.
        No fernet key is set (Variables stay unencrypted in the metadata DB, as before): every process
        that writes Variables would need the same key, and under compose the tests' ``dag.test()`` runs
        on the host, which cannot read the ``lab-state`` volume. They are created at
        the first ``up`` (the first call), mode 0600, never committed; ``make clean`` wipes them with the
        state. Under compose every Airflow container reads the same file on the ``lab-state`` volume
        (``airflow-init`` runs first). Creation is atomic (a hard link that fails if the file exists), so
        two processes starting at once end up with the same keys.
        """
        path = self.airflow_secrets_file
        try:
            return dict(json.loads(path.read_text()))
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = {
            "jwt_secret": secrets.token_urlsafe(48),
            "secret_key": secrets.token_urlsafe(32),
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(keys, fh)
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it first: use its keys
        finally:
            tmp.unlink(missing_ok=True)
        return dict(json.loads(path.read_text()))

    def airflow_env(self) -> dict[str, str]:
        home = self.state / "airflow"
        keys = self.airflow_secrets()
        return {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.root / "dags"),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.airflow_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self['AIRFLOW_ADMIN_USER']}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.pg_uri("airflow", scheme="postgresql+psycopg2"),
            # natively on 127.0.0.1 only; inside a container on every interface (CDCLAB_BIND_HOST=0.0.0.0)
            "AIRFLOW__API__HOST": self.bind_host,
            "AIRFLOW__API__PORT": str(self.port("airflow")),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": self.airflow_public_url,
            "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
            "AIRFLOW__API__SECRET_KEY": keys["secret_key"],
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.state / "logs" / "airflow-tasks"),
            # the log servers (scheduler: worker logs, triggerer: trigger logs) would listen on every
            # interface (Airflow's serve_logs has no host setting): the launchers start both components
            # with --skip-serve-logs (native.airflow_command) and the UI reads the shared log folder; the
            # ports stay set to ports.env so nothing falls back to an unlisted default
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.port("airflow_worker_log")),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.port("airflow_trigger_log")),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            # re-parse an unchanged DAG file every 3 min, not every 30 s: parsing the ~50 files kept a
            # quarter of a core busy on a 2-core machine. A file you edit or add is still parsed at the
            # next loop: file_parsing_sort_mode=modified_time (the default) queues files changed since
            # their last parse ahead of the interval (airflow/dag_processing/manager.py)
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "180",
            "AIRFLOW__DAG_PROCESSOR__FILE_PARSING_SORT_MODE": "modified_time",
            # a task whose process died with its scheduler (kill -9, a crashed machine) is failed and retried
            # after 2 min without a heartbeat, not Airflow's 5 min (tasks heartbeat every few seconds; the
            # scheduler kill drill waits this out)
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "120",
            # a scheduler restarted after a kill adopts or resets the queued tasks of the dead one only
            # once that one's job has missed scheduler_health_check_threshold (30 s): at its start it
            # still looks alive, and the next check came 5 min later (orphaned_tasks_check_interval's
            # default; the compose scheduler drill waited 330 s for it); every minute here
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "60",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": self.bind_host,
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(
                self.port("airflow_scheduler_health")
            ),
            "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES_REGEXP": r"(airflow|cdclab)\..*",
            "CDCLAB_ROOT": str(self.root),
            **self.airflow_connections(),
            **self._user_dag_env(),
        }

    def service_env(self) -> dict[str, str]:
        """The environment every lab process gets: the env files, plus Airflow's settings."""
        env = dict(os.environ)
        env.update(self.values)
        env.update(self.airflow_env())
        env["CDCLAB_STATE"] = str(self.state)
        # what connectors/*.json reference as ${env:POSTGRES_HOST} (Kafka Connect's EnvVarConfigProvider)
        env["POSTGRES_HOST"] = self.host_of("postgres")
        env["TZ"] = "UTC"
        return env
