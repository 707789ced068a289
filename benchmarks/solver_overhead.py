"""What a solver step costs against its bare arithmetic, on the small batches of a fit.

Shooting and polish on a few dozen points solve small batches (one trajectory, a few
dozen segments) of a small field, where an adaptive step's arithmetic takes microseconds
and the solver's own bookkeeping (Python per step: the Runge-Kutta tableau, the error
norm, the step-size controller, the dense-output interpolation, the step budget) may
dominate. This measures both, forward and backward (autograd through the solve, as a
training step does):

``solver``
    ``skneuralode._solve.solve`` (torchdiffeq dopri5 behind it, the package's default
    tolerances 1e-6 / 1e-8 in scaled units) of a batch of segments of the spiral field
    over 10 output times; milliseconds per step (attempts included).
``arithmetic``
    The limit: the six field evaluations of one dopri5 step (FSAL) on the same batch, the
    stage combinations and one backward pass through them, in a plain Python loop.

The field is ``NeuralODERegressor()``'s default network (2-64-tanh-64-tanh-2) on the
cubic spiral's scaled states, trained briefly so its dynamics are those of a fit. Batch
sizes 1 (a polish of one trajectory), 16 and 128 (shooting mini-batches), float64, one
thread, CPU (process) seconds so that a busy machine does not inflate them. Run
from the repository root::

    python benchmarks/solver_overhead.py
    python benchmarks/solver_overhead.py --batches 1 16 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment_summary

from skneuralode import NeuralODERegressor
from skneuralode._solve import SolverSettings, solve
from skneuralode.datasets import make_spiral

DOPRI5_EVALUATIONS_PER_STEP = 6  # seven stages, the first reused from the last step
SEGMENT_POINTS = 10


def trained_field() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A briefly trained default field, its scaled training states and times."""
    t, y = make_spiral(n_times=200)
    estimator = NeuralODERegressor(max_iter=200, shooting=False, polish=False, random_state=0)
    estimator.fit(t, y)
    model = estimator.module_
    scaling = model.scaling
    states = torch.as_tensor(scaling.scale_states(y))
    times = torch.as_tensor(scaling.scale_times(t))
    return model.field, states, times


def time_solver(
    field: torch.nn.Module, starts: torch.Tensor, grid: torch.Tensor, repeats: int
) -> tuple[float, int]:
    """Median seconds of a forward + backward solve, and its step count."""
    settings = SolverSettings()
    seconds, steps = [], 0
    for _ in range(repeats + 1):
        field.zero_grad()
        start = time.process_time()
        result = solve(field, starts, grid, settings, shared_grid=True)
        result.states.square().mean().backward()
        seconds.append(time.process_time() - start)
        steps = result.n_steps
    return statistics.median(seconds[1:]), steps


def time_arithmetic(field: torch.nn.Module, starts: torch.Tensor, repeats: int) -> float:
    """Median seconds of one step's bare arithmetic, forward and backward."""
    t = torch.zeros((), dtype=starts.dtype)
    h = 1e-2
    seconds = []
    for _ in range(repeats + 1):
        field.zero_grad()
        start = time.process_time()
        z = starts
        stages = [field(t, z)]
        for _ in range(DOPRI5_EVALUATIONS_PER_STEP - 1):
            z_stage = z + h * sum(stages) / len(stages)
            stages.append(field(t, z_stage))
        z = z + h * sum(stages) / len(stages)
        z.square().mean().backward()
        seconds.append(time.process_time() - start)
    return statistics.median(seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 16, 128])
    parser.add_argument("--repeats", type=int, default=9)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    field, states, times = trained_field()
    field = field.to(torch.float64)
    environment = environment_summary()
    print(f"skneuralode {environment['git_revision']} ({environment['skneuralode_sources']})")
    print("batch   solve ms   steps   ms/step   arithmetic ms/step   overhead")
    rng = np.random.default_rng(0)
    for batch in arguments.batches:
        rows = torch.as_tensor(rng.integers(0, states.shape[0] - SEGMENT_POINTS, size=batch))
        starts = states[rows].clone()
        grid = times[:SEGMENT_POINTS] - times[0]
        grid = grid.expand(batch, -1).contiguous()
        seconds, steps = time_solver(field, starts, grid, arguments.repeats)
        per_step = seconds / max(steps, 1)
        arithmetic = time_arithmetic(field, starts, arguments.repeats)
        print(
            f"{batch:5d} {1e3 * seconds:10.2f} {steps:7d} {1e3 * per_step:9.3f}"
            f" {1e3 * arithmetic:20.3f} {per_step / arithmetic:9.1f}x"
        )


if __name__ == "__main__":
    main()
