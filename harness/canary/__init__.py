"""The month-long canary: experiment clock, daily analysis, drift detection, daily verdicts.

Modules: :mod:`~harness.canary.clock` (the experiment clock and its days),
:mod:`~harness.canary.settings` (the ``canary`` config node), ``daily`` (per-day figures),
``drift`` (online CUSUM + offline change points, control-arm attribution), ``sequential``
(anytime-valid daily verdicts beside naive daily tests), ``section`` (summary.json keys) and
``report`` (plots, memo checklist).
"""
