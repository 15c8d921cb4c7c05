"""grain pipelines from a random-access source to batches of numpy arrays, one per process.

Both loaders build a lazy `grain.MapDataset` over a *global* stream of examples, apply the
transforms, cut the stream into per-process batches and keep every `process_count`-th one,
starting at `process_index`: process p holds rows [p * B, (p + 1) * B) of each global batch
(B = global batch size / process_count).
So concatenating the processes' batches in process order (what
`jax.make_array_from_process_local_data` does) gives the same global batch, bit for bit, whatever
the number of processes; a process decodes only its own images; and random augmentation depends
only on (seed, global position).

Batching happens in the `MapDataset`, before `to_iter_dataset`/`mp_prefetch`: grain then gives
whole batches to worker processes round-robin, so the output does not depend on `worker_count`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np
from absl import flags

from addernet_jax.data.sources import Source, balanced_subset

READ_THREADS = 4


def derived_seed(seed: int, *salt: int) -> int:
    """A well-mixed uint32 seed from (seed, salt...).

    grain reseeds epoch e of a shuffle with `seed + e` and gives every `random_map` the same
    Philox stream per index for equal seeds; mixing keeps seeds 0 and 1 (and the shuffle and each
    transform) from sharing streams.
    """
    return int(np.random.SeedSequence([seed, *salt]).generate_state(1)[0])


class _EpochOrder:
    """Stream position -> record index: a new permutation per epoch, cut to whole global batches.

    Dropping the remainder per epoch (as torch's `drop_last`) keeps epoch boundaries on step
    boundaries, which the per-epoch learning-rate schedule relies on.
    """

    def __init__(self, num_records: int, per_epoch: int, seed: int):
        self.num_records, self.per_epoch = num_records, per_epoch
        # Index e * N + r of a grain shuffle is position r of epoch e's permutation.
        self.permutations = grain.MapDataset.range(num_records).shuffle(seed)

    def __call__(self, position: int, _: Any) -> int:
        epoch, offset = divmod(position, self.per_epoch)
        return self.permutations[epoch * self.num_records + offset]


class _ReadRecord:
    """Record index -> the record's arrays (a 'label' as int32), optionally with a padding
    `mask`. Non-array fields (names, ...) are dropped: batches hold arrays only."""

    def __init__(self, source: Source, *, with_mask: bool = False):
        self.source, self.with_mask = source, with_mask

    def __call__(self, index: int) -> dict[str, Any]:
        n = len(self.source)
        # Eval padding repeats the last record; `mask` tells metrics to ignore it.
        record = self.source[min(index, n - 1)]
        out = {key: np.int32(value) if key == "label" else np.asarray(value)
               for key, value in record.items() if not isinstance(value, str)}
        if self.with_mask:
            out["mask"] = np.bool_(index < n)
        return out


def _apply(ds: grain.MapDataset, transforms: Sequence[Any], seed: int | None) -> grain.MapDataset:
    """Applies `transforms` in order; each random one gets its own derived seed."""
    for k, transform in enumerate(transforms):
        if isinstance(transform, grain.transforms.RandomMap):
            if seed is None:
                raise ValueError(f"evaluation transforms must be deterministic, got {transform}")
            ds = ds.random_map(transform, seed=derived_seed(seed, 1 + k))
        else:
            ds = ds.map(transform)
    return ds


def _check_processes(batch_size: int, process_index: int, process_count: int) -> int:
    """The per-process batch size; ValueError if the batch does not split over the processes."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    if batch_size <= 0 or batch_size % process_count:
        raise ValueError(f"batch size {batch_size} is not divisible by {process_count} processes")
    return batch_size // process_count


def _to_iter(ds: grain.MapDataset, worker_count: int, read_threads: int) -> grain.IterDataset:
    """Threaded (and with `worker_count` > 0, multi-process) prefetching of whole batches."""
    options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=2 * read_threads)
    it = ds.to_iter_dataset(options)
    if worker_count > 0:
        # grain 0.2.18's mp_prefetch reads an absl flag, which raises in programs that never
        # parse flags (pytest, plain scripts): google/grain#1355, fixed upstream by #1361.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return it


