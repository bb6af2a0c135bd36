"""``python -m bench``: run every benchmark and print the figures (see bench/README.md)."""

from __future__ import annotations


def main() -> None:
    """Run all benchmarks in turn."""
    print("no benchmarks yet")


if __name__ == "__main__":
    main()
