"""config.method -> its Method: the one list of the methods."""

from simsiam_jax.methods import base


def _methods() -> dict:
  # pylint: disable=g-import-not-at-top
  from simsiam_jax.methods import barlow_twins
  from simsiam_jax.methods import byol
  from simsiam_jax.methods import moco
  from simsiam_jax.methods import simclr
  from simsiam_jax.methods import simsiam
  from simsiam_jax.methods import swav
  from simsiam_jax.methods import vicreg
  return {m.name: m for m in (simsiam.METHOD, simclr.METHOD, moco.METHOD,
                              byol.METHOD, swav.METHOD, barlow_twins.METHOD,
                              vicreg.METHOD)}


def names() -> list[str]:
  return sorted(_methods())


def get(name: str) -> base.Method:
  """The method called `name` (config.method); KeyError if there is none."""
  return _methods()[name]


def extra_init(config):
  """The (params, rng) -> extra state of `config`'s method, or None.

  A config saved before methods existed is SimSiam's.
  """
  method = get(config.get('method', 'simsiam'))
  return None if method.init_extra is None else method.init_extra(config)
