"""Data-parallel training across processes, on PyTorch's own engine (``torch.distributed``, DDP).

``torchrun --nproc-per-node N -m crs.cli run RUN.yaml`` starts N copies of ``crs run``;
torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``,
and :func:`init_from_env` joins the process group from them (``env://`` rendezvous):
``gloo`` for ``device: cpu``, ``nccl`` for ``device: cuda`` with one GPU per process (GPU
``LOCAL_RANK``, made the current device so that ``cuda`` means it everywhere).  Without
torchrun (or with one process) nothing here does anything and the run is the single-process
run, bit for bit.

What each piece of a run does under N processes:

- **Training batches.** The epoch's order is the single-process order (the same seeded
  shuffle); it is cut into the same global batches of ``batch_size``, and each global batch
  into N contiguous shards, one per rank (:func:`shard_batches`).  Every sample is seen once
  per epoch across ranks and one optimizer step covers the same samples as in one process.
  Each rank's loss is scaled by ``N * local / global`` (:attr:`Shard.loss_scale`) before
  DistributedDataParallel averages the gradients over the N ranks, so the averaged gradient
  is the gradient of the global batch's mean, also for a last batch that does not divide by N.
  A global batch smaller than N gives some rank no sample: that rank runs one sample with
  loss scale 0 (its gradient is zero, but it takes part in the all-reduce every rank waits for).
- **Logged losses** are the sample-weighted means over the global batch
  (:func:`all_reduce_weighted_means`), so ``metrics.jsonl`` and the history show what one
  process would have logged; they differ from it only by float summation order.
- **Validation and test metrics** are computed on rank 0 alone, over every sample once,
  and broadcast (:func:`broadcast_object`).  Metrics are plugins with their own state
  (corpus BLEU, distinct n-grams, protocols that adapt per user) that has no merge
  operation, so scoring shards and merging would need one per metric; scoring on rank 0 gives
  the single-process figures exactly.  The cost: evaluation is not faster with more ranks.
  The other ranks wait in the broadcast (hence the long :data:`TIMEOUT_ENV` default) after
  running the lifecycle hooks, so that whatever state a hook keeps is the same on every rank.
- **Early stopping** reads the broadcast metrics, so every rank takes rank 0's decision.
- **Writes**: rank 0 alone writes the checkpoint, best.pt, metrics.jsonl, history.json, the
  report, rankings and generations (``current().main``, :class:`SilentMetricsLog`); the other
  ranks wait at a :func:`barrier` before reading best.pt back.
- **Random streams**: rank 0 keeps the single-process stream; rank r > 0 is seeded from
  (seed, r) so that dropout masks differ between shards; the checkpoint holds every rank's
  RNG state (``rng_by_rank``), so ``--resume`` after a kill of any rank continues each stream.
- **Non-model state**: parameters stay identical on every rank (identical averaged gradients,
  identical optimizer steps); caches derived from them (the pipeline's cached outputs of
  frozen graph encoders, e.g. KGSF's R-GCN) are recomputed from them on each rank.  The
  trainer checks at the end of every stage that all ranks hold the same model state
  (:func:`check_replicas_agree`), and fails loudly if not.

Limits: a training strategy must say it can be sharded (``distributed = True`` on its class;
``plain`` does).  ``maml`` cannot: its per-user tasks and functional inner loop run outside
DistributedDataParallel's gradient hooks, so it is refused with a ConfigError under torchrun.
Gradient accumulation all-reduces after every backward pass (correct, not the fastest).
One node, or a run folder every node sees (rank 0 writes best.pt, the others read it).
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, Sequence

import torch

from ..errors import ConfigError

__all__ = ["Distributed", "SINGLE", "Shard", "current", "init_from_env", "shutdown", "shard_batches",
           "all_reduce_weighted_means", "broadcast_object", "gather_objects", "barrier", "training_replica",
           "check_strategy", "check_replicas_agree", "SilentMetricsLog", "rank_seed", "quiet_unless_main",
           "report_entry", "TIMEOUT_ENV"]

# Seconds a rank waits in a collective (e.g. for rank 0's validation) before the run fails.
TIMEOUT_ENV = "CRS_DDP_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 3 * 3600


@dataclass(frozen=True)
class Distributed:
    """Where this process stands: its rank among `world_size` processes and the backend joining them."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def active(self) -> bool:
        """True when several processes train together (torchrun with N > 1)."""
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """True on the process that writes files and prints (rank 0)."""
        return self.rank == 0


