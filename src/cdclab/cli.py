"""``cdclab``: the lab's command line.

cdclab lab up [SERVICE...]     start what is not running (idempotent), then print the status table
cdclab lab down [SERVICE...]   stop services (data is kept)
cdclab lab status [--check]    the status table; --check exits 1 unless everything is healthy
cdclab lab logs SERVICE [-n N] the last lines of a service's log
cdclab lab start|stop|restart|kill SERVICE...   one service (kill = SIGKILL, for fault drills;
                               stop and kill are on purpose: the supervisor leaves the service down)
cdclab lab supervise [--only SERVICE...] [--interval S]   native: restart a service that died
                               (compose's restart: unless-stopped); `lab up` starts it in the background
cdclab lab clean               stop everything and wipe the state (databases, topics, buckets)
cdclab lab reload-airflow      restart Airflow's components with this shell's CDCLAB_USER_DAGS,
                               CDCLAB_USER_PYTHONPATH and CDCLAB_BUNDLED_DAGS (docs/harness.md)
The backend is $LAB_BACKEND (compose | native), else compose where a Docker engine answers.
cdclab lab env                 print the environment the launcher gives services (for `eval`)
cdclab offsets show|reset      exactly-once consumer offsets (warehouse.state.kafka_offsets)
cdclab slots show|check        replication slots: retained WAL; check: exit 1 (SlotLost) when a
                               connector's slot is missing or invalidated (cdclab.cdc.slots)
cdclab stream TABLE... --group G   replicate shop tables into the warehouse continuously, exactly
                               once, until SIGINT/SIGTERM (cdclab.cdc.pipeline.stream; a service)
cdclab workload ...            drive changes into the shop database (see `cdclab workload -h`)
"""

from __future__ import annotations

import argparse
import shlex
import sys


def _lab(args: argparse.Namespace) -> int:
    from cdclab.lab import native
    from cdclab.lab.backend import LabError, all_healthy, backend, format_table, reload_airflow
    from cdclab.lab.config import LabConfig

    cfg = LabConfig.load()
    if args.action == "env":
        for key, value in sorted(cfg.airflow_env().items()):
            print(f"export {key}={shlex.quote(value)}")
        return 0
    if args.action == "supervise":
        from cdclab.lab import supervisor

        return supervisor.run(cfg, native.SERVICES, only=args.services or None, interval=args.interval)
    lab = backend(cfg)
    try:
        if args.action == "up":
            print(f"cdclab: starting the lab ({lab.name} backend)", flush=True)
            rows = lab.up(args.services)
            print()
            print(format_table(rows))
            print(
                f"\nAirflow UI: {cfg.airflow_public_url}  login {cfg['AIRFLOW_ADMIN_USER']} / "
                f"{cfg['AIRFLOW_ADMIN_PASSWORD']}"
            )
            print(
                f"MinIO console: http://{cfg.host}:{cfg.port('minio_console')}  login "
                f"{cfg['MINIO_ROOT_USER']} / {cfg['MINIO_ROOT_PASSWORD']}"
            )
            return 0 if all_healthy(rows) else 1
        if args.action == "down":
            lab.down(args.services)
            return 0
        if args.action == "status":
            rows = lab.status()
            print(f"backend: {lab.name}")
            print(format_table(rows))
            if lab.name == "native":
                from cdclab.lab import supervisor

                print(supervisor.describe(cfg))
            return 0 if (not args.check or all_healthy(rows)) else 1
        if args.action in ("start", "stop", "restart", "kill"):
            if not args.services:
                print(f"usage: cdclab lab {args.action} SERVICE...", file=sys.stderr)
                return 2
            for name in args.services:
                getattr(lab, args.action)(name)
            return 0
        if args.action == "logs":
            if not args.services:
                print("usage: cdclab lab logs SERVICE", file=sys.stderr)
                return 2
            print(lab.logs(args.services[0], args.lines))
            return 0
        if args.action == "clean":
            lab.clean()
            return 0
        if args.action == "reload-airflow":
            reload_airflow(lab)
            print(format_table(lab.status()))
            return 0
    except (native.ServiceError, LabError) as exc:
        print(f"\ncdclab: {exc}", file=sys.stderr)
        return 1
    raise AssertionError(args.action)


def _offsets(args: argparse.Namespace) -> int:
    import psycopg2

    from cdclab.cdc import offsets
    from cdclab.lab.config import LabConfig

    cfg = LabConfig.load()
    with psycopg2.connect(cfg.pg_dsn("warehouse")) as conn, conn.cursor() as cur:
        if args.action == "show":
            print(offsets.format_report(offsets.report(cur, cfg.kafka_bootstrap, args.group)))
            return 0
        if not (args.group and args.topic):
            print("cdclab offsets reset needs --group and --topic", file=sys.stderr)
            return 2
        moved = offsets.reset(cur, cfg.kafka_bootstrap, args.group, args.topic, args.to)
    print(
        f"{args.group} on {args.topic} now starts at "
        + ", ".join(f"[{p}] {o}" for p, o in sorted(moved.items()))
    )
    return 0


