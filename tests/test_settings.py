"""The settings objects (``skneuralode._settings``): sklearn parameters of the estimators.

``Solver``, ``Collocation``, ``MultipleShooting`` and ``Polish`` are nested parameters:
exposed by ``get_params(deep=True)``, set by ``set_params``, tuned by ``GridSearchCV``,
kept by ``clone``, pickle and the safe file format, validated with the setting named; a
plain value (``shooting="auto"``) trains exactly as the object it stands for.
"""

from __future__ import annotations

import inspect
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold
from sklearn_helpers import QUICK, T, Y, one_torch_thread  # noqa: F401 (autouse fixture)

import skneuralode
from skneuralode import (
    Collocation,
    MultipleShooting,
    NeuralODERegressor,
    Polish,
    Solver,
    UniversalODERegressor,
    load,
)
from skneuralode._persistence import CONFIG_MEMBER
from skneuralode._settings import TrainingSettings

FAST = {**QUICK, "device": "cpu"}


def settings_of(est: NeuralODERegressor) -> dict:
    """Every parameter but the settings objects themselves (compared by their own)."""
    params = est.get_params(deep=True)
    return {k: v for k, v in params.items() if not isinstance(v, TrainingSettings)}


def test_public_names_and_signature_sizes() -> None:
    for name in ("Collocation", "MultipleShooting", "Polish", "Solver"):
        assert name in skneuralode.__all__
    assert len(inspect.signature(NeuralODERegressor).parameters) == 17
    assert len(inspect.signature(UniversalODERegressor).parameters) == 28


def test_nested_parameters_are_exposed_and_set() -> None:
    est = NeuralODERegressor(shooting=MultipleShooting(segment_length=10))
    params = est.get_params(deep=True)
    assert params["shooting__segment_length"] == 10
    assert params["shooting__batch_size"] == 256
    est.set_params(shooting__batch_size=64)
    assert est.shooting.batch_size == 64
    assert est.shooting.segment_length == 10


def test_nested_setting_of_a_plain_value_replaces_it_by_its_object() -> None:
    est = NeuralODERegressor().set_params(shooting__segment_length=5, solver__rtol=1e-5)
    assert isinstance(est.shooting, MultipleShooting)
    assert est.shooting.only_if_needed  # "auto"
    assert est.shooting.segment_length == 5
    assert (est.solver.method, est.solver.rtol) == ("dopri5", 1e-5)
    est = NeuralODERegressor(shooting=True).set_params(shooting__batch_size=8)
    assert not est.shooting.only_if_needed
    with pytest.raises(ValueError, match=r"polish=False turns the stage off"):
        NeuralODERegressor().set_params(polish__max_iter=3)
    with pytest.raises(ValueError, match="Invalid parameter"):
        NeuralODERegressor().set_params(shooting__no_such_setting=3)


def test_grid_search_tunes_a_stage_setting() -> None:
    search = GridSearchCV(
        NeuralODERegressor(**{**FAST, "shooting": True, "max_iter": 10}),
        {"shooting__segment_length": [3, 5]},
        cv=KFold(2),
    ).fit(T, Y)
    assert [p["shooting__segment_length"] for p in search.cv_results_["params"]] == [3, 5]
    best = search.best_estimator_
    assert best.shooting.segment_length == search.best_params_["shooting__segment_length"]
    assert any(record["stage"] == "shooting" for record in best.history_)


@pytest.mark.parametrize(
    ("plain", "settings"),
    [
        ({"shooting": "auto"}, {"shooting": MultipleShooting()}),
        ({"shooting": True}, {"shooting": MultipleShooting(only_if_needed=False)}),
        ({"polish": True}, {"polish": Polish()}),
        ({"solver": "rk4"}, {"solver": Solver("rk4")}),
        ({"collocation": True}, {"collocation": Collocation()}),
    ],
)
@pytest.mark.filterwarnings("ignore:The fit is poor")
def test_a_plain_value_trains_as_its_object(plain: dict, settings: dict) -> None:
    base = {**FAST, "max_iter": 15}
    a = NeuralODERegressor(**{**base, **plain}).fit(T, Y)
    b = NeuralODERegressor(**{**base, **settings}).fit(T, Y)
    np.testing.assert_array_equal(a.predict(T), b.predict(T))


