"""Data parallelism: the device mesh, multi-host start-up, and placing batches and state on it.

One jitted step runs over a 1-D mesh named 'data': the batch is sharded along it, parameters and
optimizer state are replicated. XLA then computes BatchNorm statistics and the adaptive
learning-rate norm over the global batch, with no `axis_name` and no per-device code. Each
process feeds only its own rows of the global batch.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"

# Environment variables read when the command line leaves the multi-host settings empty (SLURM
# and TPU pods are detected by jax.distributed.initialize() itself).
COORDINATOR_ENV = "ADDERNET_COORDINATOR"
NUM_PROCESSES_ENV = "ADDERNET_NUM_PROCESSES"
PROCESS_ID_ENV = "ADDERNET_PROCESS_ID"


def initialize_distributed(coordinator: str = "", num_processes: int = 0,
                           process_id: int = -1) -> None:
    """Starts multi-host JAX when asked to, from arguments or $ADDERNET_COORDINATOR etc.

    With no coordinator (argument or environment) this is a single-process run, unless the
    cluster is one that `jax.distributed.initialize()` detects by itself ($ADDERNET_AUTO_DISTRIBUTED
    set to 1: SLURM, TPU pods, ...). On CPU the cross-process collectives use gloo.
    """
    coordinator = coordinator or os.environ.get(COORDINATOR_ENV, "")
    num_processes = num_processes or int(os.environ.get(NUM_PROCESSES_ENV, "0"))
    process_id = process_id if process_id >= 0 else int(os.environ.get(PROCESS_ID_ENV, "-1"))
    if not coordinator and os.environ.get("ADDERNET_AUTO_DISTRIBUTED") != "1":
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
    else:
        jax.distributed.initialize()


def create_mesh() -> Mesh:
    """A 1-D mesh over every device of every process, axis 'data'."""
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, name: str = "batch_size") -> None:
    """ValueError naming the field when the batch does not split over devices and processes."""
    devices, processes = jax.device_count(), jax.process_count()
    if batch_size <= 0 or batch_size % devices or batch_size % processes:
        raise ValueError(f"config.{name} = {batch_size} must be a positive multiple of the "
                         f"{devices} devices ({processes} processes)")


def device_multiple(batch_size: int) -> int:
    """`batch_size` rounded up to a multiple of the device count (and of the processes).

    Evaluation uses it so that any batch size works: the extra rows are masked padding.
    """
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    step = np.lcm(jax.device_count(), jax.process_count())
    return int(-(-batch_size // step) * step)


def global_batch(mesh: Mesh, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's rows of a batch -> global arrays sharded along 'data'."""
    sharding = batch_sharding(mesh)
    return {key: jax.make_array_from_process_local_data(sharding, value)
            for key, value in local_batch.items()}


def replicate(mesh: Mesh, tree):
    """Places a pytree of arrays on every device of the mesh (identical on every process);
    arrays already placed that way are passed through."""
    sharding = replicated(mesh)

    def place(x):
        if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
            return x
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(place, tree)
