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