def steps_per_epoch(num_records: int, global_batch_size: int) -> int:
    """Number of training steps in one epoch (the remainder is dropped)."""
    return num_records // global_batch_size


def make_train_loader(
    source: Source,
    *,
    global_batch_size: int,
    seed: int,
    transforms: Sequence[Any],
    process_index: int = 0,
    process_count: int = 1,
    num_epochs: int | None = None,
    subset: int | None = None,
    worker_count: int = 0,
    read_threads: int = READ_THREADS,
) -> grain.IterDataset:
    """Shuffled, augmented training batches: this process's part of every global batch.

    Every epoch is a fresh permutation determined by `seed` alone, cut to whole global batches.
    `iter(loader)` gives a grain `DatasetIterator` whose `get_state()`/`set_state()` (or
    `grain.checkpoint.CheckpointSave`/`CheckpointRestore` with orbax) resume exactly.

    Args:
      source: random-access source of {'image', 'label'} records.
      global_batch_size: examples per step over all processes.
      seed: shuffling and augmentation seed (non-negative int).
      transforms: grain `Map`/`RandomMap` transforms, in order (e.g. `cifar_train_transforms()`).
      process_index: this process (`jax.process_index()`).
      process_count: number of processes (`jax.process_count()`).
      num_epochs: epochs to yield; None repeats forever.
      subset: train on a fixed class-balanced subset of this many records (`balanced_subset`).
      worker_count: grain worker processes (0: decode in this process, with threads).
      read_threads: threads per process that assemble batches ahead of time.

    Returns:
      A `grain.IterDataset` of {'image': (B, H, W, C) float32, 'label': (B,) int32} with
      B = global_batch_size // process_count.
    """
    local_batch = _check_processes(global_batch_size, process_index, process_count)
    if subset is not None:
        source = balanced_subset(source, subset)
    per_epoch = steps_per_epoch(len(source), global_batch_size) * global_batch_size
    if per_epoch == 0:
        raise ValueError(f"{len(source)} records do not fill one batch of {global_batch_size}")
    order = _EpochOrder(len(source), per_epoch, derived_seed(seed, 0))
    ds = grain.MapDataset.range(per_epoch).repeat(num_epochs).map_with_index(order)
    ds = _apply(ds.map(_ReadRecord(source)), transforms, seed)
    ds = ds.batch(local_batch, drop_remainder=True)[process_index::process_count]
    return _to_iter(ds, worker_count, read_threads)


def num_eval_batches(num_records: int, batch_size: int) -> int:
    """Number of (global) evaluation batches, the last one padded."""
    return math.ceil(num_records / batch_size)


def make_eval_loader(
    source: Source,
    *,
    batch_size: int,
    transforms: Sequence[Any],
    process_index: int = 0,
    process_count: int = 1,
    worker_count: int = 0,
    read_threads: int = READ_THREADS,
) -> grain.IterDataset:
    """Every example exactly once, in source order, as this process's part of global batches.

    The last global batch is padded to full size with copies of the last record; the boolean
    `mask` field is False exactly on the padding, so `sum(mask)` over all processes and batches
    is `len(source)`. Every process yields the same number of batches. Iterate it again for the
    next evaluation.

    Args:
      source: random-access source of {'image', 'label'} records.
      batch_size: global batch size (divisible by `process_count`).
      transforms: deterministic grain `Map` transforms (e.g. `cifar_eval_transforms()`).
      process_index: this process (`jax.process_index()`).
      process_count: number of processes (`jax.process_count()`).
      worker_count: grain worker processes (0: decode in this process, with threads).
      read_threads: threads per process that assemble batches ahead of time.

    Returns:
      A `grain.IterDataset` of {'image': float32 NHWC, 'label': int32, 'mask': bool}, each with
      leading dimension batch_size // process_count.
    """
    local_batch = _check_processes(batch_size, process_index, process_count)
    total = num_eval_batches(len(source), batch_size) * batch_size
    ds = grain.MapDataset.range(total).map(_ReadRecord(source, with_mask=True))
    ds = _apply(ds, transforms, seed=None)
    ds = ds.batch(local_batch)[process_index::process_count]
    return _to_iter(ds, worker_count, read_threads)
