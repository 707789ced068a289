"""Sphinx configuration of the skneuralode documentation.

Build: ``python -m sphinx -W -b html docs docs/_build/html`` from the repository root.
The gallery executes every script of ``examples/`` (a few CPU minutes in all); set
``SKNEURALODE_DOCS_GALLERY=quick`` to execute only the fast ones (the others are shown
with their code, without output), which is what CI does to stay within its budget.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's package, even when not installed
os.environ.setdefault("OMP_NUM_THREADS", "1")

import skneuralode  # noqa: E402

project = "skneuralode"
author = "The skneuralode developers"
copyright = "2026, the skneuralode developers"
release = skneuralode.__version__ if hasattr(skneuralode, "__version__") else "0.1.0"
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "matplotlib.sphinxext.plot_directive",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = [
    "_build",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "auto_examples/*.zip",
    "auto_examples/*.json",
    "auto_examples/*.md5",
]
myst_heading_anchors = 3

# API reference: one page per public name, generated from the docstrings.
autosummary_generate = True
autodoc_default_options = {
    "members": True,
    "inherited-members": False,
    # scikit-learn's metadata-routing methods: documented by scikit-learn, not here.
    "exclude-members": "set_fit_request, set_predict_request, set_score_request",
}
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks: set[str] = set()

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable", None),
    "sklearn": ("https://scikit-learn.org/stable", None),
    "torch": ("https://pytorch.org/docs/stable", None),
}
intersphinx_disabled_reftypes = ["*"]
# The build must work offline (CI machines, this project's sandbox): no inventories.
if os.environ.get("SKNEURALODE_DOCS_INTERSPHINX", "0") != "1":
    intersphinx_mapping = {}

# Gallery: the scripts of examples/, executed; their figures shown.
_QUICK = os.environ.get("SKNEURALODE_DOCS_GALLERY", "full") == "quick"
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": (
        r"/(quickstart|sir_hidden_state|lotka_volterra_ude)\.py$" if _QUICK else r"/.*\.py$"
    ),
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "plot_gallery": "True",
    "abort_on_example_error": True,
    "remove_config_comments": True,
    "matplotlib_animations": False,
}

# Pictures drawn at build time by docs/user_guide/*.py through the plot directive.
plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 100)]
plot_rcparams = {"figure.autolayout": True}
plot_working_directory = str(ROOT)
plot_basedir = str(Path(__file__).resolve().parent)

html_theme = "pydata_sphinx_theme"
html_title = "skneuralode"
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_static_path: list[str] = []
html_show_sourcelink = False
