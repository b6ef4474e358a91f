"""The documentation's generated parts (docs/_ext): the config reference and the docstrings'
formulas. The site itself is built by scripts/docs.sh, which the full suite runs."""

import glob
import importlib
import inspect
import os
import re
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


def test_indented_blocks_become_literal_math_stays_tex_and_inline_markup_is_escaped():
  lines = [
      "SAM's perturbation, with T_w = |w| + eta:", "", "    eps = rho * g / ||g||", "",
      "Back in prose, `x|y` kept.", ":param rho: the radius |r|.", "", ".. math::", "",
      "    e = |g|^{q-1} / \\|g\\|_q", "", "After *it*."
  ]
  assert formula_blocks.literal_blocks(lines) == [
      "SAM's perturbation, with T_w = \\|w\\| + eta:", "", "::", "", "    eps = rho * g / ||g||",
      "", "Back in prose, `x|y` kept.", ":param rho: the radius \\|r\\|.", "", ".. math::", "",
      "    e = |g|^{q-1} / \\|g\\|_q", "", "After \\*it\\*."
  ]


def documented_docstrings():
  """(name, docstring) of every module the API pages document and of its public members."""
  pages = glob.glob(os.path.join(ROOT, "docs", "api", "*.md"))
  names = [m for page in pages for m in re.findall(r"automodule:: (\S+)", open(page).read())]
  assert "sam_jax.sam" in names and "sam_jax.family" in names
  for name in names:
    module = importlib.import_module(name)
    yield name, inspect.getdoc(module) or ""
    for member, obj in vars(module).items():
      if (not member.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
          and obj.__module__.startswith("sam_jax")):
        yield f"{name}.{member}", inspect.getdoc(obj) or ""


def literal_texts(docstring: str) -> list[str]:
  """The blocks of `docstring` that the API reference shows as literal text."""
  lines = formula_blocks.literal_blocks(docstring.splitlines())
  blocks = "\n".join(lines).split("\n::\n\n")[1:]
  return [re.split(r"\n(?=\S)", block)[0] for block in blocks]


def test_the_api_reference_shows_displayed_formulas_as_math_not_literal_text():
  formula = re.compile(r"\|\||\bsum_|\bgrad\b|\^T\b|\brho\b|\beps\b|<-")
  docstrings = dict(documented_docstrings())
  assert len(docstrings) > 100
  as_text = {
      name: block
      for name, doc in docstrings.items() for block in literal_texts(doc) if formula.search(block)
  }
  assert not as_text, f"write these formulas as `.. math::` (TeX): {as_text}"
  math = [name for name, doc in docstrings.items() if ".. math::" in doc]
  assert {"sam_jax.sam.sam", "sam_jax.family.gsam", "sam_jax.analysis.hessian.lanczos"} <= set(math)
