"""The embedded OpenAI-compatible LLM simulator: vLLM engine model and hosted-API model.

Run it with ``harness sim`` / ``python -m harness.sim``; start it from Python with
:class:`harness.sim.process.SimProcess`. Parameters: :mod:`harness.sim.params`.
"""
