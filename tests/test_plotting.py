"""Feedback while training (progress bars, history, callbacks) and the plot helpers,
rendered to PNG with matplotlib's Agg backend."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn_helpers import (  # noqa: F401 (one_torch_thread is an autouse fixture)
    fast_neural,
    fast_universal,
    one_torch_thread,
    oscillator,
    oscillator_family,
)

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from skneuralode import UniversalODERegressor, plotting  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures() -> Any:
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def fitted() -> dict[str, Any]:
    t, y = oscillator()
    grids, states = oscillator_family(n_traj=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "t": t,
            "y": y,
            "one": fast_neural(shooting=True, max_iter=40).fit(t, y),
            "universal": fast_universal().fit(t, y),
            "grids": grids,
            "states": states,
            "several": fast_neural().fit(grids, states),
        }


def _render(figure: Any, path: Path) -> int:
    figure.savefig(path, dpi=60)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path.stat().st_size


# ------------------------------------------------------------------------- feedback
def test_verbose_shows_a_progress_bar_per_stage_with_loss_and_eta(
    capsys: pytest.CaptureFixture[str],
) -> None:
    t, y = oscillator()
    fast_neural(verbose=1, shooting=True, max_iter=20).fit(t, y)
    err = capsys.readouterr().err
    for stage in ("collocation", "shooting"):
        assert stage in err
    assert "loss=" in err
    assert "20/20" in err and "<" in err  # tqdm's "elapsed<remaining" (the ETA)
    fast_neural(verbose=0).fit(t, y)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_history_is_complete(fitted: dict[str, Any]) -> None:
    estimator = fitted["one"]
    history = estimator.history_
    assert len(history) == estimator.n_iter_ == sum(r.n_iter for r in estimator.stage_results_)
    assert all(set(record) >= {"stage", "iteration", "loss", "seconds"} for record in history)
    for result in estimator.stage_results_:
        iterations = [r["iteration"] for r in history if r["stage"] == result.stage]
        assert iterations == list(range(result.n_iter))
    seconds = [record["seconds"] for record in history]
    assert seconds == sorted(seconds) and seconds[0] >= 0


def test_callbacks_see_every_record_and_can_stop_training() -> None:
    t, y = oscillator()
    seen: list[dict[str, Any]] = []

    def stop_after_25(record: dict[str, Any]) -> bool:
        seen.append(record)
        return len(seen) >= 25

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = fast_neural(callbacks=[stop_after_25]).fit(t, y)
    result = estimator.stage_results_[0]
    assert result.status == "stopped" and result.n_iter < estimator.max_iter
    assert seen == estimator.history_


# ---------------------------------------------------------------------------- plots
def test_plot_fit_one_panel_per_state(fitted: dict[str, Any], tmp_path: Path) -> None:
    axes = plotting.plot_fit(fitted["one"], fitted["t"], fitted["y"], state_names=["x", "v"])
    assert len(axes) == 2 and [ax.get_ylabel() for ax in axes] == ["x", "v"]
    data_line, fit_line = axes[0].lines[:2]
    np.testing.assert_array_equal(data_line.get_ydata(), fitted["y"][:, 0])
    assert len(fit_line.get_xdata()) == 200
    assert _render(axes[0].figure, tmp_path / "fit.png") > 5_000


def test_plot_fit_of_several_trajectories_and_of_a_ude(
    fitted: dict[str, Any], tmp_path: Path
) -> None:
    axes = plotting.plot_fit(fitted["several"], fitted["grids"], fitted["states"])
    assert len(axes[1].lines) == 2 * 3  # data and fit of each trajectory
    _render(axes[0].figure, tmp_path / "several.png")
    axes = plotting.plot_fit(fitted["universal"], fitted["t"], fitted["y"])
    _render(axes[0].figure, tmp_path / "ude.png")


def test_phase_portrait_with_learned_field(fitted: dict[str, Any], tmp_path: Path) -> None:
    ax = plotting.plot_phase_portrait(fitted["several"], fitted["grids"], fitted["states"])
    assert ax.collections  # the streamlines of the field
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("y0", "y1")
    assert _render(ax.figure, tmp_path / "phase.png") > 5_000
    bare = plotting.plot_phase_portrait(fitted["one"], fitted["t"], fitted["y"], field=False)
    assert not bare.collections


def test_training_curve(fitted: dict[str, Any], tmp_path: Path) -> None:
    ax = plotting.plot_training_curve(fitted["one"])
    stages = {r.stage for r in fitted["one"].stage_results_ if r.n_iter}
    assert {line.get_label() for line in ax.lines} >= stages
    assert ax.get_yscale() == "log"
    _render(ax.figure, tmp_path / "curve.png")
    from_history = plotting.plot_training_curve(fitted["one"].history_, log=False)
    assert from_history.get_yscale() == "linear"


def test_vector_field_in_a_plane_and_for_one_state(fitted: dict[str, Any], tmp_path: Path) -> None:
    ax = plotting.plot_vector_field(fitted["universal"], bounds=[(-1, 1), (-2, 2)])
    assert ax.get_xlim() == (-1.0, 1.0) and ax.collections
    _render(ax.figure, tmp_path / "field.png")
    t = np.linspace(0, 2, 15)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one_state = fast_neural(max_iter=20).fit(t, np.exp(-t))
    line_ax = plotting.plot_vector_field(one_state)
    assert line_ax.get_ylabel() == "dy0/dt" and line_ax.lines
    _render(line_ax.figure, tmp_path / "field1.png")


def test_plots_reject_bad_arguments(fitted: dict[str, Any]) -> None:
    estimator, t, y = fitted["one"], fitted["t"], fitted["y"]
    with pytest.raises(NotFittedError):
        plotting.plot_fit(fast_neural(), t, y)
    with pytest.raises(NotFittedError):
        plotting.plot_training_curve(fast_neural())
    with pytest.raises(ValueError, match="state_names"):
        plotting.plot_fit(estimator, t, y, state_names=["only one"])
    with pytest.raises(ValueError, match="states must be two different"):
        plotting.plot_phase_portrait(estimator, t, y, states=(0, 0))
    with pytest.raises(ValueError, match="3 states"):
        plotting.plot_fit(estimator, t, np.c_[y, y[:, 0]])


def test_missing_matplotlib_says_which_extra_to_install(
    fitted: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"skneuralode\[plot\]"):
        plotting.plot_training_curve(fitted["one"])


def test_module_docstring_example_runs() -> None:
    import doctest

    assert doctest.testmod(plotting, optionflags=doctest.ELLIPSIS).failed == 0


def forced_decay(t: Any, y: Any, p: dict[str, Any], u: Any) -> Any:
    return -p["k"] * y + p["gain"] * u


def test_plot_fit_of_a_model_with_inputs_follows_the_inputs(tmp_path: Path) -> None:
    t = np.linspace(0.0, 4.0, 30)
    force = np.sin(2.0 * t)[:, None]
    # y' = -y + 2 sin(2t), y(0) = 0, solved exactly.
    y = (2.0 * (np.sin(2 * t) - 2 * np.cos(2 * t)) / 5 + 0.8 * np.exp(-t))[:, None]
    est = UniversalODERegressor(
        known=forced_decay, params={"k": 0.5, "gain": 1.0}, hidden_layer_sizes=(),
        random_state=0, device="cpu",
    ).fit(t, y, u=force)  # fmt: skip
    with pytest.raises(ValueError, match="pass the inputs"):
        plotting.plot_fit(est, t, y)
    axes = plotting.plot_fit(est, t, y, u=force, n_points=50)
    grid, curve = axes[0].lines[1].get_data()
    exact = 2.0 * (np.sin(2 * grid) - 2 * np.cos(2 * grid)) / 5 + 0.8 * np.exp(-grid)
    np.testing.assert_allclose(curve, exact, atol=0.05)  # between the samples, too
    zero = plotting.plot_fit(est, t, y, u=np.zeros_like(force), n_points=50)
    assert not np.allclose(zero[0].lines[1].get_data()[1], curve, atol=0.05)
    _render(axes[0].figure, tmp_path / "forced.png")
