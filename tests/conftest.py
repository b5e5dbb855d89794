"""Suite-wide settings."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run every test's torch work on one thread.

    The tests use tiny models; with a second OpenMP thread they mostly wait on each other,
    and on a busy 2-core machine (CI runs beside other work) one step got 35x slower.
    Imported lazily so that tests of torch-free modules stay torch-free.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _expected_minutes(item) -> float:
    marker = item.get_closest_marker("slow")
    return -1.0 if marker is None else float(marker.kwargs.get("minutes", 0.0))


def pytest_collection_modifyitems(config, items):
    """Start the longest tests first: ``@pytest.mark.slow(minutes=N)`` by N, then other slow ones (stable otherwise).

    The suite runs on two pytest-xdist workers (scripts/test.sh); a minutes-long end-to-end run that
    started last would leave one worker idle while the other finishes it.  Longest first keeps both
    busy to the end; without xdist the order changes nothing but the order.
    """
    items.sort(key=lambda item: -_expected_minutes(item))
