"""Persistence: pickle/joblib round trips in a fresh process, models saved for a GPU that
predict on a CPU-only machine, small files, and the safe format (``save``/``load``):
exact round trips, import permissions, tampered files, format versions."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn_helpers import (  # noqa: F401 (one_torch_thread is an autouse fixture)
    cube,
    fast_neural,
    fast_universal,
    one_torch_thread,
    oscillator,
    oscillator_family,
    spring,
)

import skneuralode
from skneuralode import NeuralODERegressor, UniversalODERegressor, load
from skneuralode._persistence import CONFIG_MEMBER, FORMAT_VERSION, WEIGHTS_MEMBER

TESTS = Path(__file__).parent
REFERENCE_FILE = TESTS / "data" / "neural_ode_format1.skn"
REFERENCE_PREDICTIONS = TESTS / "data" / "neural_ode_format1_expected.npy"


@pytest.fixture(scope="module")
def fitted() -> dict[str, Any]:
    """One fitted model of each kind, on one trajectory and on several."""
    t, y = oscillator()
    grids, states = oscillator_family(n_traj=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "t": t,
            "y": y,
            "neural": fast_neural(feature_map=cube).fit(t, y),
            "universal": fast_universal().fit(t, y),
            "family": fast_neural().fit(grids, states),
            "grids": grids,
        }


def _child_environment() -> dict[str, str]:
    paths = [str(TESTS), os.environ.get("PYTHONPATH", "")]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "OMP_NUM_THREADS": "1",
    }


# ------------------------------------------------------------- pickle, joblib, fresh process
def test_pickle_joblib_and_safe_files_predict_identically_in_a_fresh_process(
    fitted: dict[str, Any], tmp_path: Path
) -> None:
    t = fitted["t"]
    for kind in ("neural", "universal"):
        estimator = fitted[kind]
        (tmp_path / f"{kind}.pkl").write_bytes(pickle.dumps(estimator))
        joblib.dump(estimator, tmp_path / f"{kind}.joblib")
        estimator.save(tmp_path / f"{kind}.skn")
    np.save(tmp_path / "t.npy", t)
    script = textwrap.dedent(
        """
        import pickle, sys
        from pathlib import Path
        import joblib, numpy as np, torch
        import skneuralode
        torch.set_num_threads(1)
        folder = Path(sys.argv[1])
        t = np.load(folder / "t.npy")
        out = {}
        for kind in ("neural", "universal"):
            out[kind + "_pickle"] = pickle.loads((folder / f"{kind}.pkl").read_bytes()).predict(t)
            out[kind + "_joblib"] = joblib.load(folder / f"{kind}.joblib").predict(t)
            safe = skneuralode.load(folder / f"{kind}.skn", allow_imports=["sklearn_helpers"])
            out[kind + "_safe"] = safe.predict(t)
        np.savez(folder / "out.npz", **out)
        """
    )
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        check=True,
        env=_child_environment(),
        timeout=300,
    )
    results = np.load(tmp_path / "out.npz")
    for kind in ("neural", "universal"):
        expected = fitted[kind].predict(t)
        for route in ("pickle", "joblib", "safe"):
            np.testing.assert_array_equal(results[f"{kind}_{route}"], expected, err_msg=route)


def test_model_saved_for_cuda_predicts_on_a_cpu_only_machine(
    fitted: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulated: the model is fitted on the CPU and then marked ``device="cuda"`` (as a
    GPU fit is), saved, and loaded where ``torch.cuda.is_available()`` is False. The
    move of CUDA tensors to the CPU in ``__getstate__`` runs only on a GPU machine
    (see the next test)."""
    t, y = fitted["t"], fitted["y"]
    estimator = pickle.loads(pickle.dumps(fitted["neural"]))
    expected = estimator.predict(t)
    estimator.set_params(device="cuda")
    blob = pickle.dumps(estimator)
    joblib.dump(estimator, tmp_path / "gpu.joblib")
    estimator.save(tmp_path / "gpu.skn")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded_models = [
        pickle.loads(blob),
        joblib.load(tmp_path / "gpu.joblib"),
        load(tmp_path / "gpu.skn", allow_imports=["sklearn_helpers.cube"]),
    ]
    for loaded in loaded_models:
        assert loaded.device == "cuda"
        np.testing.assert_array_equal(loaded.predict(t), expected)
        assert loaded.score(t, y) == pytest.approx(fitted["neural"].score(t, y))
        assert next(loaded.module_.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="CUDA is not available"):
        loaded_models[0].fit(t, y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fit_loads_in_a_process_without_cuda(tmp_path: Path) -> None:
    t, y = oscillator()
    estimator = fast_neural(device="cuda").fit(t, y)
    expected = estimator.predict(t)
    joblib.dump(estimator, tmp_path / "gpu.joblib")
    estimator.save(tmp_path / "gpu.skn")
    np.save(tmp_path / "t.npy", t)
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        import joblib, numpy as np, torch
        import skneuralode
        assert not torch.cuda.is_available()
        folder = Path(sys.argv[1])
        t = np.load(folder / "t.npy")
        np.savez(folder / "out.npz", joblib=joblib.load(folder / "gpu.joblib").predict(t),
                 safe=skneuralode.load(folder / "gpu.skn").predict(t))
        """
    )
    environment = {**_child_environment(), "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, env=environment)
    results = np.load(tmp_path / "out.npz")
    for route in ("joblib", "safe"):
        np.testing.assert_allclose(results[route], expected, rtol=1e-4, atol=1e-5)


def test_persisted_size_is_small_and_independent_of_the_data() -> None:
    """A default-width network (64, 64): the files hold weights, scaling, initial states,
    the history and the uncertainty record (the output layer's covariance in the few
    dozen directions the data inform, at most the layer's size squared), never the
    training data."""
    sizes, records = {}, {}
    # 60 and 150 points: both fits follow the output layer in their uncertainty record
    # (it is held fixed beyond 100 000 points x directions), so the records compare
    for n_times in (60, 150):
        t, y = oscillator(n_times=n_times, t_end=8.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator = NeuralODERegressor(
                max_iter=20, shooting=False, random_state=0, device="cpu"
            )
            estimator.fit(t, y)
        buffer = io.BytesIO()
        joblib.dump(estimator, buffer)
        sizes[n_times] = (len(pickle.dumps(estimator)), len(buffer.getvalue()))
        records[n_times] = estimator._theta_covariance_directions_.nbytes
        followed = estimator._theta_prior_variance_.size  # 130 entries, or 0 if held fixed
        assert records[n_times] <= 8 * followed**2
    weights = 8 * sum(p.numel() for p in estimator.module_.parameters())  # about 37 KB
    for n_times, (pickled, joblibbed) in sizes.items():
        assert pickled < weights + records[n_times] + 20_000
        assert joblibbed < weights + records[n_times] + 20_000
    data_dependent = (sizes[150][0] - records[150]) - (sizes[60][0] - records[60])
    assert abs(data_dependent) < 2_000


# ------------------------------------------------------------------------ safe format
@pytest.mark.parametrize("kind", ["neural", "universal", "family"])
def test_safe_round_trip_is_exact(fitted: dict[str, Any], kind: str, tmp_path: Path) -> None:
    estimator = fitted[kind]
    estimator.save(tmp_path / "model.skn")
    loaded = load(tmp_path / "model.skn", allow_imports=["sklearn_helpers"])
    assert type(loaded) is type(estimator)
    assert loaded.get_params() == estimator.get_params()
    assert isinstance(loaded.hidden_layer_sizes, tuple)
    for name in ("n_features_in_", "n_trajectories_", "n_iter_", "loss_", "history_"):
        assert getattr(loaded, name) == getattr(estimator, name), name
    assert loaded.stage_results_ == estimator.stage_results_
    np.testing.assert_array_equal(loaded.y0_, estimator.y0_)
    np.testing.assert_array_equal(loaded.t0_, estimator.t0_)
    if kind == "universal":
        assert loaded.params_ == estimator.params_
        assert loaded.known is spring
    times = fitted["grids"] if kind == "family" else fitted["t"]
    np.testing.assert_array_equal(loaded.predict(times), estimator.predict(times))
    states = np.array([[0.3, -0.2], [1.0, 0.5]])
    np.testing.assert_array_equal(loaded.vector_field(states), estimator.vector_field(states))
    original, restored = estimator.module_.state_dict(), loaded.module_.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[name], restored[name]) for name in original)


def test_loaded_model_continues_training_with_warm_start(
    fitted: dict[str, Any], tmp_path: Path
) -> None:
    fitted["universal"].save(tmp_path / "model.skn")
    loaded = load(tmp_path / "model.skn", allow_imports=["sklearn_helpers.spring"])
    n_records = len(loaded.history_)
    loaded.set_params(warm_start=True, max_iter=10).fit(fitted["t"], fitted["y"])
    assert len(loaded.history_) > n_records
    assert loaded.score(fitted["t"], fitted["y"]) > 0.5


def test_unfitted_estimator_round_trips_unfitted(tmp_path: Path) -> None:
    fast_universal(fixed_params={"c": 2.0}).save(tmp_path / "config.skn")
    loaded = load(tmp_path / "config.skn", allow_imports=True)
    assert loaded.get_params() == fast_universal(fixed_params={"c": 2.0}).get_params()
    with pytest.raises(NotFittedError):
        loaded.predict(np.arange(3.0))


def test_random_state_instance_is_stored(tmp_path: Path) -> None:
    generator = np.random.RandomState(7)
    fast_neural(random_state=generator).save(tmp_path / "m.skn")
    restored = load(tmp_path / "m.skn").random_state
    assert isinstance(restored, np.random.RandomState)
    assert restored.randint(1000, size=5).tolist() == generator.randint(1000, size=5).tolist()


def test_callables_that_cannot_be_imported_back(tmp_path: Path, fitted: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="known"):
        fast_universal(known=lambda t, y, p: -y).save(tmp_path / "m.skn")
    estimator = pickle.loads(pickle.dumps(fitted["neural"]))
    estimator.set_params(callbacks=[lambda record: False])
    with pytest.warns(UserWarning, match="callbacks not saved"):
        estimator.save(tmp_path / "m.skn")
    assert load(tmp_path / "m.skn", allow_imports=["sklearn_helpers"]).callbacks is None


# -------------------------------------------------------------- imports need permission
def test_imports_need_permission_and_are_listed(fitted: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "model.skn"
    fitted["universal"].save(path)
    with pytest.raises(ValueError, match=r"allow_imports=\['sklearn_helpers.spring'\]"):
        load(path)
    with pytest.raises(ValueError, match=r"sklearn_helpers\.spring"):
        load(path, allow_imports=["sklearn_help"])  # a prefix must end at a dot
    for allowed in (True, "sklearn_helpers", ["sklearn_helpers.spring"]):
        assert load(path, allow_imports=allowed).known is spring
    torch_feature = fast_neural(feature_map=torch.tanh)
    torch_feature.save(tmp_path / "torch.skn")
    assert load(tmp_path / "torch.skn", allow_imports=["torch.tanh"]).feature_map is torch.tanh


def _rewrite(path: Path, *, config: Any = None, weights: bytes | None = None) -> None:
    """Replace the configuration (a function of the old one) and/or the weights."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    if config is not None:
        members[CONFIG_MEMBER] = json.dumps(config(json.loads(members[CONFIG_MEMBER]))).encode()
    if weights is not None:
        members[WEIGHTS_MEMBER] = weights
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


class _Exploit:
    """Unpickling this creates the file at ``marker``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (open, (str(self.marker), "w"))


def test_tampered_weights_fail_cleanly_without_running_code(
    fitted: dict[str, Any], tmp_path: Path
) -> None:
    path, marker = tmp_path / "model.skn", tmp_path / "pwned"
    fitted["neural"].save(path)
    payloads = [pickle.dumps(_Exploit(marker))]  # a raw pickle
    buffer = io.BytesIO()
    torch.save({"initial_states": _Exploit(marker)}, buffer)  # inside torch's zip format
    payloads.append(buffer.getvalue())
    for payload in payloads:
        _rewrite(path, weights=payload)
        with pytest.raises(ValueError, match="tampered"):
            load(path, allow_imports=True)
        assert not marker.exists()


def test_tampered_import_paths_are_never_imported(
    fitted: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "evil_payload.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef run(*args): return None\nclass Model: pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "model.skn"

    def evil_known(config: dict[str, Any]) -> dict[str, Any]:
        config["params"]["known"] = {"__import__": "evil_payload:run"}
        return config

    def evil_class(config: dict[str, Any]) -> dict[str, Any]:
        config["estimator"] = "evil_payload:Model"
        return config

    for tamper in (evil_known, evil_class):
        fitted["universal"].save(path)
        _rewrite(path, config=tamper)
        with pytest.raises(ValueError, match="evil_payload"):
            load(path, allow_imports=["sklearn_helpers"])
        assert "evil_payload" not in sys.modules and not marker.exists()
    # Even where importing is allowed, a class must be a skneuralode estimator.
    with pytest.raises(ValueError, match="not a skneuralode estimator"):
        load(path, allow_imports=True)
    sys.modules.pop("evil_payload", None)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda path: path.write_bytes(b"not a zip file at all"), id="garbage"),
        pytest.param(lambda path: path.write_bytes(path.read_bytes()[:100]), id="truncated"),
        pytest.param(
            lambda path: _rewrite(path, config=lambda c: {**c, "format": "other"}), id="format"
        ),
        pytest.param(
            lambda path: _rewrite(
                path, config=lambda c: {**c, "params": {**c["params"], "dtype": {"__eval__": "1"}}}
            ),
            id="unknown-tag",
        ),
        pytest.param(
            lambda path: _rewrite(
                path, config=lambda c: {**c, "fitted": {**c["fitted"], "__dict__": None}}
            ),
            id="dunder-attribute",
        ),
        pytest.param(
            lambda path: _rewrite(
                path, config=lambda c: {**c, "params": {**c["params"], "hidden_layer_sizes": [3]}}
            ),
            id="weights-do-not-fit",
        ),
        pytest.param(
            lambda path: _rewrite(path, config=lambda c: {**c, "params": {**c["params"], "x": 1}}),
            id="unknown-parameter",
        ),
    ],
)
def test_damaged_files_raise_value_error(
    fitted: dict[str, Any], tmp_path: Path, damage: Any
) -> None:
    path = tmp_path / "model.skn"
    fitted["neural"].save(path)
    damage(path)
    with pytest.raises(ValueError):
        load(path, allow_imports=True)


def test_deeply_nested_configuration_is_refused(fitted: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "model.skn"
    fitted["neural"].save(path)
    with zipfile.ZipFile(path) as archive:
        weights = archive.read(WEIGHTS_MEMBER)
    nested = "[" * 50_000 + "]" * 50_000
    config = (
        '{"format": "skneuralode-model", "format_version": 1, '
        '"estimator": "skneuralode.neural_ode:NeuralODERegressor", '
        f'"params": {{"max_iter": {nested}}}, "fitted": null}}'
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(CONFIG_MEMBER, config)
        archive.writestr(WEIGHTS_MEMBER, weights)
    with pytest.raises(ValueError, match="Malformed"):
        load(path)


# ---------------------------------------------------------------------- format versions
def test_future_format_version_is_refused_clearly(fitted: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "model.skn"
    fitted["neural"].save(path)
    future = FORMAT_VERSION + 1
    _rewrite(path, config=lambda c: {**c, "format_version": future, "skneuralode_version": "9.0"})
    with pytest.raises(ValueError, match=rf"format version {future}.*skneuralode 9\.0.*Upgrade"):
        load(path, allow_imports=True)


def test_newer_patch_release_loads_older_files(
    fitted: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of this release loads under a later patch release, and a file written
    before a constructor argument existed loads with that argument's default."""
    path = tmp_path / "model.skn"
    fitted["neural"].save(path)
    monkeypatch.setattr(skneuralode, "__version__", "0.1.99")

    def older(config: dict[str, Any]) -> dict[str, Any]:
        del config["params"]["max_iter"]
        return config

    _rewrite(path, config=older)
    loaded = load(path, allow_imports=["sklearn_helpers"])
    assert loaded.max_iter == NeuralODERegressor().max_iter
    np.testing.assert_array_equal(
        loaded.predict(fitted["t"]), fitted["neural"].predict(fitted["t"])
    )


def test_reference_file_of_format_1_still_loads() -> None:
    """``tests/data/neural_ode_format1.skn`` was written by skneuralode 0.1.0 (format 1)
    with :func:`write_reference_file`; every later release must load it and predict the
    same. Never regenerate it to make this pass: write a format migration instead."""
    loaded = load(REFERENCE_FILE)
    assert isinstance(loaded, NeuralODERegressor)
    t = np.linspace(0.0, 5.0, 30)
    np.testing.assert_allclose(loaded.predict(t), np.load(REFERENCE_PREDICTIONS), rtol=1e-10)


def write_reference_file() -> None:  # pragma: no cover (run once, by hand)
    """Write the reference file of the current format version and its predictions."""
    t, y = oscillator()
    estimator = NeuralODERegressor(
        hidden_layer_sizes=(6,), max_iter=60, shooting=False, random_state=0, device="cpu"
    ).fit(t, y)
    REFERENCE_FILE.parent.mkdir(exist_ok=True)
    estimator.save(REFERENCE_FILE)
    np.save(REFERENCE_PREDICTIONS, estimator.predict(np.linspace(0.0, 5.0, 30)))


def test_docstring_examples_run() -> None:
    import doctest

    from skneuralode import _base, _persistence

    for module in (_persistence, _base):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
        assert result.failed == 0, module.__name__
    assert UniversalODERegressor.save is NeuralODERegressor.save
