"""The documentation's API reference lists every public name, and its pages are wired up.

Reads the sources (``docs/api.rst``, the toctrees), so it runs without Sphinx; CI also
builds the site with warnings as errors (``.ci/run``), which fails on a broken reference.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import skneuralode
from skneuralode import datasets, plotting

DOCS = Path(__file__).resolve().parents[1] / "docs"
_MODULE = re.compile(r"^\.\. currentmodule:: (?P<module>[\w.]+)", re.M)
_ENTRY = re.compile(r"^   (?P<name>\w+)$", re.M)
_DATA = re.compile(r"^\.\. py:data:: (?P<name>\w+)", re.M)


def documented_names() -> set[str]:
    """Fully qualified names listed by autosummary or ``py:data`` in docs/api.rst."""
    text = (DOCS / "api.rst").read_text(encoding="utf-8")
    names: set[str] = set()
    pieces = _MODULE.split(text)  # [before, module, body, module, body, ...]
    for module, body in zip(pieces[1::2], pieces[2::2], strict=True):
        for block in re.split(r"^\.\. ", body, flags=re.M):
            if block.startswith("autosummary::"):
                names |= {f"{module}.{m['name']}" for m in _ENTRY.finditer(block)}
        names |= {f"{module}.{m['name']}" for m in _DATA.finditer(body)}
    return names


def public_names() -> set[str]:
    """Every public name: ``__all__`` of the package and of plotting, datasets' own names."""
    names = {f"skneuralode.{name}" for name in skneuralode.__all__}
    names |= {f"skneuralode.plotting.{name}" for name in plotting.__all__}
    for name, value in vars(datasets).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        defined_here = (getattr(value, "__module__", None) or "").startswith("skneuralode")
        if defined_here or name.isupper():  # functions and classes, and the constants
            names.add(f"skneuralode.datasets.{name}")
    return names


def test_every_public_name_is_in_the_api_reference() -> None:
    missing = public_names() - documented_names()
    assert not missing, f"not in docs/api.rst: {sorted(missing)}"


def test_the_api_reference_names_only_what_exists() -> None:
    for qualified in documented_names():
        module, _, name = qualified.rpartition(".")
        assert hasattr(__import__(module, fromlist=[name]), name), qualified


def test_the_new_settings_objects_are_documented() -> None:
    assert {
        f"skneuralode.{name}" for name in ("Collocation", "MultipleShooting", "Polish", "Solver")
    } <= documented_names()


@pytest.mark.parametrize(
    "page",
    ["getting_started", "user_guide/index", "auto_examples/index", "api", "benchmarks"],
)
def test_index_links_every_top_level_page(page: str) -> None:
    assert f"   {page}\n" in (DOCS / "index.rst").read_text(encoding="utf-8")


def test_every_user_guide_page_is_in_its_toctree() -> None:
    toctree = (DOCS / "user_guide" / "index.rst").read_text(encoding="utf-8")
    for page in sorted((DOCS / "user_guide").glob("*.md")):
        assert f"   {page.stem}\n" in toctree, page.name


def test_the_gallery_covers_the_six_examples() -> None:
    examples = sorted(p.stem for p in (DOCS.parent / "examples").glob("*.py"))
    assert len(examples) >= 6
    for example in examples:
        text = (DOCS.parent / "examples" / f"{example}.py").read_text(encoding="utf-8")
        # sphinx-gallery's header: a docstring whose first line is a title underlined by '='.
        assert re.match(r'"""\n[^\n]+\n=+\n', text), example
