"""Fixtures shared with unit tests: test_fasthooks_server.py drives real sockets with the same
fake clock and handler switch that tests/unit/test_fasthooks.py compares the C hooks with."""

from tests.unit.test_fasthooks import clock, restore_switch  # noqa: F401 (pytest fixtures)
