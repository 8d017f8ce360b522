"""The data package's errors, in a leaf module every data module may import."""

from simsiam_jax import errors


class DatasetNotReady(RuntimeError):
  """A dataset is neither prepared nor obtainable without a long download."""


class ResidentDataError(RuntimeError):
  """The data set cannot be loaded into device memory as configured."""


class DataConfigError(errors.ConfigError):
  """`config.data` asks for something the data sources cannot do."""
