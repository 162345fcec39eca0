"""Test-wide set-up.

- blockbuster fails any test that blocks a running event loop.
- Hypothesis: locally every run explores new examples (a failure prints the seed to pin with
  ``--hypothesis-seed``); under CI (``CI`` set) the examples are derived from each test's
  name (``derandomize``), so a submission's verdict cannot change from one run to the next.
  New examples are found by local runs and by ``make fuzz`` (2,000 examples a test).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from blockbuster import BlockBuster, blockbuster_ctx
from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.register_profile("fuzz", max_examples=2000, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    with blockbuster_ctx() as bb:
        yield bb
