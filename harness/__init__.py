"""Side-by-side benchmark and canary harness for hosted LLM APIs vs self-hosted vLLM."""

__version__ = "0.1.0"