def test_clone_pickle_and_file_keep_the_objects(tmp_path: Path) -> None:
    est = NeuralODERegressor(
        **{
            **FAST,
            "shooting": MultipleShooting(segment_length=4, only_if_needed=False),
            "polish": Polish(max_iter=3),
            "solver": Solver("rk4", rtol=1e-5),
            "collocation": Collocation(learning_rate=2e-2),
        }
    )
    copy = clone(est)
    assert copy.shooting is not est.shooting
    assert settings_of(copy) == settings_of(est)
    est.fit(T, Y)
    for loaded in (pickle.loads(pickle.dumps(est)), _saved_and_loaded(est, tmp_path)):
        assert settings_of(loaded) == settings_of(est)
        assert isinstance(loaded.shooting, MultipleShooting)
        np.testing.assert_array_equal(loaded.predict(T), est.predict(T))


def _saved_and_loaded(est: NeuralODERegressor, folder: Path) -> NeuralODERegressor:
    est.save(folder / "model.skn")
    return load(folder / "model.skn")


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"shooting": MultipleShooting(segment_length=1)}, r"shooting\.segment_length"),
        ({"shooting": MultipleShooting(batch_size=0)}, r"shooting\.batch_size"),
        ({"collocation": Collocation(learning_rate=-1.0)}, r"collocation\.learning_rate"),
        ({"collocation": Collocation(smoothing="lots")}, r"collocation\.smoothing"),
        ({"solver": Solver(rtol=float("nan"))}, r"solver\.rtol"),
        ({"solver": Solver("rk45")}, r"solver\.method"),
        ({"polish": Polish(max_iter=0)}, r"polish\.max_iter"),
        ({"polish": Polish(method="adam")}, r"polish\.method"),
    ],
)
def test_bad_values_inside_objects_name_the_setting(arguments: dict, named: str) -> None:
    with pytest.raises(ValueError, match=rf"^The '{named}' parameter of NeuralODERegressor"):
        NeuralODERegressor(**{**FAST, **arguments}).fit(T, Y)


def test_gauss_newton_polish_is_refused_for_a_neural_ode() -> None:
    with pytest.raises(ValueError, match=r"polish\.method='gauss-newton' is not available"):
        NeuralODERegressor(**FAST, polish=Polish(method="gauss-newton")).fit(T, Y)


@pytest.mark.parametrize(
    "name",
    ["rtol", "shooting_segment_length", "polish_max_iter", "tol", "segment_length", "smoothing"],
)
def test_old_flat_names_are_refused(name: str) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        NeuralODERegressor(**{name: 1})


def test_format_2_file_with_flat_names_loads(tmp_path: Path) -> None:
    """A file of format 2 held the settings as flat names: they become the objects, and
    the model predicts as saved."""
    est = NeuralODERegressor(
        **{
            **FAST,
            "shooting": MultipleShooting(segment_length=4, only_if_needed=False),
            "polish": Polish(max_iter=3),
            "solver": Solver("rk4", rtol=1e-5),
        }
    ).fit(T, Y)
    path = tmp_path / "model.skn"
    est.save(path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members[CONFIG_MEMBER])
    flat = {
        "solver": "rk4",
        "rtol": 1e-5,
        "atol": 1e-8,
        "shooting": True,
        "shooting_segment_length": 4,
        "shooting_batch_size": 256,
        "polish": True,
        "polish_max_iter": 3,
        "tol": 1e-4,
        "segment_length": "deprecated",
        "continuity_weight": "deprecated",
    }
    config["params"] = {**config["params"], **flat}
    config["format_version"] = 2
    members[CONFIG_MEMBER] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    loaded = load(path)
    assert settings_of(loaded) == settings_of(est)
    np.testing.assert_array_equal(loaded.predict(T), est.predict(T))
    config["format_version"] = 3  # today's format has no flat names
    members[CONFIG_MEMBER] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(ValueError, match=r"sets \[.*'rtol'.*\], which NeuralODERegressor"):
        load(path)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda s: s["params"].update(evil=1), r"MultipleShooting has no \['evil'\]"),
        (lambda s: s.update(type="ModelSpec"), "unknown settings"),
        (lambda s: s["params"].update(batch_size="many"), r"'shooting\.batch_size' parameter"),
    ],
)
def test_tampered_settings_in_a_file_are_refused(tmp_path: Path, tamper, message: str) -> None:
    path = tmp_path / "model.skn"
    NeuralODERegressor(shooting=MultipleShooting(batch_size=8)).save(path)
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read(CONFIG_MEMBER))
    tamper(config["params"]["shooting"]["__settings__"])
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(CONFIG_MEMBER, json.dumps(config))
    with pytest.raises(ValueError, match=message):
        load(path)
