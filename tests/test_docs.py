"""The documentation's generated parts (docs/_ext): the config reference and the docstrings'
formulas. The site itself is built by scripts/docs.sh, which the full suite runs."""

import os
import sys

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "docs", "_ext"))

import config_reference  # noqa: E402  (docs/_ext, a Sphinx extension)
import formula_blocks  # noqa: E402
from configs import default  # noqa: E402
from sam_jax import config_files  # noqa: E402


def test_the_config_reference_has_every_field_with_the_help_of_helpfull():
  page = config_reference.page(default.__file__)
  helps = config_files.field_help(default.__file__)
  rows = [line for line in page.splitlines() if line.startswith("| `")]
  names = {name for name, _, _ in config_files.fields(default.get_config())}
  listed = [row.split("`")[1] for row in rows]
  assert listed == [name for name in helps if name in names]  # in the schema's order
  assert set(listed) == names
  sam_rho = next(row for row in rows if row.startswith("| `sam.rho` |"))
  assert f"| float | `0.05` | {helps['sam.rho']} |" in sam_rho
  assert "## SAM (sam_jax/sam.py)" in page  # the schema's own sections


def test_formula_blocks_become_literal_and_inline_markup_is_escaped():
  lines = [
      "SAM's perturbation, with T_w = |w| + eta:", "", "    eps = rho * g / ||g||", "",
      "Back in prose, `x|y` kept.", ":param rho: the radius |r|."
  ]
  assert formula_blocks.literal_blocks(lines) == [
      "SAM's perturbation, with T_w = \\|w\\| + eta:", "", "::", "", "    eps = rho * g / ||g||",
      "", "Back in prose, `x|y` kept.", ":param rho: the radius \\|r\\|."
  ]
