"""compose.yaml runs the same lab as the native launcher.

Pure: reads compose.yaml, the env files under infra/, the shared config files and connectors, and
compares them with src/cdclab/lab/native.py and LabConfig; no Docker engine is needed.

Vocabulary:
- *long-running service*: a compose service without ``restart: "no"``; each one is a native service.
- *one-shot job*: a compose service with ``restart: "no"``; each does what part of a native service's
  start does (its *owner*), exits 0, and is awaited with ``service_completed_successfully``.
- *interpolated*: with ``${VAR}`` / ``${VAR:-default}`` replaced from the three env files, as
  ``docker compose --env-file infra/versions.env --env-file infra/ports.env --env-file
  infra/credentials.env`` (the Makefile's COMPOSE) does.
"""

from __future__ import annotations

import ast
import base64
import configparser
import inspect
import json
import re
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from cdclab.lab import native
from cdclab.lab.config import ENV_FILES, LabConfig, read_env_file

ROOT = Path(__file__).resolve().parents[2]
CFG = LabConfig.load(ROOT)
VARS = CFG.values  # env files, each key overridable from the environment, as for compose
RAW: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())

# compose service -> native service (src/cdclab/lab/native.py SERVICES); the names happen to be equal,
# written out so that renaming either side fails here.
NATIVE_NAME = {
    "postgres": "postgres",
    "kafka": "kafka",
    "connect": "connect",
    "minio": "minio",
    "mariadb": "mariadb",
    "maxwell": "maxwell",
    "partner-api": "partner-api",
    "airflow-api-server": "airflow-api-server",
    "airflow-scheduler": "airflow-scheduler",
    "airflow-dag-processor": "airflow-dag-processor",
    "airflow-triggerer": "airflow-triggerer",
}
# one-shot job -> the native service whose start does the same work
ONE_SHOT_OWNER = {
    "postgres-init": "postgres",  # Postgres.initialise(): infra/postgres/initdb.sh
    "connect-init": "connect",  # register_connectors()
    "minio-init": "minio",  # create_buckets()
    "mariadb-init": "mariadb",  # MariaDB.initialise(): infra/mariadb/init.sql, placeholders substituted
    "airflow-init": "airflow-api-server",  # prepare_airflow(): airflow db migrate
}
# Keys of LabConfig.airflow_env() whose value is a path on the host; compose points them into the
# container (or leaves them to the image), so only their presence is compared, not their value.
PATH_VALUED = {
    "AIRFLOW_HOME": "<state>/airflow natively; the image's own AIRFLOW_HOME (/opt/airflow) in compose",
    "AIRFLOW__CORE__DAGS_FOLDER": "<root>/dags natively; the read-only mount of dags/ in compose",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": "<state>/airflow/passwords.json natively; "
    "written by the api-server container into its AIRFLOW_HOME in compose",
    "AIRFLOW__LOGGING__BASE_LOG_FOLDER": "<state>/logs/airflow-tasks natively; the airflow-logs volume "
    "shared by all Airflow containers in compose",
    "CDCLAB_ROOT": "the checkout natively; the read-only mounts of the project in compose",
}
# quay.io/debezium/connect keeps its connector plugins here (KAFKA_CONNECT_PLUGINS_DIR of the image);
# the native launcher overrides plugin.path with its Maven-assembled folder.
DEBEZIUM_IMAGE_PLUGIN_DIR = "/kafka/connect"
# the official Airflow image's AIRFLOW_HOME
AIRFLOW_IMAGE_HOME = "/opt/airflow"
# The official mariadb image includes this folder after its packaged configuration (later files win).
MARIADB_IMAGE_CONF_DIR = PurePosixPath("/etc/mysql/conf.d")
# MinIO removed minio/minio from Docker Hub (September 2026); its released images stay on quay.io.
MINIO_IMAGE_REPOSITORY = "quay.io/minio/minio"


