"""Fixtures that start the real `twistd -n mailsuite` on port-0 endpoints."""

import pytest

from mailsuite.testing.server import RunningSuite


@pytest.fixture
def make_suite(tmp_path):
    """Start suites on demand: ``make_suite(store="maildir", extra={...})``; all stopped at the end."""
    started = []

    def make(name="suite", **kwargs):
        suite = RunningSuite(str(tmp_path / name), **kwargs)
        started.append(suite)
        return suite.start()

    yield make
    for suite in started:
        suite.stop()


@pytest.fixture(params=["sqlite", "maildir"])
def suite(request, make_suite):
    """A running suite with the demo directory, once per store backend."""
    return make_suite(store=request.param)


@pytest.fixture
def sqlite_suite(make_suite):
    return make_suite(store="sqlite")
