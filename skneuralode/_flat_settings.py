"""Constructor arguments of files written before the settings objects (format 1 and 2).

Until format version 3 the solver and stage settings were flat constructor arguments
(``rtol``, ``shooting_segment_length``, ``polish_max_iter``, ...), with four older
aliases (``segment_length``, ...). A file of those versions still loads: its flat
arguments are mapped here onto today's :class:`~skneuralode.Solver`,
:class:`~skneuralode.Collocation`, :class:`~skneuralode.MultipleShooting` and
:class:`~skneuralode.Polish`. An argument keeps its plain value (``solver="dopri5"``,
``shooting="auto"``) where every flat setting of it is at its default, so the loaded
estimator reads as it would be written today. The fitted model does not depend on this
(``predict`` reads the stored model description); what does is a later ``fit``, which
trains as the file's settings said: ``tol`` and ``n_iter_no_change``, once shared by
collocation and shooting, go to both.

The one flat combination today's objects cannot express, a ``smoothing`` with
``collocation=False`` (the smoother also gave shooting its start states), is dropped
with a warning: a refit smooths with ``"auto"``.
"""

from __future__ import annotations

import warnings
from typing import Any

from ._settings import Collocation, MultipleShooting, Polish, Solver

#: The flat names of format 1 and 2, grouped by the argument and setting they became.
FLAT_SETTINGS: dict[str, dict[str, str]] = {
    "solver": {
        "rtol": "rtol",
        "atol": "atol",
        "adjoint": "adjoint",
        "step_size": "step_size",
        "max_num_steps": "max_num_steps",
        "compile_field": "compile_field",
    },
    "collocation": {
        "collocation_learning_rate": "learning_rate",
        "smoothing": "smoothing",
        "tol": "tol",
        "n_iter_no_change": "n_iter_no_change",
    },
    "shooting": {
        "shooting_learning_rate": "learning_rate",
        "shooting_segment_length": "segment_length",
        "shooting_segment_growth": "segment_growth",
        "shooting_batch_size": "batch_size",
        "shooting_continuity_weight": "continuity_weight",
        "tol": "tol",
        "n_iter_no_change": "n_iter_no_change",
    },
    "polish": {"polish_max_iter": "max_iter", "polish_method": "method"},
}
#: Aliases that format 2 stored beside the flat names, "deprecated" unless set.
_ALIASES = {
    "segment_length": "shooting_segment_length",
    "segment_growth": "shooting_segment_growth",
    "segment_batch_size": "shooting_batch_size",
    "continuity_weight": "shooting_continuity_weight",
}
_UNSET_ALIAS = "deprecated"


def _changed(flat: dict[str, Any], names: dict[str, str], defaults: dict[str, Any]) -> dict:
    """The settings among ``flat`` that differ from their defaults, by their new names."""
    changed = {}
    for old, new in names.items():
        if old in flat and not _same(flat[old], defaults[new]):
            changed[new] = flat[old]
    return changed


def _same(value: Any, default: Any) -> bool:
    return type(value) is type(default) and value == default


def settings_from_flat(cls: type, arguments: dict[str, Any]) -> dict[str, Any]:
    """``arguments`` of a format-1 or format-2 file with the flat settings of ``cls``
    mapped onto today's settings objects (other names pass through unchanged)."""
    arguments = dict(arguments)
    for alias, name in _ALIASES.items():
        value = arguments.pop(alias, _UNSET_ALIAS)
        if not (isinstance(value, str) and value == _UNSET_ALIAS):
            arguments[name] = value  # an alias that was set won over the name
    flat_names = {name for names in FLAT_SETTINGS.values() for name in names}
    flat = {name: arguments.pop(name) for name in flat_names & arguments.keys()}
    if not flat:
        return arguments
    estimator_defaults = cls().get_params(deep=False)

    solver = _changed(flat, FLAT_SETTINGS["solver"], Solver().get_params())
    if solver:
        method = arguments.get("solver", estimator_defaults["solver"])
        arguments["solver"] = Solver(method, **solver)

    collocation_on = arguments.get("collocation", estimator_defaults["collocation"])
    collocation = _changed(flat, FLAT_SETTINGS["collocation"], Collocation().get_params())
    if collocation and collocation_on is True:
        arguments["collocation"] = Collocation(**collocation)
    elif "smoothing" in collocation:
        warnings.warn(
            f"The model file sets smoothing={collocation['smoothing']!r} with "
            "collocation=False; smoothing is now a setting of Collocation(smoothing=...), "
            "so it is dropped: the loaded model predicts as saved, a new fit smooths with "
            "'auto'.",
            UserWarning,
            stacklevel=4,
        )

    shooting_on = arguments.get("shooting", estimator_defaults["shooting"])
    shooting = _changed(flat, FLAT_SETTINGS["shooting"], MultipleShooting().get_params())
    auto = isinstance(shooting_on, str) and shooting_on == "auto"
    if shooting and (shooting_on is True or auto):
        only_if_needed = auto
        arguments["shooting"] = MultipleShooting(**shooting, only_if_needed=only_if_needed)

    polish_on = arguments.get("polish", estimator_defaults["polish"])
    polish_defaults = {"max_iter": cls._polish_max_iter, "method": cls._polish_method}
    polish = _changed(flat, FLAT_SETTINGS["polish"], polish_defaults)
    if polish and polish_on is True:
        arguments["polish"] = Polish(**polish)
    return arguments
