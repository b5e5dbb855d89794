"""Seeding and random-number-generator state capture, for reproducible and resumable runs.

A resumed run must continue with exactly the random streams an uninterrupted
run would have used, so the trainer saves every generator it relies on
(Python ``random``, NumPy's global generator, torch CPU and CUDA) in each
checkpoint.  The states are stored as plain lists/tensors so a checkpoint loads
with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["seed_everything", "capture_rng_state", "restore_rng_state", "derived_seed"]


def seed_everything(seed: int) -> None:
    """Seed Python ``random``, NumPy and torch (CPU and every CUDA device)."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds all CUDA devices
    # Deterministic kernels are deliberately not forced (torch.use_deterministic_algorithms):
    # on CPU the default kernels already are, forcing them on GPU raises for ops that
    # have no deterministic version, and the call alone imports torch's compiler stack (~3 s).


def derived_seed(*parts: int) -> int:
    """A seed that depends only on `parts` (e.g. run seed, stage index, epoch), not on any RNG state.

    Used to shuffle each epoch's batches, so that the order of epoch k is the same
    whether or not the run was interrupted before it.
    """
    entropy = [int(p) % 2**32 for p in parts]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])


def capture_rng_state() -> dict[str, Any]:
    """The state of every random generator the trainer relies on (serialisable with weights_only)."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {
            "algorithm": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put every generator back in the state :func:`capture_rng_state` recorded."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    np_state = state["numpy"]
    np.random.set_state((np_state["algorithm"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        # A run resumed on a machine with fewer GPUs restores what it can.
        for device, device_state in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state.cpu(), device)