class UnknownVariable(KeyError):
    """compose.yaml names a variable that no env file defines and gives it no default."""


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose-style interpolation: ``$$``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``
    (defaults may nest). Anything else after ``$`` is refused, so a shell variable meant for the
    container that lacks its ``$$`` escape fails here instead of being blanked by compose."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
            continue
        if text.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if not text.startswith("${", i):
            raise ValueError(f"`$` not followed by `{{` or `$` in {text!r}: write $$ for a literal dollar")
        depth, j = 0, i + 1
        while j < len(text):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                break
            j += 1
        else:
            raise ValueError(f"unclosed ${{ in {text!r}")
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)(.*))?", text[i + 2 : j], re.DOTALL)
        if match is None:
            raise ValueError(f"unsupported interpolation {text[i : j + 1]!r}")
        name, op, default = match.groups()
        if name in variables and not (op == ":-" and variables[name] == ""):
            out.append(variables[name])
        elif op is not None:
            out.append(interpolate(default, variables))
        else:
            raise UnknownVariable(
                f"${{{name}}} in compose.yaml is in none of infra/{{{','.join(ENV_FILES)}}}"
            )
        i = j + 1
    return "".join(out)


def interpolate_tree(node: Any) -> Any:
    if isinstance(node, str):
        return interpolate(node, VARS)
    if isinstance(node, dict):
        return {key: interpolate_tree(value) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value) for value in node]
    return node


SERVICES_RAW: dict[str, dict[str, Any]] = RAW["services"]
SERVICES: dict[str, dict[str, Any]] = interpolate_tree(SERVICES_RAW)
ONE_SHOTS = {name for name, svc in SERVICES.items() if svc.get("restart") == "no"}
LONG_RUNNING = set(SERVICES) - ONE_SHOTS
NATIVE_ORDER = [svc.name for svc in native.SERVICES]


def strings(node: Any) -> list[str]:
    """Every string in a parsed YAML node (mapping keys included)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in (*strings(key), *strings(value))]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return []


def environment(svc: Mapping[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def runtime_text(svc: Mapping[str, Any]) -> str:
    """What a service runs with: command, entrypoint, healthcheck and environment, as one text."""
    parts = {key: svc.get(key) for key in ("command", "entrypoint", "healthcheck", "environment")}
    return json.dumps(parts)


def bind_mounts(name: str) -> list[tuple[Path, PurePosixPath, bool]]:
    """(host path, container path, read-only) of a service's bind mounts (sources starting with ./)."""
    mounts = []
    for volume in SERVICES[name].get("volumes", []):
        source, target, *options = volume.split(":")
        if source.startswith("./"):
            mounts.append(((ROOT / source).resolve(), PurePosixPath(target), "ro" in options))
    return mounts


def named_volume_targets(name: str) -> set[PurePosixPath]:
    return {
        PurePosixPath(v.split(":")[1])
        for v in SERVICES[name].get("volumes", [])
        if not v.startswith((".", "/"))
    }


def host_path(name: str, container_path: str) -> Path | None:
    """The host file behind ``container_path`` in service ``name`` (longest bind mount wins)."""
    path = PurePosixPath(container_path)
    best: tuple[int, Path] | None = None
    for host, target, _ in bind_mounts(name):
        if path == target or target in path.parents:
            depth = len(target.parts)
            if best is None or depth > best[0]:
                best = (depth, host.joinpath(*path.parts[len(target.parts) :]))
    return None if best is None else best[1]


def properties(path: Path) -> dict[str, str]:
    values = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "!")):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def mariadb_server_options() -> dict[str, str]:
    """The [mariadbd] group of infra/mariadb/my.cnf (``skip-name-resolve`` style flags map to "")."""
    parser = configparser.ConfigParser(allow_no_value=True, interpolation=None)
    parser.read_string((ROOT / "infra" / "mariadb" / "my.cnf").read_text())
    return {key: value or "" for key, value in parser["mariadbd"].items()}


def owner(name: str) -> str:
    return NATIVE_NAME.get(name) or ONE_SHOT_OWNER[name]


