"""Operations documentation generated from the live system, so it cannot drift from what runs.

Vocabulary:
- *DAG card* (:class:`DagCard`): what a DAG file declares (``@dag(...)``, ``DAG(...)`` or the lab's
  ``@lesson_dag(...)``), read with :mod:`ast` without importing it (no DB, no network, no Airflow
  parsing): ``dag_id``, the ``schedule`` expression as written (the lab's ``data_intervals(cron)`` as the
  ``CronDataIntervalTimetable(cron, timezone=...)`` it builds), ``tags`` and the *strategy section*: the docstring's title line and first paragraph (the house style puts the
  pattern and its guarantee there).
- *state schema*: every table of the warehouse schema ``state`` with its columns and types
  (``information_schema.columns``) at generation time.
- *runbook*: the recovery procedures for each kind of state (watermarks, Kafka offsets, interval ledger,
  dead letters, state backups), naming the tables and commands.
- *document*: one Markdown file; its ``##``/``###`` headings form the table of contents stored in
  ``state.docs_index`` (one row per heading with its anchor), replaced with every generation.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdclab.common.ddl import require


class DocsError(Exception):
    """Base class of this module's errors."""


class NoDagsFoundError(DocsError, FileNotFoundError):
    """The DAG folder has no ``*.py`` file declaring a DAG; check the ``dags_folder`` param."""


@dataclass(frozen=True)
class DagCard:
    dag_id: str
    file: str
    schedule: str
    tags: list[str]
    title: str
    strategy: str


def _constants(tree: ast.Module) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return out


def _value(node: ast.expr, consts: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name) and node.id in consts:
        return consts[node.id]
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def _strategy_section(doc: str) -> tuple[str, str]:
    lines = doc.strip().splitlines()
    title = lines[0].lstrip("# ").strip() if lines else ""
    paragraphs = [p.strip() for p in "\n".join(lines[1:]).split("\n\n") if p.strip()]
    return title, " ".join(paragraphs[0].split()) if paragraphs else ""


def _schedule(source: str, node: ast.expr | None) -> str:
    """The schedule as written; ``data_intervals(cron[, tz=...])`` (cdclab.dagkit) as the timetable it is."""
    if node is None:
        return "None"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "data_intervals":
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        cron = node.args[0] if node.args else kw.get("cron")
        tz = node.args[1] if len(node.args) > 1 else kw.get("tz")
        cron_text = ast.get_source_segment(source, cron) if cron is not None else None
        tz_text = ast.get_source_segment(source, tz) if tz is not None else '"UTC"'
        if cron_text is not None:
            return f"CronDataIntervalTimetable({cron_text}, timezone={tz_text})"
    return ast.get_source_segment(source, node) or ""


