"""Pure logic of the one Kafka Connect client: reading status documents, a Connect that does not answer."""

from __future__ import annotations

import socket

import pytest

from cdclab.cdc.connect import ConnectClient, ConnectError, ConnectorNotRunning, overall_state, state_of


def test_state_of_reads_connector_and_task_states_and_the_first_trace():
    doc = {
        "name": "x",
        "connector": {"state": "RUNNING", "worker_id": "w"},
        "tasks": [{"id": 0, "state": "RUNNING"}, {"id": 1, "state": "FAILED", "trace": "boom\n at y"}],
    }
    assert state_of(doc) == ("RUNNING", ["RUNNING", "FAILED"], "boom\n at y")
    assert state_of({"connector": {"state": "FAILED", "trace": "bad"}, "tasks": []}) == ("FAILED", [], "bad")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_connect_that_does_not_answer_is_status_0_missing_and_a_clear_error():
    client = ConnectClient(f"http://127.0.0.1:{_closed_port()}/", timeout=2)
    assert not client.url.endswith("/")
    status, body = client.request("GET", "/connectors")
    assert status == 0 and "does not answer" in body
    state, tasks, why = client.state("shop")
    assert (state, tasks) == ("MISSING", []) and "does not answer" in why
    with pytest.raises(ConnectError, match="HTTP 0"):
        client.connectors()
    with pytest.raises(ConnectorNotRunning, match="connector shop is MISSING"):
        client.wait_running("shop", timeout=0, poll=0)


def test_overall_state_is_failed_when_the_connector_or_any_task_failed():
    running = {"connector": {"state": "RUNNING"}, "tasks": [{"state": "RUNNING"}]}
    assert overall_state(running) == "RUNNING"
    assert overall_state({"connector": {"state": "RUNNING"}, "tasks": [{"state": "FAILED"}]}) == "FAILED"
    assert overall_state({"connector": {"state": "FAILED"}, "tasks": []}) == "FAILED"
    assert overall_state({"connector": {"state": "PAUSED"}, "tasks": [{"state": "PAUSED"}]}) == "PAUSED"
    assert overall_state({}) == "?"


def test_overall_worker_and_wait_deleted_against_a_connect_that_does_not_answer():
    client = ConnectClient(f"http://127.0.0.1:{_closed_port()}", timeout=2)
    assert client.overall("shop") == "UNKNOWN"
    with pytest.raises(ConnectError, match="HTTP 0"):
        client.worker()
    with pytest.raises(ConnectError, match="still registered after 0s: HTTP 0"):
        client.wait_deleted("shop", timeout=0, poll=0)


def test_wait_for_probes_until_done_and_reports_the_last_answer():
    from cdclab.cdc.connect import wait_for

    answers = iter([1, 2, 3, 4])
    assert wait_for(lambda: next(answers), lambda a: a == 3, timeout=5, poll=0) == (True, 3)
    assert wait_for(lambda: 7, lambda a: a == 3, timeout=0, poll=0) == (False, 7)  # probes once
    answers = iter(["PENDING", "FAILED", "RUNNING"])
    assert wait_for(
        lambda: next(answers), lambda a: a == "RUNNING", 5, 0, give_up=lambda a: a == "FAILED"
    ) == (
        False,
        "FAILED",
    )
