"""The house rules that keep the code small and its layers apart, checked on the source."""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import ROOT, finish, start_process

PACKAGE = pathlib.Path(ROOT) / "sam_jax"
MODULES = sorted(PACKAGE.rglob("*.py"))
# Where TensorFlow may be imported, directly or through data/tf_cpu.py: the input pipelines,
# the TF checkpoint reader, and the TensorBoard event files (TensorBoard's loader imports TF).
TENSORFLOW_HOMES = ("data/", "pretrained/readers.py", "events.py")
# The binaries: the only modules that define or read absl flags.
BINARIES = ("train.py", "__main__.py", "data/benchmark.py")


def relative(path: pathlib.Path) -> str:
  return path.relative_to(PACKAGE).as_posix()


def code_lines(source: list[str], node: ast.AST) -> int:
  """Lines of `node` that hold code: no blank lines, comments or docstring."""
  skip = set()
  body = getattr(node, "body", [])
  if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
    skip = set(range(body[0].lineno, body[0].end_lineno + 1))
  return sum(1 for number in range(node.lineno, node.end_lineno + 1) if number not in skip
             and source[number - 1].strip() and not source[number - 1].strip().startswith("#"))


def imported_modules(tree: ast.AST) -> set[str]:
  """Every module a file imports, `from a import b` counting as a.b."""
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.update(f"{node.module}.{alias.name}" for alias in node.names)
  return names


@pytest.mark.parametrize("path", MODULES, ids=relative)
def test_modules_are_small_and_keep_to_their_layer(path):
  text = path.read_text()
  source, tree = text.splitlines(), ast.parse(text)
  assert len(source) <= 300, f"{len(source)} lines"
  long = {
      node.name: code_lines(source, node)
      for node in ast.walk(tree)
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
  }
  assert not {name: n for name, n in long.items() if n > 60}, "functions over 60 lines of code"
  name = relative(path)
  tensorflow = {
      m for m in imported_modules(tree)
      if m.split(".")[0] in ("tensorflow",
                             "tensorflow_datasets") or m.startswith("sam_jax.data.tf_cpu")
  }
  assert not tensorflow or name.startswith(TENSORFLOW_HOMES), tensorflow
  if not name.endswith(BINARIES):  # a module that cannot see absl's flags cannot read them
    assert not {
        m for m in imported_modules(tree)
        if m.startswith(("absl.flags", "ml_collections.config_flags"))
    }


def variant_mentions(tree: ast.AST) -> list[str]:
  """Where a module names a SAM variant: a string equal to a registered name (outside
  `__all__`), a `family.X` attribute or an import of a variant from `sam_jax.family`."""
  from sam_jax import family  # pylint: disable=import-outside-toplevel
  from sam_jax.family import registry  # pylint: disable=import-outside-toplevel
  exported = {
      id(element) for node in ast.walk(tree) if isinstance(node, ast.Assign) and any(
          isinstance(t, ast.Name) and t.id == "__all__"
          for t in node.targets)
      for element in ast.walk(node.value)
  }
  found = []
  for node in ast.walk(tree):
    if (isinstance(node, ast.Constant) and node.value in registry.VARIANTS
        and id(node) not in exported):
      found.append(f"line {node.lineno}: '{node.value}'")
    elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id == "family" and node.attr in family.__all__):
      found.append(f"line {node.lineno}: family.{node.attr}")
    elif (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sam_jax.family")
          and any(alias.name != "registry" for alias in node.names)):
      found.append(f"line {node.lineno}: from {node.module} import ...")
  return found


@pytest.mark.parametrize("path", [p for p in MODULES if not relative(p).startswith("family/")],
                         ids=relative)
def test_no_module_outside_the_family_names_a_variant(path):
  """Validation, the optimizer, the loop, evaluation and the analyses read a variant's
  registry entry (`family/registry.py`), never its name."""
  assert not variant_mentions(ast.parse(path.read_text())), relative(path)


def module_name(path: pathlib.Path) -> str:
  parts = ("sam_jax", *path.relative_to(PACKAGE).with_suffix("").parts)
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_modules_import_each_other_without_a_cycle():
  names = {module_name(path) for path in MODULES}
  graph = {
      module_name(path): {m for m in imported_modules(ast.parse(path.read_text())) if m in names}
      for path in MODULES
  }
  state = {}  # 1: on the current path, 2: done

  def visit(node, path):
    state[node] = 1
    for child in sorted(graph[node]):
      assert state.get(child) != 1, " -> ".join([*path, child])  # a cycle
      if child not in state:
        visit(child, [*path, child])
    state[node] = 2

  for node in sorted(graph):
    if node not in state:
      visit(node, [node])


def test_the_loop_and_evaluation_take_the_run_not_the_config():
  """The config is read by `run_setup.set_up` (and written by `train_and_evaluate`);
  nothing in `loop.train` or in evaluation sees it."""
  for name, allowed in (("loop.py", {"train_and_evaluate",
                                     "record_start"}), ("evaluation.py", set())):
    tree = ast.parse((PACKAGE / name).read_text())
    for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
      if function.name in allowed:
        continue
      names = {n.id for n in ast.walk(function) if isinstance(n, ast.Name)}
      names |= {a.arg for a in ast.walk(function) if isinstance(a, ast.arg)}
      assert "config" not in names, f"{name}: {function.name}"


@pytest.mark.slow
def test_the_core_imports_neither_tensorflow_nor_the_training_extras():
  core = ("sam_jax, sam_jax.sam, sam_jax.family, sam_jax.replicas, sam_jax.steps, sam_jax.optim, "
          "sam_jax.models")
  heavy = ("tensorflow", "tensorflow_datasets", "ml_collections", "orbax", "clu")
  done = finish(
      start_process([
          sys.executable, "-c", f"import sys, {core}; print(sorted(m for m "
          f"in {heavy} if m in sys.modules))"
      ]), timeout=120)
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_importing_the_library_changes_no_process_setting():
  """Every library module of sam_jax (not the binaries) leaves the environment (XLA_FLAGS
  included), logging, JAX's config and matplotlib's backend as the libraries it builds on
  left them."""
  code = """
import importlib, importlib.util, logging, os, pkgutil
import absl.logging, clu.metric_writers, flax.linen, jax, matplotlib, optax, orbax.checkpoint
import tensorflow, tensorflow_datasets

def settings():
  return (dict(os.environ), logging.root.level, list(logging.root.handlers),
          absl.logging.get_verbosity(), dict(jax.config.values),
          matplotlib.get_backend(auto_select=False))

before = settings()
binaries = ("sam_jax.train", "sam_jax.analysis.__main__", "sam_jax.pretrained.__main__",
            "sam_jax.data.benchmark")
path = importlib.util.find_spec("sam_jax").submodule_search_locations
for module in pkgutil.walk_packages(path, "sam_jax."):
  if module.name not in binaries:
    importlib.import_module(module.name)
after = settings()
names = ("environ", "level", "handlers", "absl", "jax", "matplotlib")
print([name for name, a, b in zip(names, before, after) if a != b], os.environ.get("XLA_FLAGS"))
"""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # as a user's process
  done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=180, check=False)
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip().splitlines()[-1] == "[] None"
