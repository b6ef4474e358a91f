"""The release as others get it: one version everywhere, the licence, and the wheel installed
into a fresh environment, first with only the core dependencies, then with [train]."""

import inspect
import os
import pathlib
import re
import subprocess
import sys
import sysconfig
import tomllib

import pytest
import yaml

import sam_jax
from conftest import ROOT
from sam_jax import train

ROOT_PATH = pathlib.Path(ROOT)
PYPROJECT = tomllib.loads((ROOT_PATH / "pyproject.toml").read_text())


def readme_snippet(heading: str) -> str:
  """The first python block after `heading` in the README."""
  readme = (ROOT_PATH / "README.md").read_text()
  return re.search(r"```python\n(.*?)```", readme[readme.index(heading):], re.S).group(1)


def test_the_version_is_written_once_and_repeated_faithfully():
  version = PYPROJECT["project"]["version"]
  citation = yaml.safe_load((ROOT_PATH / "CITATION.cff").read_text())
  changelog = (ROOT_PATH / "CHANGELOG.md").read_text()
  newest = re.search(r"^## (\d[^ ]*) \(", changelog, re.M).group(1)
  readme = (ROOT_PATH / "README.md").read_text()
  assert sam_jax.__version__ == version  # read from the installed metadata
  assert citation["version"] == newest == version
  assert f"version = {{{version}}}" in readme  # the codebase's BibTeX entry
  assert train.version_line().startswith(f"sam-jax {version} (jax ")


def test_the_readme_states_sams_signature_as_it_is():
  readme = (ROOT_PATH / "README.md").read_text()
  stated = re.search(r"`sam_jax\.sam\((rho.*?)\)`:", readme, re.S).group(1)
  stated = [part for part in " ".join(stated.split()).split(", ") if part != "*"]
  actual = [
      name if p.default is p.empty else f"{name}={getattr(p.default, '__name__', repr(p.default))}"
      for name, p in inspect.signature(sam_jax.sam).parameters.items()
  ]
  assert stated == actual


def test_the_licence_is_apache_2_everywhere_it_is_named():
  licence = (ROOT_PATH / "LICENSE").read_text()
  assert "Apache License" in licence and "Version 2.0, January 2004" in licence
  assert "END OF TERMS AND CONDITIONS" in licence  # the whole text, not a pointer to it
  citation = yaml.safe_load((ROOT_PATH / "CITATION.cff").read_text())
  assert PYPROJECT["project"]["license"] == citation["license"] == "Apache-2.0"


def test_every_package_of_the_library_goes_into_the_wheel():
  found = {
      ".".join(path.parent.relative_to(ROOT_PATH).parts)
      for path in (ROOT_PATH / "sam_jax").rglob("__init__.py")
  }
  listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
  assert listed == found | {"sam_jax.experiments.configs"}


def run(command: list[str], cwd: pathlib.Path, status: int = 0) -> str:
  """`command`'s stdout, checking its exit status; its output in the message if not."""
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
  done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
  assert done.returncode == status, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
  return done.stdout


@pytest.mark.slow
def test_the_wheel_installs_and_runs_in_a_fresh_environment(tmp_path):
  pip = ["-m", "pip", "--disable-pip-version-check", "--quiet"]
  run([sys.executable, *pip, "wheel", "--no-deps", "-w", str(tmp_path), ROOT], tmp_path)
  (wheel,) = tmp_path.glob("sam_jax-*.whl")
  run([sys.executable, "-m", "venv", str(tmp_path / "env")], tmp_path)
  python = str(tmp_path / "env" / "bin" / "python")
  run([python, *pip, "install", str(wheel)], tmp_path)
  # The core: the README's own-loop snippet, the layers it names, and no TensorFlow.
  (tmp_path / "snippet.py").write_text(readme_snippet("## SAM in your own training loop"))
  check = ("import runpy, sys; runpy.run_path('snippet.py'); "
           "import sam_jax.replicas, sam_jax.steps, sam_jax.models, sam_jax.family; "
           "print(sam_jax.__file__); print('tensorflow' in sys.modules)")
  loss, location, tensorflow = run([python, "-c", check], tmp_path).splitlines()[-3:]
  assert float(loss.removeprefix("loss ")) < 0.01  # trained, from 1.0
  assert location.startswith(str(tmp_path / "env"))  # the wheel, not this checkout
  assert tensorflow == "False"
  metadata = run([
      python, "-c", "import importlib.metadata as m; "
      "print(m.metadata('sam-jax')['License-Expression'])"
  ], tmp_path)
  assert metadata.strip() == "Apache-2.0"
  # [train]: the binary, its version and its help, with the configs the wheel carries. Its
  # pinned packages (TensorFlow's 600 MB among them) come from this checkout's environment,
  # which scripts/setup_env.sh installed from the same extras: pip finds them satisfied.
  site = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path)
  pathlib.Path(site.strip(), "checkout_env.pth").write_text(sysconfig.get_path("purelib") + "\n")
  run([python, *pip, "install", f"{wheel}[train]"], tmp_path)
  version = run([python, "-m", "sam_jax.train", "--version"], tmp_path)
  assert version.startswith(f"sam-jax {sam_jax.__version__} (jax ")
  help_text = run([python, "-m", "sam_jax.train", "--helpfull"], tmp_path, status=1)  # absl's
  assert "experiments/configs/default.py" in help_text  # no checkout: the wheel's copy
  for flag in ("--config.sam.rho", "--workdir", "--sam_rho", "--[no]version"):  # absl: --[no]b
    assert flag in help_text, flag
