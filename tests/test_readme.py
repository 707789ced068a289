"""The README's code runs: every ```python block of each marked section
(``<!-- name:start -->`` ... ``<!-- name:end -->``), in order, in one namespace per
section, in a temporary directory.

A block whose first line is ``# requires: module`` runs only where that module is
installed (e.g. Ray, an optional backend the test machines lack); elsewhere it is only
compiled, which still catches syntax errors.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import warnings
from pathlib import Path

import pytest
from sklearn_helpers import one_torch_thread  # noqa: F401 (an autouse fixture)

README = Path(__file__).resolve().parents[1] / "README.md"
_SECTION = re.compile(r"<!-- (?P<name>[\w-]+):start -->(?P<body>.*?)<!-- (?P=name):end -->", re.S)
_BLOCK = re.compile(r"^```python\n(?P<code>.*?)^```", re.S | re.M)
_REQUIRES = re.compile(r"#\s*requires:\s*(?P<modules>[\w., ]+)")


def readme_sections() -> dict[str, list[str]]:
    """Python blocks of each marked README section, by section name."""
    text = README.read_text(encoding="utf-8")
    return {
        match["name"]: [block["code"] for block in _BLOCK.finditer(match["body"])]
        for match in _SECTION.finditer(text)
    }


def _missing_requirements(code: str) -> list[str]:
    first_line = code.lstrip().splitlines()[0] if code.strip() else ""
    requires = _REQUIRES.match(first_line)
    if requires is None:
        return []
    modules = [name.strip() for name in requires["modules"].split(",") if name.strip()]
    return [name for name in modules if importlib.util.find_spec(name) is None]


SECTIONS = {name: blocks for name, blocks in readme_sections().items() if blocks}


def test_readme_has_the_sklearn_section_with_code() -> None:
    assert "sklearn" in SECTIONS and len(SECTIONS["sklearn"]) >= 6


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_readme_section_runs(section: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib").use("Agg")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"readme_{section}"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarnings of tiny demo budgets, dask notes
        for index, code in enumerate(SECTIONS[section]):
            compiled = compile(code, f"README.md[{section}, block {index}]", "exec")
            if not _missing_requirements(code):
                exec(compiled, namespace)


def _public_objects() -> list[tuple[str, object]]:
    import skneuralode
    from skneuralode import plotting

    objects: list[tuple[str, object]] = [
        (f"skneuralode.{name}", getattr(skneuralode, name)) for name in skneuralode.__all__
    ]
    objects += [
        (f"skneuralode.plotting.{name}", getattr(plotting, name)) for name in plotting.__all__
    ]
    for class_name, cls in list(objects):
        if not isinstance(cls, type):
            continue
        for name in dir(cls):
            member = getattr(cls, name)
            ours = (getattr(member, "__module__", None) or "").startswith("skneuralode")
            if not name.startswith("_") and callable(member) and ours:
                objects.append((f"{class_name}.{name}", member))
    return objects


@pytest.mark.parametrize(
    ("name", "obj"), [pytest.param(name, obj, id=name) for name, obj in _public_objects()]
)
def test_public_objects_have_numpydoc_docstrings(name: str, obj: object) -> None:
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{name} has no docstring"
    signature = inspect.signature(obj)  # type: ignore[arg-type]
    documented = [
        p
        for p in signature.parameters.values()
        if p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if documented:
        assert re.search(r"^Parameters\n-{10}", doc, re.M), f"{name}: no Parameters section"
    if not isinstance(obj, type) and signature.return_annotation not in (None, "None"):
        assert re.search(r"^(Returns|Yields)\n-{7}", doc, re.M), f"{name}: no Returns section"
