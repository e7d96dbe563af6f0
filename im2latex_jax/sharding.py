"""The device mesh and how arrays are laid out on it.

Data parallelism with `jax.jit` over a `Mesh` (the successor of `pmap`): the
batch is split over the 'data' axis, parameters and optimizer state are
replicated, and XLA inserts the gradient all-reduce. Multi-host runs build
global arrays from each host's local batch.
"""

from __future__ import annotations

import os

from absl import logging
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np


def maybe_initialize_distributed(flag: bool | None = None) -> None:
  """`jax.distributed.initialize()` when asked by flag or environment.

  Environment: IM2LATEX_DISTRIBUTED=1 (then JAX reads its cluster env, e.g.
  on TPU VMs / SLURM), or JAX_COORDINATOR_ADDRESS + JAX_NUM_PROCESSES +
  JAX_PROCESS_ID for plain hosts.
  """
  env = os.environ
  wanted = flag or env.get("IM2LATEX_DISTRIBUTED") == "1" or "JAX_COORDINATOR_ADDRESS" in env
  if not wanted or jax.distributed.is_initialized():
    return
  # CPU collectives across processes need gloo (seen working here). Set it
  # unconditionally (it only affects the CPU backend): asking
  # jax.default_backend() here would start the backend before initialize().
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if "JAX_COORDINATOR_ADDRESS" in env:
    kwargs = dict(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                  num_processes=int(env["JAX_NUM_PROCESSES"]),
                  process_id=int(env["JAX_PROCESS_ID"]))
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed: process %d of %d, %d global devices.",
               jax.process_index(), jax.process_count(), jax.device_count())


def make_mesh() -> Mesh:
  return Mesh(np.array(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "config.input.batch_size") -> None:
  n = mesh.devices.size
  if batch_size % n or batch_size % jax.process_count():
    lo = max(n, batch_size // n * n)
    raise ValueError(
        f"{what}={batch_size} is not divisible by the {n} devices of the mesh; "
        f"set it to a multiple of {n} (e.g. {lo} or {lo + n}).")


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This host's numpy batch -> global arrays split over 'data'."""
  sharding = data_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in batch.items() if v.dtype.kind not in "OSU"}