# ------------------------------------------------------------------------------------------------
def test_compose_runs_the_native_services_plus_one_shot_jobs_each_owned_by_a_native_service() -> None:
    assert LONG_RUNNING == set(NATIVE_NAME), "compose long-running services differ from the mapping"
    assert {NATIVE_NAME[name] for name in LONG_RUNNING} == set(NATIVE_ORDER)
    assert ONE_SHOTS == set(ONE_SHOT_OWNER)
    assert set(ONE_SHOT_OWNER.values()) <= set(NATIVE_ORDER)


def test_every_long_running_service_has_a_healthcheck_and_no_one_shot_job_has_one() -> None:
    for name in LONG_RUNNING:
        assert SERVICES[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name in ONE_SHOTS:
        assert "healthcheck" not in SERVICES[name], f"one-shot {name} must not have a healthcheck"


def test_every_service_uses_host_networking_and_publishes_no_ports() -> None:
    for name, svc in SERVICES.items():
        assert svc.get("network_mode") == "host", f"{name}: network_mode must be host"
        assert "ports" not in svc, f"{name}: with host networking the server binds its port itself"


def test_compose_names_no_variable_outside_the_env_files() -> None:
    # interpolate_tree raised at import for a variable without default; here the x- anchors too
    interpolate_tree(RAW)
    with pytest.raises(UnknownVariable):
        interpolate("${CDCLAB_NO_SUCH_VARIABLE}", VARS)
    with pytest.raises(ValueError, match="literal dollar"):
        interpolate("echo $HOME", VARS)


def test_every_image_is_pinned_by_versions_env() -> None:
    v = VARS
    airflow_base = f"apache/airflow:{v['AIRFLOW_VERSION']}-python{v['PYTHON_VERSION']}"
    expected = {
        "postgres": f"postgres:{v['POSTGRES_MAJOR']}",
        "postgres-init": f"postgres:{v['POSTGRES_MAJOR']}",
        "kafka": f"apache/kafka:{v['KAFKA_VERSION']}",
        "connect": f"quay.io/debezium/connect:{v['DEBEZIUM_VERSION']}",
        "minio": f"{MINIO_IMAGE_REPOSITORY}:{v['MINIO_RELEASE']}",
        "mariadb": f"mariadb:{v['MARIADB_MAJOR']}",
    }
    built = {name for name, svc in SERVICES.items() if "build" in svc}
    assert set(expected) | built == set(SERVICES)
    for name, image in expected.items():
        assert SERVICES[name]["image"] == image, name
    for name in built:
        svc = SERVICES[name]
        assert svc["image"] == f"cdclab-airflow:{v['AIRFLOW_VERSION']}-python{v['PYTHON_VERSION']}", name
        first = svc["build"]["dockerfile_inline"].strip().splitlines()[0]
        assert first == f"FROM {airflow_base}", name
    # the tag part of every image reference is made of variables only
    for name, svc in SERVICES_RAW.items():
        refs = [svc["image"]]
        if "build" in svc:
            refs.append(svc["build"]["dockerfile_inline"].strip().splitlines()[0].removeprefix("FROM "))
        for ref in refs:
            tag = re.sub(r"\$\{[^}]*\}", "", ref.rpartition(":")[2] if ":" in ref else "")
            assert not re.search(r"\d", tag), f"{name}: literal version in {ref!r}"


def test_compose_yaml_holds_no_literal_version_port_or_secret() -> None:
    text = "\n".join(strings(RAW))  # parsed, so comments do not count
    versions = read_env_file(ROOT / "infra" / "versions.env")
    ports = read_env_file(ROOT / "infra" / "ports.env")
    credentials = read_env_file(ROOT / "infra" / "credentials.env")
    for key, value in versions.items():
        assert not re.search(rf"(?<![\d.]){re.escape(value)}(?![\d.])", text), f"literal {key}={value}"
    for key, value in ports.items():
        assert not re.search(rf"(?<![\d.]){re.escape(value)}(?![\d.])", text), f"literal {key}={value}"
    # a password that equals a role or service name ("shop", "postgres", "mariadb") cannot be told
    # apart from that name
    names = {value for key, value in credentials.items() if key.endswith("_USER")} | set(SERVICES_RAW)
    for key, value in credentials.items():
        if re.search(r"PASSWORD|SECRET", key) and value not in names:
            assert value not in text, f"literal {key}"
    # every login handed to a container is a reference to credentials.env
    for name, svc in SERVICES_RAW.items():
        for key, value in environment(svc).items():
            if re.search(r"(PASSWORD|SECRET|_USER)$", key) and key != "PGUSER":
                ref = re.fullmatch(r"\$\{([A-Z0-9_]+)\}", value)
                assert ref is not None, f"{name}: {key}={value!r} is not a ${{VAR}} reference"
                assert ref.group(1) in credentials, f"{name}: {key}={value!r}"


def test_every_port_of_ports_env_is_used_by_the_service_native_binds_it_for() -> None:
    ports = {key for key in read_env_file(ROOT / "infra" / "ports.env") if key.endswith("_PORT")}
    owned = {f"{key.upper()}_PORT" for svc in native.SERVICES for key in svc.ports}
    assert owned == ports, "every port in ports.env belongs to exactly the native services that bind it"
    compose_name = {native_name: name for name, native_name in NATIVE_NAME.items()}
    for svc in native.SERVICES:
        text = runtime_text(SERVICES_RAW[compose_name[svc.name]])
        for key in svc.ports:
            assert f"${{{key.upper()}_PORT}}" in text, (
                f"{compose_name[svc.name]} does not use {key.upper()}_PORT"
            )


def test_the_shared_config_files_listen_where_ports_env_says() -> None:
    host = VARS["LAB_HOST"]
    server = properties(ROOT / "infra" / "kafka" / "server.properties")
    assert server["listeners"] == (
        f"PLAINTEXT://{host}:{VARS['KAFKA_PORT']},CONTROLLER://{host}:{VARS['KAFKA_CONTROLLER_PORT']}"
    )
    assert server["advertised.listeners"] == f"PLAINTEXT://{host}:{VARS['KAFKA_PORT']}"
    assert server["controller.quorum.bootstrap.servers"] == f"{host}:{VARS['KAFKA_CONTROLLER_PORT']}"
    worker = properties(ROOT / "infra" / "kafka" / "connect-distributed.properties")
    assert worker["bootstrap.servers"] == f"{host}:{VARS['KAFKA_PORT']}"
    assert worker["listeners"] == f"http://{host}:{VARS['CONNECT_PORT']}"
    assert worker["rest.advertised.port"] == VARS["CONNECT_PORT"]
    pg = properties(ROOT / "infra" / "postgres" / "postgresql.conf")
    assert pg["listen_addresses"].strip("'") == host
    mariadb = mariadb_server_options()
    assert mariadb["bind-address"] == host
    # both launchers pass --port (an override from the environment works); the file keeps the default
    assert mariadb["port"] == read_env_file(ROOT / "infra" / "ports.env")["MARIADB_PORT"]
    for path in sorted((ROOT / "connectors").glob("*.json")):
        assert json.loads(path.read_text())["config"].get("database.hostname", host) == host, path.name


def test_every_project_path_a_container_uses_is_a_mounted_file_of_the_checkout() -> None:
    for name, svc in SERVICES.items():
        for path in re.findall(r"(?:/opt)?/cdclab/[\w./-]*[\w]", runtime_text(svc)):
            host = host_path(name, path)
            assert host is not None, f"{name}: {path} is not under a bind mount"
            assert host.exists(), f"{name}: {path} is {host}, which does not exist"
        for host, target, read_only in bind_mounts(name):
            assert host.exists(), f"{name}: mounts missing {host}"
            assert host.is_relative_to(ROOT)
            assert read_only, f"{name}: {target} must be mounted read-only"


def test_postgres_runs_the_shared_postgresql_conf_and_the_native_initdb_options() -> None:
    pg = SERVICES["postgres"]
    command = pg["command"]
    conf = next(arg.removeprefix("config_file=") for arg in command if arg.startswith("config_file="))
    assert host_path("postgres", conf) == ROOT / "infra" / "postgres" / "postgresql.conf"
    assert command[command.index("-p") + 1] == VARS["POSTGRES_PORT"]
    env = environment(pg)
    assert env["POSTGRES_PASSWORD"] == VARS["POSTGRES_SUPERUSER_PASSWORD"]
    assert shlex.split(env["POSTGRES_INITDB_ARGS"]) == native_initdb_cluster_options()


def native_initdb_cluster_options() -> list[str]:
    """The literal options of the native launcher's initdb call that shape the cluster."""
    tree = ast.parse(Path(native.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.List) and any(
            isinstance(e, ast.Call)
            and any(isinstance(a, ast.Constant) and a.value == "initdb" for a in e.args)
            for e in node.elts
        ):
            consts = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            return consts[consts.index("--pwfile") + 1 :]
    raise AssertionError("the initdb call is no longer found in src/cdclab/lab/native.py")


def test_postgres_runs_the_shared_initdb_script_on_first_start_and_again_on_every_up() -> None:
    initdb = ROOT / "infra" / "postgres" / "initdb.sh"
    first_start = [
        h for h, t, _ in bind_mounts("postgres") if t.parent == PurePosixPath("/docker-entrypoint-initdb.d")
    ]
    assert first_start == [initdb]
    entrypoint = SERVICES["postgres-init"]["entrypoint"]
    assert host_path("postgres-init", entrypoint[-1]) == initdb
    needed = set(re.findall(r"\$([A-Z_]+_PASSWORD)", initdb.read_text()))
    assert needed, "initdb.sh reads the *_PASSWORD variables"
    for name in ("postgres", "postgres-init"):
        env = environment(SERVICES[name])
        assert host_path(name, env["CDCLAB_PG_DIR"]) == initdb.parent
        for key in needed:
            assert env[key] == VARS[key], f"{name}: {key}"
    env = environment(SERVICES["postgres-init"])
    assert (env["PGHOST"], env["PGPORT"], env["PGUSER"]) == (
        VARS["LAB_HOST"],
        VARS["POSTGRES_PORT"],
        "postgres",
    )
    assert env["PGPASSWORD"] == VARS["POSTGRES_SUPERUSER_PASSWORD"]


def test_kafka_formats_once_and_runs_the_shared_server_properties_on_its_volume() -> None:
    kafka = SERVICES["kafka"]
    script = kafka["command"][-1]
    server = ROOT / "infra" / "kafka" / "server.properties"
    used = set(re.findall(r"/cdclab/kafka/[\w.]+", script))
    assert {host_path("kafka", p) for p in used} == {server}
    assert "kafka-storage.sh format --standalone" in script
    assert "kafka-server-start.sh" in script
    assert "meta.properties" in script, "storage is formatted only when it is not yet"
    cluster_id = environment(kafka)["CDCLAB_KAFKA_CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, "a KRaft cluster id is a base64 UUID"
    log_dirs = PurePosixPath(properties(server)["log.dirs"])
    assert log_dirs in named_volume_targets("kafka"), "log.dirs must be the kafka volume"
    log4j = environment(kafka)["KAFKA_LOG4J_OPTS"].partition("=")[2]
    assert host_path("kafka", log4j) == ROOT / "infra" / "kafka" / "log4j2.properties"


def test_connect_runs_the_shared_worker_properties_with_the_images_plugins() -> None:
    connect = SERVICES["connect"]
    worker = ROOT / "infra" / "kafka" / "connect-distributed.properties"
    assert connect["command"][0].endswith("/connect-distributed.sh")
    assert host_path("connect", connect["command"][1]) == worker
    assert properties(worker)["plugin.path"] == DEBEZIUM_IMAGE_PLUGIN_DIR
    log4j = environment(connect)["KAFKA_LOG4J_OPTS"].partition("=")[2]
    assert host_path("connect", log4j) == ROOT / "infra" / "kafka" / "log4j2.properties"


def test_connect_has_every_variable_the_connectors_reference_with_the_env_files_value() -> None:
    env = environment(SERVICES["connect"])
    referenced = set()
    for path in sorted((ROOT / "connectors").glob("*.json")):
        referenced |= set(re.findall(r"\$\{env:([A-Za-z0-9_]+)\}", path.read_text()))
    assert referenced, "connectors/*.json hold no ${env:...} reference"
    for key in referenced:
        assert env.get(key) == VARS[key], f"connect lacks {key} (or has another value)"


def test_connect_init_registers_every_connector_file_with_the_native_function() -> None:
    job = SERVICES["connect-init"]
    assert "register_connectors(LabConfig.load())" in " ".join(job["entrypoint"])
    assert callable(native.register_connectors)
    root = environment(job)["CDCLAB_ROOT"]
    connectors = sorted((ROOT / "connectors").glob("*.json"))
    assert connectors
    for path in connectors:
        assert host_path("connect-init", f"{root}/connectors/{path.name}") == path
    for name in ENV_FILES:
        assert host_path("connect-init", f"{root}/infra/{name}") == ROOT / "infra" / name
    env = environment(job)
    assert (env["LAB_HOST"], env["CONNECT_PORT"]) == (VARS["LAB_HOST"], VARS["CONNECT_PORT"])


def test_minio_init_creates_the_native_buckets_with_the_native_function() -> None:
    job = SERVICES["minio-init"]
    assert "create_buckets(LabConfig.load())" in " ".join(job["entrypoint"])
    assert native.BUCKETS
    assert callable(native.create_buckets)
    root = environment(job)["CDCLAB_ROOT"]
    for name in ENV_FILES:
        assert host_path("minio-init", f"{root}/infra/{name}") == ROOT / "infra" / name
    env = environment(job)
    for key in ("LAB_HOST", "MINIO_PORT", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
        assert env[key] == VARS[key], key
    minio = environment(SERVICES["minio"])
    assert (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"]) == (
        VARS["MINIO_ROOT_USER"],
        VARS["MINIO_ROOT_PASSWORD"],
    )


def test_mariadb_runs_the_shared_my_cnf_on_the_ports_env_port_with_the_native_root_login() -> None:
    mariadb = SERVICES["mariadb"]
    my_cnf = ROOT / "infra" / "mariadb" / "my.cnf"
    included = [(h, t) for h, t, _ in bind_mounts("mariadb") if t.parent == MARIADB_IMAGE_CONF_DIR]
    assert [h for h, _ in included] == [my_cnf], f"my.cnf must be mounted into {MARIADB_IMAGE_CONF_DIR}"
    assert included[0][1].suffix == ".cnf", "the server reads only *.cnf files of an included folder"
    assert not my_cnf.stat().st_mode & 0o002, "MariaDB ignores a world-writable option file"
    options = mariadb_server_options()
    assert options.get("log-bin") and options["binlog-format"].upper() == "ROW", "Maxwell reads row events"
    command = mariadb["command"]
    assert command[0] == "mariadbd"
    assert f"--port={VARS['MARIADB_PORT']}" in command, "the native launcher passes --port too"
    env = environment(mariadb)
    assert env["MARIADB_ROOT_PASSWORD"] == VARS["MARIADB_ROOT_PASSWORD"]
    # natively the lab logs in as root@127.0.0.1 over TCP (MariaDB.healthy, MariaDB.initialise)
    assert env["MARIADB_ROOT_HOST"] == VARS["LAB_HOST"]
    assert PurePosixPath("/var/lib/mysql") in named_volume_targets("mariadb"), "the data must be a volume"
    assert mariadb["healthcheck"]["test"] == ["CMD", "healthcheck.sh", "--connect", "--innodb_initialized"]


def test_mariadb_init_runs_the_native_initialise_with_every_placeholder_of_init_sql() -> None:
    job = SERVICES["mariadb-init"]
    assert "MariaDB().initialise(LabConfig.load())" in " ".join(job["entrypoint"])
    initialise = inspect.getsource(native.MariaDB.initialise)
    init_sql = ROOT / "infra" / "mariadb" / "init.sql"
    root = environment(job)["CDCLAB_ROOT"]
    assert host_path("mariadb-init", f"{root}/infra/mariadb/init.sql") == init_sql
    for name in ENV_FILES:
        assert host_path("mariadb-init", f"{root}/infra/{name}") == ROOT / "infra" / name
    placeholders = set(re.findall(r"\$\{([A-Z0-9_]+)\}", init_sql.read_text()))
    assert placeholders, "init.sql has ${...} placeholders"
    env = environment(job)
    for key in sorted(placeholders):
        assert f'"{key}"' in initialise, f"native MariaDB.initialise does not substitute ${{{key}}}"
        assert env[key] == VARS[key], key
    for key in ("LAB_HOST", "MARIADB_PORT", "MARIADB_ROOT_PASSWORD"):
        assert env[key] == VARS[key], key
    assert job["depends_on"]["mariadb"]["condition"] == "service_healthy"


def test_maxwell_runs_the_native_producer_and_is_healthy_by_the_native_check() -> None:
    maxwell = SERVICES["maxwell"]
    module = "cdclab.cdc.maxwell"
    assert f'"-m", "{module}"' in inspect.getsource(native.MaxwellProducer.start)
    script = maxwell["entrypoint"][-1]
    assert script.rstrip().endswith(f"exec python -m {module}"), "exec: the producer keeps the pid written"
    env = environment(maxwell)
    state = PurePosixPath(env["CDCLAB_STATE"])
    assert state.is_absolute()
    assert host_path("maxwell", str(state)) is None, "the state is the container's, not a project file"
    tmpfs = {PurePosixPath(entry.split(":")[0]) for entry in maxwell.get("tmpfs", [])}
    assert state in tmpfs, "CDCLAB_STATE must be writable and empty at every start (no stale status)"
    pid_file = LabConfig(root=ROOT, state=Path(state), cache=CFG.cache, values=VARS).pid_file("maxwell")
    assert f'echo $$ > "$CDCLAB_STATE/{pid_file.relative_to(state)}"' in script
    health = maxwell["healthcheck"]["test"]
    assert health[:3] == ["CMD", "python", "-c"]
    assert "MaxwellProducer().healthy(LabConfig.load())" in health[3]
    assert host_path("maxwell", env["PYTHONPATH"]) == ROOT / "src"
    for name in ENV_FILES:
        assert host_path("maxwell", f"{env['CDCLAB_ROOT']}/infra/{name}") == ROOT / "infra" / name
    for key in ("LAB_HOST", "KAFKA_PORT", "MARIADB_PORT", "MAXWELL_USER", "MAXWELL_PASSWORD"):
        assert env[key] == VARS[key], key
    waits = {dep: spec["condition"] for dep, spec in maxwell["depends_on"].items()}
    assert waits == {
        "kafka": "service_healthy",
        "mariadb": "service_healthy",
        "mariadb-init": "service_completed_successfully",
    }


AIRFLOW_SERVICES = sorted(name for name in SERVICES if name.startswith("airflow-"))


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_settings_equal_native_airflow_env_except_paths(name: str) -> None:
    native_env = CFG.airflow_env()
    assert set(PATH_VALUED) <= set(native_env), "PATH_VALUED lists a key native no longer sets"
    others = {k for k in native_env if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    assert others <= set(PATH_VALUED), f"native sets {others - set(PATH_VALUED)}: compare or list them here"
    env = environment(SERVICES[name])
    compose_keys = {k for k in env if k.startswith("AIRFLOW__")} - set(PATH_VALUED)
    native_keys = {k for k in native_env if k.startswith("AIRFLOW__")} - set(PATH_VALUED)
    assert compose_keys == native_keys
    for key in sorted(native_keys):
        assert env[key] == native_env[key], key
    for key in set(PATH_VALUED) & set(env):  # set in compose: a path inside the container
        assert PurePosixPath(env[key]).is_absolute(), key
        assert not env[key].startswith(str(ROOT)), f"{key} is a host path"
    assert host_path(name, env["AIRFLOW__CORE__DAGS_FOLDER"]) == ROOT / "dags"
    assert host_path(name, env["PYTHONPATH"]) == ROOT / "src"
    for file in ENV_FILES:
        assert host_path(name, f"{env['CDCLAB_ROOT']}/infra/{file}") == ROOT / "infra" / file
    logs = PurePosixPath(env.get("AIRFLOW__LOGGING__BASE_LOG_FOLDER", f"{AIRFLOW_IMAGE_HOME}/logs"))
    assert logs in named_volume_targets(name), "task logs must be on the volume every component shares"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_connections_equal_native_connections(name: str) -> None:
    native_conns = CFG.airflow_connections()
    env = environment(SERVICES[name])
    compose_conns = {k: v for k, v in env.items() if k.startswith("AIRFLOW_CONN_")}
    assert set(compose_conns) == set(native_conns)
    for key, value in native_conns.items():
        if value.startswith("{"):
            assert json.loads(compose_conns[key]) == json.loads(value), key
        else:
            assert compose_conns[key] == value, key


def test_airflow_image_installs_exactly_the_dependencies_of_pyproject() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = {re.sub(r"\s+", "", dep) for dep in pyproject["project"]["dependencies"]}
    builds = {json.dumps(svc["build"], sort_keys=True) for svc in SERVICES.values() if "build" in svc}
    assert len(builds) == 1, "every service built from the lab image uses the same build"
    dockerfile = json.loads(builds.pop())["dockerfile_inline"]
    pip = dockerfile.split("pip install", 1)[1]
    assert set(re.findall(r'"([^"]+)"', pip)) == wanted


def test_the_api_server_writes_the_admin_login_where_the_auth_manager_reads_it() -> None:
    svc = SERVICES["airflow-api-server"]
    env = environment(svc)
    assert (env["AIRFLOW_ADMIN_USER"], env["AIRFLOW_ADMIN_PASSWORD"]) == (
        VARS["AIRFLOW_ADMIN_USER"],
        VARS["AIRFLOW_ADMIN_PASSWORD"],
    )
    script = svc["command"][-1]
    assert 'os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]' in script
    passwords = env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    assert PurePosixPath(passwords).parent == PurePosixPath(AIRFLOW_IMAGE_HOME)  # writable, not a mount
    assert host_path("airflow-api-server", passwords) is None
    assert script.rstrip().endswith("exec airflow api-server")


def test_dependencies_wait_for_health_or_completion_and_follow_the_native_start_order() -> None:
    adopted = set()
    for name, svc in SERVICES.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            condition = spec["condition"]
            if dep in ONE_SHOTS:
                assert condition == "service_completed_successfully", f"{name} -> {dep}"
                adopted.add(dep)
            else:
                assert condition == "service_healthy", f"{name} -> {dep}"
            assert NATIVE_ORDER.index(owner(dep)) <= NATIVE_ORDER.index(owner(name)), (
                f"{name} waits for {dep}, which the native launcher starts later"
            )
    # `docker compose up --wait` fails on an exited container nobody awaits (docker/compose#10596)
    assert adopted == ONE_SHOTS


def test_the_makefile_passes_the_three_env_files_in_order() -> None:
    makefile = (ROOT / "Makefile").read_text()
    compose = re.search(r"^COMPOSE := (.+)$", makefile, re.MULTILINE)
    assert compose is not None
    files = re.findall(r"--env-file (\S+)", compose.group(1))
    assert files == [f"infra/{name}" for name in ENV_FILES]
