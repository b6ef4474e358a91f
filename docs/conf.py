"""Sphinx configuration of the sam-jax documentation (`bash scripts/docs.sh` builds it).

MyST markdown pages, notebooks executed at build time (myst-nb), an API reference from
the docstrings (autodoc, autosummary, napoleon for their Google style) and a config
reference generated from configs/default.py (`_ext/config_reference.py`).
"""

import importlib.util
import os
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(DOCS))  # the checkout: sam_jax and configs
sys.path.insert(0, os.path.join(DOCS, "_ext"))

project = "sam-jax"
author = "The sam-jax authors"
copyright = "2026, The sam-jax authors"  # noqa: A001  (Sphinx's name for it)

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "config_reference",
    "formula_blocks",
]
exclude_patterns = ["_build", "jupyter_execute", "**/.ipynb_checkpoints"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}

# MyST: $...$ math, ::: fences, heading anchors for links to sections.
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Notebooks: executed on every build (on the CPU), a raising cell fails the build.
nb_execution_mode = "force"
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

autosummary_generate = True
# `name` in a docstring: a link where it names a documented object, else inline code.
default_role = "py:obj"
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"  # the docstrings say what each argument is
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "sphinx_book_theme"
html_title = "sam-jax"
html_theme_options = {"show_toc_level": 2}

# MathJax 3 from the sphinx-mathjax-offline package, copied into the site: the math renders
# without a network. Its files only: as an extension it declares no parallel safety,
# which `sphinx-build -j` would warn about (and -W make an error).
_MATHJAX_PACKAGE = importlib.util.find_spec("sphinx-mathjax-offline")
assert _MATHJAX_PACKAGE and _MATHJAX_PACKAGE.origin, "pip install -r requirements/docs.txt"
html_static_path = [os.path.join(os.path.dirname(_MATHJAX_PACKAGE.origin), "static")]
mathjax_path = "mathjax/tex-chtml.js"
