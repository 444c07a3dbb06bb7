"""How ``trigger_many`` learns that runs ended: one listing of every unfinished run per poll, in pages,
and a GET only for a run the listing no longer shows (cdclab.testing.dags)."""

from __future__ import annotations

import re
from typing import Any

from cdclab.testing import dags


class FakeAPI:
    """The two api-server calls the poll makes: the paged listing of queued/running runs of every DAG,
    and one run's state. ``shift`` drops the first listed run from every page after the first, as a run
    ending between two page requests does."""

    def __init__(self, states: dict[tuple[str, str], str], page: int = 100, shift: bool = False) -> None:
        self.states, self.page, self.shift = states, page, shift
        self.calls: list[str] = []

    def call(self, method: str, path: str, body: object | None = None) -> Any:
        self.calls.append(path)
        if path.startswith("/api/v2/dags/~/dagRuns?"):
            offset = int(re.search(r"offset=(\d+)", path).group(1))  # type: ignore[union-attr]
            unfinished = sorted(k for k, s in self.states.items() if s in ("queued", "running"))
            if self.shift and offset:
                unfinished = unfinished[1:]
            runs = unfinished[offset : offset + self.page]
            return {
                "dag_runs": [{"dag_id": d, "dag_run_id": r} for d, r in runs],
                "total_entries": len(unfinished),
            }
        dag_id, run_id = re.match(r"/api/v2/dags/([^/]+)/dagRuns/(.+)$", path).groups()  # type: ignore[union-attr]
        return {"state": self.states[(dag_id, run_id.replace("%3A", ":"))]}


def test_the_listing_reads_every_page_of_unfinished_runs() -> None:
    states = {(f"d{i:03d}", "r"): "running" for i in range(250)} | {("done", "r"): "success"}
    api = FakeAPI(states)
    assert dags._listed_unfinished(api) == {(f"d{i:03d}", "r") for i in range(250)}  # type: ignore[arg-type]
    assert len(api.calls) == 3  # pages of 100: 100 + 100 + 50


def test_a_listed_run_is_unfinished_without_a_get_and_a_missing_one_is_confirmed_by_one() -> None:
    states = {("a", "r1"): "running", ("b", "r2"): "success", ("c", "r3"): "failed"}
    api = FakeAPI(states)
    left = dags._still_unfinished(api, {("a", "r1"), ("b", "r2"), ("c", "r3")})  # type: ignore[arg-type]
    assert left == {("a", "r1")}
    gets = [p for p in api.calls if "~" not in p]
    assert sorted(gets) == ["/api/v2/dags/b/dagRuns/r2", "/api/v2/dags/c/dagRuns/r3"]


def test_a_run_shifted_off_a_page_while_listing_is_still_unfinished() -> None:
    states = {(f"d{i:03d}", "r"): "running" for i in range(150)}
    api = FakeAPI(states, shift=True)  # d100 falls between the two pages
    listed = dags._listed_unfinished(api)  # type: ignore[arg-type]
    assert ("d100", "r") not in listed
    assert dags._still_unfinished(api, set(states)) == set(states)  # type: ignore[arg-type]
