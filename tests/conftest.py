"""Suite-wide pytest settings."""

from __future__ import annotations

from typing import List

import pytest

# The files that run real multi-process jobs take most of the suite's time (docs/benchmarks.md,
# "Test time"). Collected first, they start first on the two xdist workers (make test runs
# `-n 2 --dist loadfile`), and the many short files fill in behind them instead of one long file
# starting last and running alone.
HEAVY_FIRST = ("test_distributed.py", "test_faults.py", "test_npu_bridge.py", "test_job.py", "test_npu_emulated.py")


def pytest_configure(config: pytest.Config) -> None:
    # `make test` leaves these out (`-m "not slow"`) to stay under 15 minutes; `make test-slow` runs them.
    config.addinivalue_line("markers", "slow: a measurement-sized test (minutes), run by `make test-slow`")


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    order = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: order.get(item.path.name, len(HEAVY_FIRST)))  # stable: files keep their order
