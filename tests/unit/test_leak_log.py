"""The leak log: one line per flagged wsi, at most N per second of flag time, then a summary."""

from __future__ import annotations

import logging

import pytest

from lwsobs.core.policy import NS
from lwsobs.core.roles import LeakRule, Role
from lwsobs.core.tracker import Tracker
from lwsobs.sinks.leak_log import LeakLog


def flagged_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "lwsobs.leaks"]


def test_a_flood_of_verdicts_is_capped_per_second_and_summarised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="lwsobs.leaks")
    tracker = Tracker()
    leak_log = LeakLog(per_second=5)
    tracker.add_sink(leak_log)
    ctx = tracker.context("app", "c")
    wsis = [tracker.open(ctx, Role.H1_SERVER, 0) for _ in range(30)]
    for wsi in wsis[:12]:  # all within second 1
        tracker.flag(wsi, 1 * NS + 10, LeakRule.IDLE)
    lines = flagged_lines(caplog)
    assert len(lines) == 5 and all("rule=idle" in line for line in lines)
    assert leak_log.suppressed == {"idle": 7}

    tracker.flag(wsis[12], 2 * NS, LeakRule.IDENTITY_REUSED)  # a new second: summary, then it
    lines = flagged_lines(caplog)
    assert lines[5].startswith("7 more wsis flagged within one second") and "idle=7" in lines[5]
    assert lines[6].startswith("leaked wsi") and "rule=identity_reused" in lines[6]

    for wsi in wsis[13:20]:
        tracker.flag(wsi, 2 * NS + 5, LeakRule.IDENTITY_REUSED)
    leak_log.flush()  # the observer's tick: the held-back ones are reported without a new flag
    lines = flagged_lines(caplog)
    assert len(lines) == 7 + 4 + 1
    assert lines[-1].startswith("3 more wsis") and "identity_reused=3" in lines[-1]
    leak_log.flush()
    assert len(flagged_lines(caplog)) == 12  # nothing held back, nothing written
