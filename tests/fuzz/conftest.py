"""The fuzz tier: hypothesis-driven hostile input for every protocol (see harness.py)."""

import os


def pytest_report_header(config):
    examples = os.environ.get("FUZZ_EXAMPLES", "").strip()
    if examples:
        return f"fuzz tier: FUZZ_EXAMPLES={examples} examples per property"
    return "fuzz tier: default example counts (set FUZZ_EXAMPLES for a long run)"
