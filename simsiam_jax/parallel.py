"""Device mesh, shardings, host-to-device batches and distributed start-up.

One parallelism model: `jax.jit` over a 1-D ('data',) mesh; the train state
is replicated, the batch is sharded along its leading axis. Under jit, a
BatchNorm mean over a sharded batch is a global mean, so BN statistics are
synchronised across devices (SimSiam's SyncBN) without an axis name.
"""

import os

from absl import logging
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from simsiam_jax import errors

DATA_AXIS = 'data'


def create_mesh(devices=None) -> Mesh:
  """A 1-D mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split across the mesh."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """Validates the global batch against the topology; returns the per-process batch.

  Raises:
    ValueError: naming the numbers and the fix, before anything compiles.
  """
  num_devices = mesh.devices.size
  num_processes = jax.process_count()
  if global_batch_size <= 0 or global_batch_size % num_devices:
    raise errors.ConfigError(
        f'batch_size={global_batch_size} (global) is not divisible by the '
        f'{num_devices} devices of the mesh. Set --config.batch_size to a '
        f'multiple of {num_devices}, e.g. '
        f'{max(1, global_batch_size // num_devices) * num_devices}.')
  return global_batch_size // num_processes


def host_to_global(local_batch, mesh: Mesh):
  """Per-process numpy batch (a pytree) -> global jax.Arrays sharded on 'data'.

  Leaves that are already jax.Arrays (data resident on the devices) pass as
  they are.
  """
  sharding = data_sharded(mesh)
  return jax.tree.map(
      lambda x: x if isinstance(x, jax.Array) else
      jax.make_array_from_process_local_data(sharding, x), local_batch)


def to_host(tree):
  """Replicated (or fully addressable) jax.Arrays -> numpy arrays, on every process.

  With several processes a replicated array spans devices this process
  cannot address; any local copy holds the value.
  """
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(x.addressable_data(0))
    return np.asarray(x)
  return jax.tree.map(one, tree)


def step_of(state) -> int:
  """The train state's step as a Python int, on every process."""
  return int(to_host(state.step))


def _cluster_detected() -> str:
  """The multi-host environment JAX can configure itself from, or ''."""
  env = os.environ
  if env.get('SIMSIAM_DISTRIBUTED') == '1':
    return 'SIMSIAM_DISTRIBUTED=1'
  if int(env.get('SLURM_NTASKS', '1') or 1) > 1 and 'SLURM_JOB_ID' in env:
    return f'SLURM job {env["SLURM_JOB_ID"]}, {env["SLURM_NTASKS"]} tasks'
  if ',' in env.get('TPU_WORKER_HOSTNAMES', ''):  # a multi-host TPU slice
    return 'Cloud TPU pod slice'
  return ''


def barrier(name: str, timeout_s: float = 3600.0):
  """Every process waits here for the others (a no-op with one process).

  The coordination service's barrier, not a device collective: CPU
  collectives (gloo) give up on a process that arrives 30 s after another,
  which compiling on loaded hosts can exceed. `name` must be new each time.
  """
  if jax.process_count() == 1:
    return
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  client = distributed.global_state.client
  if client is None or not hasattr(client, 'wait_at_barrier'):
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)
    return
  client.wait_at_barrier(name, int(timeout_s * 1000))


def initialize_distributed(coordinator_address: str = '',
                           num_processes: int = 0, process_id: int = -1):
  """Starts multi-process JAX when needed; a single process needs nothing.

  Explicit arguments win; then JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
  JAX_PROCESS_ID; then a detected cluster (SLURM with several tasks, a
  multi-host Cloud TPU slice, or SIMSIAM_DISTRIBUTED=1), where
  `jax.distributed.initialize()` finds everything itself.
  """
  coordinator_address = coordinator_address or os.environ.get(
      'JAX_COORDINATOR_ADDRESS', '')
  num_processes = num_processes or int(os.environ.get('JAX_NUM_PROCESSES', 0))
  if process_id < 0:
    process_id = int(os.environ.get('JAX_PROCESS_ID', -1))
  if coordinator_address and num_processes > 1:
    if process_id < 0:
      raise ValueError('--coordinator_address and --num_processes need '
                       '--process_id (or JAX_PROCESS_ID) too.')
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif cluster := _cluster_detected():
    logging.info('Multi-process start-up: %s.', cluster)
    jax.distributed.initialize()
  logging.info('JAX process %d/%d; %d local devices, %d global devices (%s).',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)
