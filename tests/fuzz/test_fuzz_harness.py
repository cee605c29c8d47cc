"""The fuzz tier's own checks catch what they claim to catch."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.logger import Logger

from tests.fuzz.harness import LoggedFailures, fuzz_settings, packets

log = Logger()


def test_a_logged_failure_fails_the_block():
    """log.failure inside the block makes it fail, with the traceback in the message."""
    with pytest.raises(AssertionError, match="ZeroDivisionError"):
        with LoggedFailures():
            try:
                1 / 0
            except ZeroDivisionError:
                log.failure("boom")


def test_an_unhandled_error_in_a_deferred_fails_the_block():
    """A Deferred dropped with an unhandled error inside the block makes it fail."""
    with pytest.raises(AssertionError, match="Unhandled error in Deferred"):
        with LoggedFailures():
            d = defer.Deferred()
            d.errback(RuntimeError("dropped"))
            del d


def test_info_and_warnings_pass():
    """Events below level error, without a failure, are not failures."""
    with LoggedFailures():
        log.info("fine")
        log.warn("still fine")


@fuzz_settings(50)
@given(data=st.data(), content=st.binary(max_size=50))
def test_packets_cover_the_input_in_order(data, content):
    """packets() cuts the input without losing, adding or reordering bytes."""
    assert b"".join(data.draw(packets(content))) == content
