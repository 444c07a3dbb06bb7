"""What the lab's containers run (compose.yaml): ``python -m cdclab.lab.container ACTION SERVICE``.

- ``serve SERVICE``  run one long-lived lab service in the foreground (maxwell, partner-api, workload,
                     airflow-*)
- ``init JOB``       a one-shot job: ``connectors``, ``buckets`` or ``airflow`` (db migrate + login)
- ``check SERVICE``  the healthcheck: exit 0 when the service is healthy

Each one calls the native launcher's own functions with the container's configuration, so both
launchers start, initialise and judge a service the same way. Inside the compose network
``LabConfig.host_of`` resolves service names (``POSTGRES_HOST=postgres`` ...), and Airflow's settings
and connections come from ``LabConfig.airflow_env()`` exactly as natively. Only the standard
library and ``cdclab.lab`` are imported before a branch needs more: healthchecks run every few seconds.
"""

from __future__ import annotations

import os
import shutil
import sys

from cdclab.lab import native
from cdclab.lab.config import LabConfig

AIRFLOW = ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")


def serve(cfg: LabConfig, name: str) -> None:
    if name == "maxwell":
        # the pid file the native launcher writes: MaxwellProducer.healthy() compares it with the
        # pid in the producer's status file
        native.write_record(cfg, name, native.ProcessRecord.of(os.getpid(), [sys.executable, *sys.argv]))
        from cdclab.cdc import maxwell

        # like the native launcher: --from-start on the lab's very first start only
        maxwell.main(maxwell.first_start_args(cfg.state))
        return
    if name == "partner-api":
        from cdclab.delta import partner_api

        bind = os.environ.get("CDCLAB_BIND_HOST") or cfg.host
        partner_api.main(["--host", bind, "--port", str(cfg.port("partner_api"))])
        return
    if name == "workload":
        # the pid file + record the native launcher writes: WorkloadService.healthy() compares it with
        # the pid in the runner's status file (a bare pid file counts as stale and is removed)
        native.write_record(cfg, name, native.ProcessRecord.of(os.getpid(), [sys.executable, *sys.argv]))
        from cdclab.lab import shop_workload

        raise SystemExit(shop_workload.main(["serve"]))
    if name in AIRFLOW:
        env = cfg.service_env()
        airflow = shutil.which("airflow", path=env.get("PATH")) or "airflow"
        os.execvpe(airflow, native.airflow_command(airflow, name.removeprefix("airflow-")), env)
    raise SystemExit(f"cdclab: no such lab service to serve: {name!r}")


def init(cfg: LabConfig, job: str) -> None:
    if job == "connectors":
        native.register_connectors(cfg)
    elif job == "buckets":
        native.create_buckets(cfg)
    elif job == "airflow":
        native.prepare_airflow(cfg)
    else:
        raise SystemExit(f"cdclab: no such init job: {job!r} (connectors, buckets, airflow)")
    native.progress(f"init {job}: done")


def check(cfg: LabConfig, name: str) -> bool:
    if name in AIRFLOW:
        return native.airflow_component_healthy(cfg, name.removeprefix("airflow-"))
    return native.service(name).healthy(cfg)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("serve", "init", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    action, name = args
    cfg = LabConfig.load()
    if action == "serve":
        serve(cfg, name)
        return 0
    if action == "init":
        init(cfg, name)
        return 0
    return 0 if check(cfg, name) else 1


if __name__ == "__main__":
    sys.exit(main())
