"""Config files (`configs/NAME.py[:ARGUMENT]`): loaded into a ConfigDict, and described.

A config file defines `get_config()`, or `get_config(argument)` for the text after the
colon, and may import its siblings as `configs.NAME`. It is loaded with importlib's
`spec_from_file_location` and `exec_module` (ml_collections' own loader uses the
deprecated `load_module`). The fields' help is the comment beside or above each field in
`configs/default.py`, the one schema every config builds on.
"""

import importlib.util
import io
import os
import re
import sys
import tokenize

import ml_collections

from sam_jax.errors import UsageError

FIELD = re.compile(r"^\s*config\.([\w.]+)\s*=")


def load(spec: str) -> ml_collections.ConfigDict:
  """The ConfigDict of `path.py` or `path.py:ARGUMENT`.

  Raises:
    UsageError: for a file that is not there, not Python or without get_config, an
      argument the file refuses (its own message), or a get_config() that returns
      something else than a ConfigDict.
  """
  path, _, argument = spec.partition(":")
  if not os.path.isfile(path):
    raise UsageError(f"No config file at {path}: give --config=configs/NAME.py (ls configs/).")
  # `from configs import default` inside the file: its folder's parent goes first on the path.
  parent = os.path.dirname(os.path.dirname(os.path.abspath(path)))
  if parent not in sys.path:
    sys.path.insert(0, parent)
  name = os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(f"config_file_{name}", path)
  if module_spec is None or module_spec.loader is None:  # a suffix Python cannot import
    raise UsageError(f"{path} is not a Python file: give --config=configs/NAME.py.")
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise UsageError(f"{path} defines no get_config(): is it a config file?")
  try:
    config = module.get_config(argument) if argument else module.get_config()
  except (ValueError, TypeError) as e:
    message = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    raise UsageError(f"{spec}: {message}") from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise UsageError(f"{path}'s get_config() returned a {type(config).__name__}, not an "
                     "ml_collections.ConfigDict: build it on configs/default.py "
                     "(`config = default.get_config()`, then set its fields).")
  return config


def field_help(schema_path: str) -> dict[str, str]:
  """{field: its comment} from a config file's `config.FIELD = ...` lines: the comment on
  the line, else the comment lines right above it (headings, `# == Name ==`, excluded)."""
  with open(schema_path, encoding="utf-8") as f:
    source = f.read()
  lines = source.splitlines()
  comments = {
      token.start[0]: token.string.lstrip("#").strip()
      for token in tokenize.generate_tokens(io.StringIO(source).readline)
      if token.type == tokenize.COMMENT and "==" not in token.string
  }  # not headings
  helps = {}
  for number, line in enumerate(lines, start=1):
    if match := FIELD.match(line):
      above, row = [], number - 1
      while row in comments and lines[row - 1].lstrip().startswith("#"):
        above.insert(0, comments[row])
        row -= 1
      helps[match[1]] = comments.get(number) or " ".join(above)
  return helps


def fields(config: ml_collections.ConfigDict, prefix: str = ""):
  """(dotted name, type, value) of every leaf field, in the config's order."""
  for name in config.keys():
    value = config[name]
    if isinstance(value, ml_collections.ConfigDict):
      yield from fields(value, f"{prefix}{name}.")
    else:
      field_type = config.get_type(name)
      yield f"{prefix}{name}", getattr(field_type, "__name__", str(field_type)), value


def describe(config: ml_collections.ConfigDict, helps: dict[str, str]) -> str:
  """One paragraph per field: `--config.NAME (TYPE, default VALUE): help`."""
  return "\n\n".join(
      f"--config.{name} ({field_type}, default {value!r}){': ' if helps.get(name) else ''}"
      f"{helps.get(name, '')}" for name, field_type, value in fields(config))
