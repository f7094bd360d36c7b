"""Command line entry point (placeholder, filled in by the core)."""


def main(argv: list[str] | None = None) -> int:
    return 0
