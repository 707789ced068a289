"""The Examples in skneuralode's docstrings run, and print what they say they print.

Every module of the package is searched, so a docstring gets its test by being written:
one test per docstring with examples, named after the object it documents. An example
that needs an optional extra (matplotlib, pysindy, ...) that is not installed is
skipped with the extra named; one that is too slow for the suite says so where it is
written (``# doctest: +SKIP`` with a reason beside it).
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil
from typing import Any

import pytest

import skneuralode

#: Packages of the optional extras (pyproject's [project.optional-dependencies]).
OPTIONAL_PACKAGES = frozenset({"matplotlib", "pysindy", "dask", "distributed", "pandas"})
OPTION_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules() -> list[Any]:
    names = [info.name for info in pkgutil.walk_packages(skneuralode.__path__, "skneuralode.")]
    return [skneuralode, *(importlib.import_module(name) for name in sorted(names))]


def _docstring_tests() -> list[Any]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = {}
    for module in _modules():
        for test in finder.find(module):
            if test.examples:
                tests[test.name] = test  # a name found through two modules runs once
    return [pytest.param(test, id=name) for name, test in sorted(tests.items())]


class _Runner(doctest.DocTestRunner):
    """Notes an example that needs a missing optional extra; what fails after it (names
    it would have defined) follows from it, what failed before it does not."""

    def __init__(self) -> None:
        super().__init__(optionflags=OPTION_FLAGS, verbose=False)
        self.missing_extra: str | None = None
        self.failed_on_its_own = False

    def report_failure(self, out: Any, test: Any, example: Any, got: str) -> None:
        self.failed_on_its_own = self.failed_on_its_own or self.missing_extra is None
        super().report_failure(out, test, example, got)

    def report_unexpected_exception(self, out: Any, test: Any, example: Any, exc_info: Any) -> None:
        error = exc_info[1]
        name = (getattr(error, "name", None) or "").split(".")[0]
        if isinstance(error, ImportError) and name in OPTIONAL_PACKAGES:
            self.missing_extra = self.missing_extra or name
        else:
            self.failed_on_its_own = self.failed_on_its_own or self.missing_extra is None
        super().report_unexpected_exception(out, test, example, exc_info)


@pytest.mark.parametrize("test", _docstring_tests())
def test_docstring_examples_run(test: doctest.DocTest) -> None:
    runner = _Runner()
    report = io.StringIO()
    # A copy: the examples' names must not leak from one run (or test) into the next.
    test = doctest.DocTest(
        test.examples, dict(test.globs), test.name, test.filename, test.lineno, test.docstring
    )
    result = runner.run(test, out=report.write, clear_globs=True)
    if runner.missing_extra is not None and not runner.failed_on_its_own:
        pytest.skip(f"the example needs {runner.missing_extra}, an optional extra")
    assert result.failed == 0, report.getvalue()


def test_the_estimators_are_documented_by_running_examples() -> None:
    names = {param.id for param in _docstring_tests()}
    assert "skneuralode.neural_ode.NeuralODERegressor" in names
    assert "skneuralode.universal_ode.UniversalODERegressor" in names