SINGLE = Distributed()
_current = SINGLE


def current() -> Distributed:
    """The process group this process joined (:data:`SINGLE` outside torchrun)."""
    return _current


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError:
        raise ConfigError("", f"the environment variable {name}={value!r} is not a whole number",
                          "start the run with torchrun, which sets it, or unset it") from None


def init_from_env(device: Any, path: str = "device") -> Distributed:
    """Join the process group torchrun describes in the environment; :data:`SINGLE` without one.

    :param device: the config's ``device`` (``cpu`` or ``cuda``): picks the backend.
    :raises ConfigError: a device pinned to one GPU (``cuda:N``) for several processes, fewer GPUs
        than processes on this node, or an unusable timeout.
    """
    global _current
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return _current
    if torch.distributed.is_initialized():  # e.g. a test that calls the runner twice in one process
        return _current
    local_rank = _env_int("LOCAL_RANK", 0)
    kind = torch.device(str(device).strip()).type
    if kind == "cuda":
        if torch.device(str(device).strip()).index is not None:
            raise ConfigError(path, f"'{device}' puts all {world} processes on one GPU",
                              "use device: cuda: each process takes the GPU of its LOCAL_RANK")
        from .precision import resolve_device

        resolve_device(device, path)  # a CPU-only torch or no visible GPU: the one-process errors
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ConfigError(path, f"process LOCAL_RANK {local_rank} needs GPU {local_rank}, but this node has "
                                    f"{count}", f"start at most {count} processes per node (--nproc-per-node)")
        torch.cuda.set_device(local_rank)  # `cuda` (no index) now means this rank's GPU everywhere
        backend = "nccl"
    else:
        backend = "gloo"
    timeout = _env_int(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
    if timeout < 1:
        raise ConfigError("", f"{TIMEOUT_ENV}={timeout}: a collective needs a positive timeout",
                          f"unset {TIMEOUT_ENV} (default {DEFAULT_TIMEOUT_S} s) or give seconds")
    torch.distributed.init_process_group(backend, timeout=timedelta(seconds=timeout))
    _current = Distributed(rank=torch.distributed.get_rank(), world_size=torch.distributed.get_world_size(),
                           local_rank=local_rank, backend=backend)
    return _current


def shutdown() -> None:
    """Leave the process group (a no-op outside torchrun)."""
    global _current
    if _current.active and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    _current = SINGLE


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s random streams: the run seed on rank 0, one derived from (seed, rank) elsewhere."""
    from .seeding import derived_seed

    return int(seed) if rank == 0 else derived_seed(int(seed), 0x5EED, int(rank))


@contextlib.contextmanager
def quiet_unless_main() -> Iterator[None]:
    """On ranks other than 0, the console output (prints and INFO logs, which go to stdout) is dropped: rank 0
    says it once.  Warnings and errors still show on stderr."""
    if current().main:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def report_entry() -> dict[str, Any]:
    """``{"distributed": {"world_size", "backend"}}`` for report.json under torchrun; {} in one process."""
    dist = current()
    return {"distributed": {"world_size": dist.world_size, "backend": dist.backend}} if dist.active else {}


# ---------------------------------------------------------------- batches
@dataclass
class Shard:
    """This rank's part of one global batch."""

    samples: list
    global_size: int  # samples in the global batch
    loss_scale: float  # N * len(samples) / global_size; 0 for a stand-in sample on a rank with none
    weight: int  # samples this rank contributes to the global batch's logged means (0 for a stand-in)


def shard_batches(samples: Sequence[Any], batch_size: int, *, shuffle: bool, seed: int, rank: int,
                  world_size: int, size_of: Callable[[Any], int] | None = None) -> Iterator[Shard]:
    """Rank `rank`'s shards of the global batches that one process would draw from `samples`.

    The global batches are one process's (:func:`crs.data.batching.batch_chunks`, grouped by
    `size_of` when given); each is cut into `world_size` contiguous parts whose sizes differ by
    at most one, the larger ones first.
    Every rank yields one shard per global batch, so all ranks take the same number of steps.
    """
    from ..data.batching import batch_chunks

    for chunk in batch_chunks(samples, batch_size, shuffle=shuffle, seed=seed, size_of=size_of):
        base, extra = divmod(len(chunk), world_size)
        low = rank * base + min(rank, extra)
        mine = chunk[low:low + base + (rank < extra)]
        if mine:
            yield Shard(mine, len(chunk), world_size * len(mine) / len(chunk), len(mine))
        else:  # fewer samples than ranks: a zero-weight stand-in keeps this rank in the all-reduce
            yield Shard(chunk[:1], len(chunk), 0.0, 0)


def all_reduce_weighted_means(values: dict[str, float], weight: int) -> dict[str, float]:
    """``sum(weight_r * value_r) / sum(weight_r)`` over the ranks, per key (every rank passes the same keys).

    Float64 on the wire: the result differs from one process's mean only by summation order.
    """
    dist = current()
    if not dist.active:
        return dict(values)
    keys = list(values)
    device = torch.device("cuda") if dist.backend == "nccl" else torch.device("cpu")
    packed = torch.tensor([float(values[k]) * weight for k in keys] + [float(weight)], dtype=torch.float64,
                          device=device)
    torch.distributed.all_reduce(packed)
    total = float(packed[-1])
    return {key: float(packed[i]) / total if total else math.nan for i, key in enumerate(keys)}


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Rank `src`'s `value` on every rank (picklable values; the others pass anything, e.g. None)."""
    if not current().active:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank (``[value]`` in one process)."""
    if not current().active:
        return [value]
    gathered: list[Any] = [None] * current().world_size
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def barrier() -> None:
    """Wait until every rank gets here (e.g. rank 0 has written a file the others read)."""
    dist = current()
    if dist.active:  # nccl: name this rank's GPU, or torch guesses it (and warns)
        torch.distributed.barrier(**({"device_ids": [dist.local_rank]} if dist.backend == "nccl" else {}))


# ------------------------------------------------------------------ model
@contextlib.contextmanager
def training_replica(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The module a stage's training forward goes through: `model` itself, or a DistributedDataParallel of it.

    Built inside the stage's freezing (DDP registers the parameters that require a gradient
    then) and dropped when the stage ends, which removes its gradient hooks, so validation and
    evaluation call the plain model.  ``find_unused_parameters``: a stage may train slots that
    some batches do not reach (torch then warns once, on each rank, when a stage has none: harmless).
    Buffers are not re-broadcast before every forward: no crs component keeps running statistics, and
    rank 0's parameters and buffers are copied to every rank when the replica is built.  ``device_ids`` stays None:
    the batches are already on the device, and DDP would otherwise copy every sample object.
    """
    if not current().active:
        yield model
        return
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # torch >= 2.12 names the per-forward buffer sync `forward_sync_buffers` (broadcast_buffers warns there)
    no_buffer_sync = ({"forward_sync_buffers": False}
                      if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
                      else {"broadcast_buffers": False})
    replica = DistributedDataParallel(model, find_unused_parameters=True, **no_buffer_sync)
    try:
        yield replica
    finally:
        del replica


def check_strategy(strategy: Any, node: Any, path: str) -> None:
    """Under torchrun, a ConfigError for a training strategy that cannot be sharded (no ``distributed = True``).

    :param node: the stage's ``strategy`` config node (``{type: maml, ...}``), for the name in the message.
    """
    if not current().active or getattr(strategy, "distributed", False):
        return
    name = node.get("type", node) if isinstance(node, dict) else node
    raise ConfigError(path, f"the '{name}' training strategy cannot run under torchrun with "
                      f"{current().world_size} processes: it does not train through sharded batches and "
                      "DistributedDataParallel (maml's per-user tasks and functional inner loop run outside DDP's "
                      "gradient hooks)", "run this config in one process (`crs run`, without torchrun), "
                      "or train the stage with the plain strategy")


def check_replicas_agree(model: torch.nn.Module, where: str) -> None:
    """RuntimeError unless every rank holds the same model state (checksums compared across ranks)."""
    if not current().active:
        return
    from .checksum import state_checksum

    sums = gather_objects(state_checksum(model.state_dict()))
    if len(set(sums)) > 1:
        differing = [rank for rank, value in enumerate(sums) if value != sums[0]]
        raise RuntimeError(f"{where}: the model state of rank(s) {differing} differs from rank 0's; the "
                           "data-parallel replicas went out of step (a component that changes parameters "
                           "outside the optimizer, or draws different random numbers into its state?)")


class SilentMetricsLog:
    """What ranks other than 0 log to: nothing (rank 0's :class:`crs.training.run_log.MetricsLog` writes)."""

    def write(self, *args: Any, **kwargs: Any) -> None:
        pass

    def size(self) -> int:
        return 0

    def truncate(self, size: int) -> None:
        pass

    def close(self) -> None:
        pass
