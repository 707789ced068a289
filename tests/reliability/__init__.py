"""What skneuralode promises when things go wrong. Read these files as that list.

1. ``test_bad_input``: every malformed argument of ``fit``, ``predict``, ``score`` and
   ``vector_field`` (both estimators) and every bad hyper-parameter raises a
   ``ValueError``/``TypeError`` (``NotFittedError`` before ``fit``) from our own
   validation, with a message that names the argument, what was expected and what was
   received; the estimator it was thrown at is unharmed and predicts exactly as before.
   The data layer's own properties (random valid inputs round-trip, random invalid ones
   raise) are in ``tests/test_data_properties.py``.
2. ``test_hard_fits``: stiff data, data that blow up, data at 1e-8 and 1e8, ten noisy
   points, a near-constant series: the fit ends within a step budget, predictions over
   the training span are finite, a poor fit comes with a ``ConvergenceWarning`` saying
   what happened and what to try; extreme scales fit as well as unit scale.
3. ``test_recovery``: NaN losses, failed solves and step-size underflow restore the last
   good parameters, lower the step and go on; a stage that keeps failing ends
   "diverged" with a warning and a usable estimator.
4. ``test_nothing_lost``: an exception or ``KeyboardInterrupt`` during ``fit`` leaves the
   estimator unfitted or exactly as it was; ``on_interrupt="keep_best"`` keeps the best
   model found so far instead.
5. ``test_determinism``: the same ``random_state`` gives bit-identical results on the CPU
   across fits, processes and ``n_jobs``.
"""
