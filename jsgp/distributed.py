"""Data parallelism over the devices of one or several hosts, with JAX's own machinery.

Everything here is a thin layer over ``jax.sharding``: a one-axis :class:`~jax.sharding.Mesh`
named ``"data"``, ``NamedSharding(mesh, P("data"))`` for arrays whose leading axis is a batch,
``NamedSharding(mesh, P())`` for replicated ones (network parameters, optimiser state, the
training set). ``jit`` and the SPMD partitioner insert every collective (the gradient all-reduce,
the batch-norm statistics, the ``while_loop`` predicate of a batched solve); there is no
hand-written communication.

Every helper takes ``mesh=None`` for the single-device case and then changes nothing, so callers
(the batched solver runner, the training steps) have one code path with or without a mesh.

Multi-host: every host runs the same program; call :func:`initialize_multihost` first, then
:func:`make_mesh` sees the devices of all hosts (``jax.devices()`` is global).
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(num_devices: Optional[int] = None) -> Mesh:
  """A one-axis mesh ``("data",)`` over the first ``num_devices`` visible devices.

  ``None`` or ``0``: every visible device (of every host, after :func:`initialize_multihost`).
  """
  devices = jax.devices()
  if num_devices is None or num_devices == 0:
    num_devices = len(devices)
  if num_devices < 0:
    raise ValueError(f"num_devices must be >= 0 (0: all devices), got {num_devices}")
  if num_devices > len(devices):
    raise ValueError(f"asked for {num_devices} devices but only {len(devices)} "
                     f"{'is' if len(devices) == 1 else 'are'} visible "
                     f"({devices[0].platform}: {', '.join(str(d) for d in devices)})")
  if jax.process_count() > 1 and num_devices != len(devices):
    raise ValueError(f"with {jax.process_count()} processes the mesh must span every device "
                     f"({len(devices)}); use num_devices=0")
  return Mesh(np.asarray(devices[:num_devices]), (DATA_AXIS,))


def initialize_multihost(coordinator_address: Optional[str], num_processes: Optional[int],
                         process_id: Optional[int]) -> None:
  """``jax.distributed.initialize`` for a multi-host run; a no-op for one process.

  Must be called before anything touches a device. Every host runs the same command with its
  own ``process_id`` (0 .. num_processes - 1); ``coordinator_address`` (``host:port``) is where
  process 0 listens.
  """
  if num_processes is None or num_processes <= 1:
    return
  if not coordinator_address:
    raise ValueError(f"num_processes={num_processes} needs a coordinator_address (host:port "
                     "of process 0)")
  if process_id is None or not 0 <= process_id < num_processes:
    raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def check_batch_divisible(batch_size: int, mesh: Optional[Mesh]) -> None:
  """A batch sharded along ``"data"`` must split evenly: raise a clear ValueError if not."""
  if mesh is None:
    return
  n = mesh.shape[DATA_AXIS]
  if batch_size % n:
    raise ValueError(f"batch size {batch_size} does not divide evenly across {n} devices; "
                     f"choose a multiple of {n} (or another number of devices)")


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over ``"data"``, other axes whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def constrain_batch(tree, mesh: Optional[Mesh]):
  """Inside ``jit``: every leaf's leading axis sharded over ``"data"`` (no mesh: ``tree``)."""
  if mesh is None:
    return tree
  sharding = batch_sharding(mesh)
  return jax.tree_util.tree_map(lambda a: jax.lax.with_sharding_constraint(a, sharding), tree)


def _put(leaf, sharding: NamedSharding):
  if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
    return leaf
  if jax.process_count() == 1:
    return jax.device_put(leaf, sharding)
  # Several hosts: every process holds the same (host-local) value; build the global array.
  value = np.asarray(leaf)
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def replicate(tree, mesh: Optional[Mesh]):
  """Place every array leaf of ``tree`` on every device of ``mesh`` (no-op if already there, or
  without a mesh)."""
  if mesh is None:
    return tree
  sharding = replicated_sharding(mesh)
  return jax.tree_util.tree_map(lambda a: _put(a, sharding), tree)


def shard_batch(tree, mesh: Optional[Mesh]):
  """Split every leaf of ``tree`` along its leading axis over ``"data"`` (no mesh: ``tree``)."""
  if mesh is None:
    return tree
  sharding = batch_sharding(mesh)
  return jax.tree_util.tree_map(lambda a: _put(a, sharding), tree)


def jit_replicated(fn: Callable, mesh: Optional[Mesh]) -> Callable:
  """``jax.jit(fn)``, with every output replicated over ``mesh`` when there is one (a training
  step whose parameters, statistics and loss every device keeps)."""
  if mesh is None:
    return jax.jit(fn)
  return jax.jit(fn, out_shardings=replicated_sharding(mesh))
