"""Analysis stage: statistics over a run's request rows (latency, goodput, failures, throughput,
server metrics, arm comparisons, load sweeps). Pure functions of :class:`RunData`, which
:func:`harness.analysis.data.load_run` reads from a run directory.
"""
