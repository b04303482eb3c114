"""Command-line entry points (placeholder until wired)."""


def main() -> None:  # pragma: no cover
    print("harness")
