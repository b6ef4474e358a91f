"""The one parser of the argument after a config file's colon: an experiment cell.

`--config=configs/FILE.py:cifar100,cutout,sam` gives FILE's get_config the string
"cifar100,cutout,sam"; `parse` splits it into named axes (after big_vision's
`parse_arg`), values in the axes' order or as `name=value`:

    cell = cells.parse(arg, dataset=("cifar10", "cifar100"), augmentation=("basic", "aa"),
                       optimizer=cells.OPTIMIZERS)
    cell.dataset, cell.augmentation, cell.optimizer

An axis given as a tuple of strings must be one of them; an axis given as a default
value is optional and converted to the default's type. Anything else is a one-line
UsageError naming every axis and its choices.
"""

from typing import Any

import ml_collections

from sam_jax.errors import UsageError

OPTIMIZERS = ("sam", "sgd")  # "sgd" is the same run with rho = 0


def parse(arg: str, **axes: Any) -> ml_collections.ConfigDict:
  """The cell `arg` as a ConfigDict of the named `axes` (see the module docstring)."""
  values = {name: None if isinstance(spec, tuple) else spec for name, spec in axes.items()}
  try:
    for position, part in enumerate(arg.split(",") if arg else []):
      name, is_named, value = part.partition("=")
      if not is_named:
        name, value = list(axes)[position], part
      spec = axes[name]
      if isinstance(spec, tuple) and value not in spec:
        raise ValueError(value)
      values[name] = value if isinstance(spec, tuple) else type(spec)(value)
  except (IndexError, KeyError, ValueError):
    values = {}
  if len(values) != len(axes) or None in values.values():
    raise UsageError(f"Unknown experiment cell '{arg}': give {_usage(axes)} after the config "
                     f"file's colon, with {_choices(axes)}.")
  return ml_collections.ConfigDict(values)


def _usage(axes: dict[str, Any]) -> str:
  required = [name.upper() for name, spec in axes.items() if isinstance(spec, tuple)]
  optional = [f"[,{name.upper()}]" for name, spec in axes.items() if not isinstance(spec, tuple)]
  return ",".join(required) + "".join(optional)


_KINDS = {int: "an integer", float: "a number", str: "a string"}


def _choices(axes: dict[str, Any]) -> str:
  parts = [
      f"{name.upper()} in {'|'.join(spec)}" if isinstance(spec, tuple) else
      f"{name.upper()} {_KINDS.get(type(spec), 'a value')} (default {spec})"
      for name, spec in axes.items()
  ]
  return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


def sam_rho(optimizer: str, rho: float) -> float:
  """SAM's rho for a cell's optimizer: `sgd` is the same run with rho = 0."""
  return rho if optimizer == "sam" else 0.0
