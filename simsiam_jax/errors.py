"""Errors a user fixes by changing the command: one line and exit code 2 in main.py."""


class ConfigError(ValueError):
  """The config asks for something that cannot run; the message names the fix."""
