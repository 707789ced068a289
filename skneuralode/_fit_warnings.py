"""Warnings about how a fit ended: interrupted, diverged, not integrable, or poor."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from ._training import TrainingReport

_POOR_FIT_LOSS = 0.5  # scaled MSE above which the fit explains less than about half
_FLAT_RELATIVE_SPREAD = 1e-6  # a state whose spread is below this fraction of its level


def flat_states(states: np.ndarray) -> list[int]:
    """States of a (n_traj, n_times, n_states) batch that are constant up to tiny noise."""
    seen = ~np.isnan(states).all(axis=(0, 1))
    filled = np.where(seen, states, 0.0)  # hidden states are not flat: they are unseen
    level = np.abs(np.nanmean(filled, axis=(0, 1)))
    spread = np.nanstd(filled, axis=(0, 1))
    return np.flatnonzero(seen & (spread <= _FLAT_RELATIVE_SPREAD * level)).tolist()


#: What helps a poor fit of a model without a network (classical parameter estimation):
#: the misfit of a few parameters has local minima that a better start, known signs or
#: known initial states avoid; a network can only help if the physics is incomplete.
CLASSICAL_REMEDIES = (
    "starting values in params nearer the expected ones (or several starts)",
    "param_constraints (e.g. 'positive') where the signs are known",
    "known initial states (fit(..., y0=...))",
    "a network term (hidden_layer_sizes) if the physics may be incomplete",
)


def poor_fit_remedies(
    report: TrainingReport, shooting: bool | str, polish: bool, *, has_network: bool = True
) -> list[str]:
    """Settings worth changing after a poor fit.

    Multiple shooting first where it is off: a full-trajectory fit of oscillating data
    from a poor start ends in a local minimum that short segments avoid. The polish where
    it is off, more steps where a stage used all it had, then a wider network for a model
    with one (``has_network``), or what helps a classical fit (``CLASSICAL_REMEDIES``)
    for a model without.
    """
    remedies = []
    if shooting is False:
        remedies.append("shooting=True")
    if not polish:
        remedies.append("polish=True")
    if any(result.status == "max_iter" for result in report.results):
        remedies.append("a larger max_iter")
    remedies.extend(["a wider network"] if has_network else CLASSICAL_REMEDIES)
    return remedies


def warn_about_fit(
    report: TrainingReport,
    states: np.ndarray,
    shooting: bool | str,
    polish: bool,
    *,
    has_network: bool = True,
) -> None:
    """Warn (``ConvergenceWarning``) about how training ended, with what to try.

    Parameters
    ----------
    report : TrainingReport
        How the stages ended and the kept model's full-trajectory loss.
    states : ndarray of shape (n_traj, n_times, n_states)
        The training states, to name states that are constant up to noise.
    shooting, polish
        The estimator's settings of the same names, for the remedies of a poor fit.
    has_network : bool
        Whether the model has a network (the remedies of a poor fit differ without).
    """
    flat = flat_states(states)
    if report.interrupted_in is not None:
        warnings.warn(
            f"Training was interrupted (KeyboardInterrupt) in the {report.interrupted_in} "
            "stage; as on_interrupt='keep_best' asks, the best model so far was kept "
            f"(after {report.kept_after}, scaled trajectory MSE "
            f"{report.trajectory_loss:.3g}). Fit again with warm_start=True to continue.",
            ConvergenceWarning,
            stacklevel=3,
        )
    for result in report.results:
        if result.status == "diverged":
            remedy = result.remedy or "a smaller learning rate"
            warnings.warn(
                f"Training diverged: {result.message}. Try {remedy}; if the solver "
                "failed, a larger Solver(max_num_steps=...) or a fixed-step solver such as "
                "Solver('rk4', step_size=...).",
                ConvergenceWarning,
                stacklevel=3,
            )
        if result.status == "ended_early":
            warnings.warn(
                f"The {result.stage} stage ended early: {result.message}. Its start (the "
                "collocation fit) is kept where better. For stiff dynamics try shooting=False "
                "with polish=True, or a fixed-step solver with a small step_size "
                "(Solver('rk4', step_size=...)).",
                ConvergenceWarning,
                stacklevel=3,
            )
    if not math.isfinite(report.trajectory_loss):
        warnings.warn(
            "The fitted model could not be integrated over the data "
            f"({report.solver_failure}); predictions may be non-finite. The data may be "
            "stiff or blow up: try Solver('rk4', step_size=...), or a larger "
            "Solver(max_num_steps=...).",
            ConvergenceWarning,
            stacklevel=3,
        )
    elif report.trajectory_loss > _POOR_FIT_LOSS:
        flat_hint = (
            f" State(s) {flat} vary by less than {_FLAT_RELATIVE_SPREAD:g} of their level: "
            "constant up to noise, they leave little but noise to fit."
            if flat
            else ""
        )
        warnings.warn(
            f"The fit is poor (scaled trajectory MSE {report.trajectory_loss:.3g}, i.e. "
            f"R^2 about {1 - report.trajectory_loss:.2f} on the training data).{flat_hint} "
            f"Try {', '.join(poor_fit_remedies(report, shooting, polish, has_network=has_network))}"
            ", or check the data.",
            ConvergenceWarning,
            stacklevel=3,
        )


#: A fitted value below this fraction of its start's magnitude has collapsed toward 0:
#: under ``param_constraints="positive"`` (``p = p0 exp(raw)``) a parameter that the
#: misfit pushes to the boundary walks there without end (1e-90 seen on a glucose model);
#: a real small value is rarely a millionth of a sensible start.
COLLAPSE_FRACTION = 1e-6


def drifted_parameters(
    start: Mapping[str, float], fitted: Mapping[str, float], constraints: Mapping[str, object]
) -> dict[str, str]:
    """Physical parameters that crossed zero or collapsed toward it, with what happened.

    Parameters
    ----------
    start, fitted : mapping of str to float
        The starting values (``params``) and the fitted ones (``params_``).
    constraints : mapping of str to object
        The checked ``param_constraints`` ("positive" or a (low, high) pair, by name).

    Returns
    -------
    dict of str to str
        Parameter name -> what happened, in words; empty when nothing drifted.
    """
    drifted = {}
    for name, begin in start.items():
        end = fitted.get(name)
        if end is None or begin == 0.0 or not math.isfinite(end):
            continue
        if abs(end) < COLLAPSE_FRACTION * abs(begin):
            drifted[name] = f"{name} collapsed toward 0 ({end:.3g} from a start of {begin:.3g})"
        elif end * begin < 0.0 and name not in constraints:
            drifted[name] = f"{name} changed sign ({end:.3g} from a start of {begin:.3g})"
    return drifted


def warn_about_parameter_drift(
    start: Mapping[str, float], fitted: Mapping[str, float], constraints: Mapping[str, object]
) -> None:
    """Warn (``ConvergenceWarning``) about physical parameters that crossed zero or
    collapsed toward it (see :func:`drifted_parameters`), with what to do."""
    drifted = drifted_parameters(start, fitted, constraints)
    if not drifted:
        return
    names = ", ".join(drifted)
    collapsed = [name for name, what in drifted.items() if "collapsed" in what]
    advice = []
    if collapsed:
        advice.append(
            "a parameter pushed to 0 is either not needed by the data (check identifiability_ "
            "and consider fixed_params) or the fit followed a ridge away from a nearby "
            "optimum: fit again from a start nearer the expected values, bound it with "
            "param_constraints={name: (low, high)}, or give known initial states (y0)"
        )
    if len(collapsed) < len(drifted):
        advice.append(
            "where a parameter's sign is known, param_constraints='positive' (or a (low, "
            "high) pair) keeps it; if the sign was not known, check that the model's "
            "structure fits the data"
        )
    text = "; ".join(advice)
    warnings.warn(
        f"Physical parameter(s) {names} drifted during the fit: "
        f"{'; '.join(drifted.values())}. {text[0].upper()}{text[1:]}.",
        ConvergenceWarning,
        stacklevel=3,
    )