def _slots(args: argparse.Namespace) -> int:
    import psycopg2

    from cdclab.cdc import slots
    from cdclab.cdc.connect import ConnectClient
    from cdclab.lab.config import LabConfig

    cfg = LabConfig.load()
    conn = psycopg2.connect(cfg.pg_dsn("shop"))
    try:
        with conn.cursor() as cur:
            if args.action == "show":
                header = ("SLOT", "PLUGIN", "DATABASE", "ACTIVE", "WAL_STATUS", "RESTART_LSN", "RETAINED")
                body = [
                    (
                        s.name,
                        s.plugin or "",
                        s.database or "",
                        str(s.active),
                        s.wal_status or "",
                        s.restart_lsn or "",
                        "-" if s.retained_bytes is None else f"{s.retained_bytes:,} B",
                    )
                    for s in slots.slot_states(cur).values()
                ]
                widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
                for line in [header, *body]:
                    print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))
                return 0
            try:
                state = slots.check_connector(ConnectClient(cfg.connect_url), cur, args.connector)
            except slots.SlotLost as exc:
                print(f"cdclab: {exc}", file=sys.stderr)
                return 1
            print(
                f"{args.connector}: slot {state.name} is {state.wal_status}, retains {state.retained_bytes} B"
            )
            return 0
    finally:
        conn.close()


def _stream(args: argparse.Namespace) -> int:
    """Follow the tables' Debezium topics until SIGINT or SIGTERM, then stop cleanly (the batch in
    flight commits or rolls back whole, with its offsets) and print the run's counts as JSON."""
    import json
    import logging
    import os
    import signal
    import threading

    if not os.environ.get("AIRFLOW_CONN_WAREHOUSE"):  # outside Airflow: the lab's connections
        from cdclab.lab.config import LabConfig

        for key, value in LabConfig.load().airflow_env().items():
            os.environ.setdefault(key, value)
    from cdclab.cdc.pipeline import stream

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger("cdclab.stream").info("signal %d: stopping after the batch in flight", signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    summary = stream(
        args.tables,
        group=args.group,
        stop=stop,
        topic_prefix=args.topic_prefix,
        target_schema=args.target_schema,
        target_prefix=args.target_prefix,
        delete_mode=args.delete_mode,
        batch_size=args.batch_size,
        poll_timeout=args.poll_timeout,
        who=args.who,
    )
    print(json.dumps(summary, default=str), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cdclab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    lab = sub.add_parser("lab", help="start, stop and inspect the lab stack")
    lab.add_argument(
        "action",
        choices=[
            "up",
            "down",
            "status",
            "logs",
            "clean",
            "env",
            "start",
            "stop",
            "restart",
            "kill",
            "reload-airflow",
            "supervise",
        ],
    )
    lab.add_argument("services", nargs="*")
    lab.add_argument(
        "--only", dest="services", nargs="+", help="supervise: restart only these services (others untouched)"
    )
    lab.add_argument("--interval", type=float, default=3.0, help="supervise: seconds between polls")
    lab.add_argument("--check", action="store_true")
    lab.add_argument("-n", "--lines", type=int, default=60)
    lab.set_defaults(func=_lab)
    offsets = sub.add_parser(
        "offsets", help="exactly-once consumer offsets kept in warehouse.state.kafka_offsets"
    )
    offsets.add_argument("action", choices=["show", "reset"])
    offsets.add_argument("--group", help="consumer group (show: all groups when omitted)")
    offsets.add_argument("--topic", help="topic to reset")
    offsets.add_argument("--to", default="earliest", help="earliest | latest | an offset (reset)")
    offsets.set_defaults(func=_offsets)
    slots = sub.add_parser("slots", help="replication slots: retained WAL, a lost slot (cdclab.cdc.slots)")
    slots.add_argument("action", choices=["show", "check"])
    slots.add_argument("--connector", default="shop-postgres-source", help="check: the connector whose slot")
    slots.set_defaults(func=_slots)
    streaming = sub.add_parser(
        "stream",
        help="replicate shop tables into the warehouse continuously, exactly once, until SIGINT/SIGTERM",
        description=_stream.__doc__,
    )
    streaming.add_argument("tables", nargs="+", help="source tables (public.orders or orders)")
    streaming.add_argument("--group", required=True, help="consumer group (its own, not a DAG's)")
    streaming.add_argument("--topic-prefix", default="shop", help="the Debezium connector's topic.prefix")
    streaming.add_argument("--target-schema", default="core")
    streaming.add_argument("--target-prefix", default="", help="target table = <schema>.<prefix><table>")
    streaming.add_argument("--delete-mode", default="hard", choices=["hard", "soft"])
    streaming.add_argument("--batch-size", type=int, default=500, help="most records per transaction")
    streaming.add_argument(
        "--poll-timeout", type=float, default=0.1, help="seconds a poll waits for the first record"
    )
    streaming.add_argument("--who", default="stream", help="updated_by of the stored offsets")
    streaming.set_defaults(func=_stream)
    from cdclab import workload

    workload.add_cli(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
