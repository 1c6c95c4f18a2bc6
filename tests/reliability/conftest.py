"""The reliability suite prints its measured figures at the end of every run that includes it."""

from __future__ import annotations

import pytest

from tests.reliability.figures import table


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = table()
    if lines:
        terminalreporter.section("lwsobs reliability figures (docs/reliability.md)")
        for line in lines:
            terminalreporter.write_line(line)
