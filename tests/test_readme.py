"""The README's and the documentation pages' code runs: every ```python block of each
marked section (``<!-- name:start -->`` ... ``<!-- name:end -->``) of README.md and of
the Markdown pages under docs/, in order, in one namespace per section, in a temporary
directory. CI (``.ci/run``) runs the README's set-up commands.

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

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
_SECTION = re.compile(r"<!-- (?P<name>[\w-]+):start -->(?P<body>.*?)<!-- (?P=name):end -->", re.S)
_BLOCK = re.compile(r"^```python\n(?P<code>.*?)^```", re.S | re.M)
_REQUIRES = re.compile(r"#\s*requires:\s*(?P<modules>[\w., ]+)")


def page_sections(page: Path) -> dict[str, list[str]]:
    """Python blocks of each marked section of one Markdown page, by section name."""
    text = page.read_text(encoding="utf-8")
    return {
        match["name"]: [block["code"] for block in _BLOCK.finditer(match["body"])]
        for match in _SECTION.finditer(text)
    }


def readme_sections() -> dict[str, list[str]]:
    """Python blocks of every marked section, by ``page:section`` (README first)."""
    return {
        f"{page.relative_to(ROOT)}:{name}": blocks
        for page in PAGES
        for name, blocks in page_sections(page).items()
    }


def _missing_requirements(code: str) -> list[str]:
    first_line = code.lstrip().splitlines()[0] if code.strip() else ""
    requires = _REQUIRES.match(first_line)
    if requires is None:
        return []
    modules = [name.strip() for name in requires["modules"].split(",") if name.strip()]
    return [name for name in modules if importlib.util.find_spec(name) is None]


SECTIONS = {name: blocks for name, blocks in readme_sections().items() if blocks}


def test_readme_and_guide_have_their_sections_with_code() -> None:
    assert {"README.md:example", "README.md:ude"} <= set(SECTIONS)
    assert len(SECTIONS["docs/user_guide/model_selection.md:sklearn"]) >= 5
    assert len(SECTIONS["docs/user_guide/saving.md:saving"]) >= 4


def test_readme_is_short() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250


def _setup_commands() -> list[str]:
    """The two commands of the README's set-up section (comments and blank lines left out)."""
    sections = {m["name"]: m for m in _SECTION.finditer(README.read_text(encoding="utf-8"))}
    body = sections["setup"]
    bash = re.search(r"```bash\n(?P<code>.*?)```", body["body"], re.S)
    assert bash is not None
    return [
        line.strip()
        for line in bash["code"].splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_ci_runs_the_readme_commands() -> None:
    install, tests = _setup_commands()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    # The README's install is one line: venv, activate, pip install, the quick demo.
    pip_install = re.search(r'pip install "torch==[\d.]+" -e "\.\[[\w,]+\]"', install)
    assert pip_install is not None, install
    assert pip_install[0] in ci
    assert "python examples/quickstart.py" in install and "python examples/quickstart.py" in ci
    assert tests == "python -m pytest -q" and tests in ci
    assert 'pip install -e ".[docs]"' in ci
    assert re.search(r"python -m sphinx -W -b html docs ", ci)


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
