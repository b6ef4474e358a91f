"""The NNX notebook (docs/notebooks/own_loop_nnx.md) as a test: its code cells run here, in
one namespace, and what they leave is checked against a float64 numpy oracle of a SAM step.

The docs build executes every notebook too; this runs the NNX one with the tests, so that a
change to sam_jax or Flax that breaks it fails before the docs are built.
"""

import os
import re

import jax
import numpy as np
import pytest

from conftest import ROOT, max_abs_diff

NOTEBOOK = os.path.join(ROOT, "docs", "notebooks", "own_loop_nnx.md")
CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def code_cells(path: str) -> list[str]:
  """The sources of a MyST-NB text notebook's ```{code-cell}``` blocks, in order."""
  with open(path, encoding="utf-8") as f:
    return CODE_CELL.findall(f.read())


@pytest.fixture(scope="module")
def notebook():
  """The namespace the NNX notebook's cells leave (its own asserts ran in them)."""
  cells = code_cells(NOTEBOOK)
  assert len(cells) >= 5, f"{NOTEBOOK}: {len(cells)} code cells found"
  namespace = {"__name__": "own_loop_nnx"}
  for i, source in enumerate(cells):
    exec(compile(source, f"{NOTEBOOK}:cell {i}", "exec"), namespace)  # pylint: disable=exec-used
  return namespace


def sam_sgd_step_float64(w, x, y, rho, lr):
  """w - lr grad L(w + rho g/||g||) for the notebook's MLP (three Dense layers, ReLU, mean
  softmax cross-entropy), with backpropagation written out in float64."""
  def grad(w):
    a1 = x @ w["hidden1"]["kernel"] + w["hidden1"]["bias"]
    h1 = np.maximum(a1, 0)
    a2 = h1 @ w["hidden2"]["kernel"] + w["hidden2"]["bias"]
    h2 = np.maximum(a2, 0)
    logits = h2 @ w["out"]["kernel"] + w["out"]["bias"]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    d_logits = (p - np.eye(10)[y]) / len(y)
    d_a2 = (d_logits @ w["out"]["kernel"].T) * (a2 > 0)
    d_a1 = (d_a2 @ w["hidden2"]["kernel"].T) * (a1 > 0)
    layer = lambda inputs, d: {"kernel": inputs.T @ d, "bias": d.sum(0)}
    return {"hidden1": layer(x, d_a1), "hidden2": layer(h1, d_a2), "out": layer(h2, d_logits)}

  g = grad(w)  # jax.tree.map only walks the nested dicts: numpy computes, in float64
  norm = np.sqrt(sum(np.sum(leaf ** 2) for leaf in jax.tree.leaves(g)))
  g_sam = grad(jax.tree.map(lambda w, g: w + rho * g / norm, w, g))
  return jax.tree.map(lambda w, g: w - lr * g, w, g_sam)


def test_nnx_notebook_trains_sam_and_its_step_matches_a_float64_oracle(notebook):
  nb = notebook
  nnx = nb["nnx"]

  # Trained with SAM, well above chance (10%), and not the SGD run it is compared with.
  assert nb["sam_accuracy"] > 0.93, nb["sam_accuracy"]
  params = {
      name: nnx.to_pure_dict(nnx.state(model, nnx.Param)) for name, model in nb["models"].items()
  }
  assert max_abs_diff(params["SAM"], params["SGD"]) > 1e-3
  # nnx.Optimizer with grad_fn and the functional split/merge step end at the same weights.
  assert nb["ways_difference"] < 1e-5

  # One step of the notebook's train_step, at another rho and batch than its own check,
  # against the float64 oracle.
  rho, lr = 0.1, nb["LR"]
  x, y = nb["x_train"][100:164], nb["y_train"][100:164]
  model, optimizer = nb["make_optimizer"](rho, seed=1)
  w = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  w64 = jax.tree.map(lambda a: np.asarray(a, np.float64), w)
  expected = sam_sgd_step_float64(w64, np.asarray(x, np.float64), y, rho, lr)
  nb["train_step"](model, optimizer, x, y)
  got = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  assert max_abs_diff(got, expected) < 1e-6
  # ... which a plain SGD step would miss: the check can tell SAM from SGD.
  sgd = sam_sgd_step_float64(w64, np.asarray(x, np.float64), y, 0.0, lr)
  assert max_abs_diff(got, sgd) > 1e-4