def read_dag_file(path: Path) -> DagCard | None:
    """The card of the DAG declared in ``path`` (``@dag(...)``, ``DAG(...)`` or ``@lesson_dag(...)``),
    None if it declares none."""
    source = path.read_text()
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:  # documented as broken rather than silently left out
        return DagCard(
            path.stem, path.name, "?", [], "DOES NOT PARSE", f"SyntaxError line {exc.lineno}: {exc.msg}"
        )
    consts = _constants(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        if name not in ("dag", "DAG", "lesson_dag"):
            continue
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        given = kw.get("dag_id", node.args[0] if node.args else None)
        dag_id = (_value(given, consts) if given is not None else None) or path.stem
        schedule = _schedule(source, kw.get("schedule"))
        tags = _value(kw["tags"], consts) if "tags" in kw else []
        title, strategy = _strategy_section(ast.get_docstring(tree) or "")
        return DagCard(
            str(dag_id), path.name, " ".join((schedule or "").split()), list(tags or []), title, strategy
        )
    return None


def read_dag_folder(folder: Path) -> list[DagCard]:
    cards = [c for p in sorted(folder.glob("*.py")) if (c := read_dag_file(p)) is not None]
    if not cards:
        raise NoDagsFoundError(f"no DAG declared in {folder}/*.py; point dags_folder at the DAG folder")
    return cards


def state_schema(conn: Any, schema: str = "state") -> dict[str, list[tuple[str, str]]]:
    """table -> [(column, type)] of every table in ``schema``."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
            "JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
            "WHERE c.table_schema = %s AND t.table_type = 'BASE TABLE' ORDER BY c.table_name, c.ordinal_position",
            (schema,),
        )
        out: dict[str, list[tuple[str, str]]] = {}
        for table, column, dtype in cur.fetchall():
            out.setdefault(f"{schema}.{table}", []).append((column, dtype))
    conn.rollback()
    return out


RUNBOOK = """\
### Lost or wrong watermark
1. Look at `state.watermark_history` for the key: who moved it last (dag_id, run_id) and from what.
2. If a snapshot exists (`state.state_backups`), trigger `71_10_02_state_management` with
   `{"restore": "auto"}` (restores missing keys only) or `{"restore": "force", "restore_version": N}`.
3. Otherwise set it with `TableWatermarkStore.reset(key, value, reason)`: the reset is audited in the
   history. Choose a value at or before the last loaded change: an earlier value re-reads (the guarded
   upsert skips duplicates), a later one loses changes.

### Kafka consumer group behind or broken
1. `cdclab offsets show` (or `marts.pipeline_health_dashboard`, metric `kafka_lag`) shows next offset,
   end offset and lag per partition from `state.kafka_offsets`.
2. Poison records are in `dlq.kafka_records` with their reason; fix and replay them, never delete silently.
3. `cdclab offsets reset --group G --topic T --to earliest|latest|N` moves the group; the merge's LSN
   guard makes a replay harmless.

### Failed or missing intervals
1. `SELECT * FROM state.interval_ledger WHERE status = 'failed'` lists failed intervals with the error;
   `marts.pipeline_health` metric `missing_intervals` counts the gaps.
2. The next run of the pipeline re-runs them first (gap filling); to force one now, clear the interval's
   `load` task in the UI. Interval loads replace the interval, so re-running is idempotent.
3. Check `state.validation_results` for the re-run intervals (`ok = true`).

### Dead-lettered rows
`dlq.rejected_rows` (rows) and `dlq.kafka_records` (Kafka records) keep the payload and the reason. Fix the
source row, then re-run its interval; the dead letter stays as the audit trail.
"""

OPERATIONS = """\
- Health: `SELECT * FROM marts.pipeline_health_dashboard ORDER BY severity DESC` (71_10_04 writes it
  hourly; thresholds are DAG params).
- Stack: `cdclab lab status`; Airflow UI on port 8080; MinIO console on port 9001.
- Backups: state snapshots under the `lab-tests` bucket (71_10_02), catalogued in `state.state_backups`.
- Strategy choice per table: `state.strategy_recommendations` (71_10_01), with the reasons.
- Run metrics (rows read and written, duration) per run: `state.run_metrics`.
"""


def anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")


def render(cards: Sequence[DagCard], schema: dict[str, list[tuple[str, str]]], generated_for: str) -> str:
    out = [
        "# Incremental pipelines — operations documentation",
        "",
        f"Generated for `{generated_for}` from the DAG files and the warehouse catalog; do not edit by hand.",
        "",
        "## Strategy documentation",
        "",
        "| dag_id | schedule | tags | strategy |",
        "|---|---|---|---|",
    ]
    for c in cards:
        out.append(f"| `{c.dag_id}` | `{c.schedule}` | {', '.join(c.tags)} | {c.title.replace('|', '/')} |")
    for c in cards:
        out += ["", f"### {c.dag_id}", "", f"File `dags/{c.file}`, schedule `{c.schedule}`.", ""]
        out.append(c.strategy or "_No docstring: add one (the house style requires it)._")
    out += ["", "## State schema", ""]
    for table, columns in schema.items():
        out += [f"### {table}", "", "| column | type |", "|---|---|"]
        out += [f"| `{col}` | {dtype} |" for col, dtype in columns]
        out.append("")
    out += ["## Recovery runbook", "", RUNBOOK, "## Operations guide", "", OPERATIONS]
    return "\n".join(out)


def headings(markdown: str) -> Iterable[tuple[int, str]]:
    for line in markdown.splitlines():
        m = re.match(r"^(#{2,3}) (.+)$", line)
        if m:
            yield len(m.group(1)), m.group(2).strip()


def ensure_schema(conn: Any) -> None:
    """Check ``state.docs_index`` (declared by infra/postgres/warehouse/V001__state.sql); commits on
    ``conn``, creates nothing."""
    require(conn, "state.docs_index")
    conn.commit()


def write_index(conn: Any, doc_uri: str, markdown: str, run_id: str | None) -> int:
    """Replace the table of contents of ``doc_uri`` in ``state.docs_index`` (commits)."""
    entries = list(headings(markdown))
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM state.docs_index WHERE doc_uri = %s", (doc_uri,))
        for position, (level, title) in enumerate(entries, 1):
            cur.execute(
                "INSERT INTO state.docs_index (doc_uri, position, level, title, anchor, run_id) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (doc_uri, position, level, title, anchor(title), run_id),
            )
    return len(entries)
