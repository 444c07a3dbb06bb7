"""The compose fixture's testcontainers wrapper shows ``up``'s progress as it comes and keeps
testcontainers' contract (a CompletedProcess, CalledProcessError on failure)."""

from __future__ import annotations

import subprocess

import pytest

from cdclab.lab import backend
from cdclab.lab.config import LabConfig


def test_up_output_is_streamed_line_by_line_and_returned() -> None:
    seen: list[str] = []
    compose = backend.testcontainers_compose(LabConfig.load(), seen.append)
    # any command with "up" in it goes through the streaming path; a shell stands in for compose
    out = compose._run_command(["sh", "-c", "echo building; echo ' Container x Healthy'", "up"])
    assert seen == ["  · building", "  ·  Container x Healthy"]
    assert out.returncode == 0 and out.stdout == b"building\n Container x Healthy\n"


def test_a_failing_up_raises_with_its_output() -> None:
    seen: list[str] = []
    compose = backend.testcontainers_compose(LabConfig.load(), seen.append)
    with pytest.raises(subprocess.CalledProcessError) as err:
        compose._run_command(["sh", "-c", "echo 'service x unhealthy'; exit 3", "up"])
    assert err.value.returncode == 3 and b"unhealthy" in err.value.output
    assert seen == ["  · service x unhealthy"]


def test_other_commands_keep_testcontainers_behaviour() -> None:
    compose = backend.testcontainers_compose(LabConfig.load(), lambda line: None)
    out = compose._run_command(["sh", "-c", "echo quiet"])
    assert out.stdout == b"quiet\n"
