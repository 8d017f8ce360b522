"""The train state: what it holds, how it is made, and how it is found again.

One set of functions for every mode. An initialiser is a pure function
(rng, ...) -> TrainState; `create` runs it straight into the replicated
layout on the mesh, `abstract` gives its shapes and shardings without
allocating, and `restore_or_create` restores the latest checkpoint into
that layout or creates the state.
"""

from typing import Any

from absl import logging
from flax.training import train_state
import jax
import jax.numpy as jnp
import optax

from simsiam_jax import checkpointing
from simsiam_jax import parallel


class TrainState(train_state.TrainState):
  """Params, optimiser state and step, plus BatchNorm running statistics.

  `extra`: what a method keeps beside the network (methods/: a momentum
  target, a queue); {} for SimSiam, whose checkpoints then hold exactly
  what they always did.
  """
  batch_stats: Any
  extra: Any = None


def simsiam_initializer(model, tx: optax.GradientTransformation,
                        image_shape: tuple[int, int, int], extra_init=None):
  """rng -> the initial TrainState (pure, for jit and eval_shape).

  `extra_init`: (params, rng) -> the method's extra state (base.Method);
  None: none.
  """
  def init(rng):
    x = jnp.zeros((2, *image_shape), jnp.float32)
    variables = model.init(rng, x, x, train=True)
    extra = ({} if extra_init is None else
             extra_init(variables['params'], jax.random.fold_in(rng, 1)))
    return TrainState.create(apply_fn=model.apply, params=variables['params'],
                             batch_stats=variables['batch_stats'], tx=tx,
                             extra=extra)
  return init


def create(init, mesh: jax.sharding.Mesh, *args):
  """`init(*args)` run directly into the replicated layout on the mesh.

  Jitted, with the non-partitionable threefry: on CPU the partitionable one
  compiles the per-parameter random draws about 4x slower (9 s vs 2 s for
  the tiny model) and buys nothing when the result is replicated.
  """
  with jax.threefry_partitionable(False):
    return jax.jit(init, out_shardings=parallel.replicated(mesh))(*args)


def abstract(init, mesh: jax.sharding.Mesh, *args):
  """Shapes, dtypes and (replicated) shardings of `init(*args)`; nothing allocated."""
  sharding = parallel.replicated(mesh)
  return jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
      jax.eval_shape(init, *args))


def restore_or_create(checkpointer: checkpointing.Checkpointer, init, mesh,
                      *args):
  """The latest checkpoint restored straight into the sharded layout, else `create`."""
  state = checkpointer.restore(abstract(init, mesh, *args))
  if state is None:
    logging.info('No checkpoint in %s: starting from step 0.',
                 checkpointer.directory)
    return create(init, mesh, *args)
  logging.info('Resumed from the checkpoint at step %d in %s.',
               parallel.step_of(state), checkpointer.directory)
  return state
