"""``python -m bench [NAME ...]``: run every ``bench/*_bench.py`` that has a ``main()`` (bench/README.md).

Each benchmark runs in a process of its own (it moves itself into a private network namespace and
cleans up what it started), one after the other. ``NAME`` selects some: ``core`` or ``core_bench``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIMEOUT = 3600.0  # one benchmark module, seconds (the VM ones take 20-40 min under TCG)


def has_main(path: Path) -> bool:
    """Whether the module defines a top-level ``main`` (read, not imported)."""
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            return True
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "main" for t in node.targets
        ):
            return True
    return False


def discover(selected: list[str]) -> list[str]:
    """Module names (``core_bench``, ...) to run, sorted, filtered by ``selected`` when given."""
    names = [p.stem for p in sorted(HERE.glob("*_bench.py")) if has_main(p)]
    if not selected:
        return names
    wanted = {s.removesuffix(".py").removesuffix("_bench") for s in selected}
    unknown = wanted - {n.removesuffix("_bench") for n in names}
    if unknown:
        raise SystemExit(f"bench: no benchmark named {', '.join(sorted(unknown))}; have: {', '.join(names)}")
    return [n for n in names if n.removesuffix("_bench") in wanted]


def run_one(name: str) -> int:
    """Run ``bench.<name>.main()`` in a child process; its exit code (main's int result, else 0)."""
    code = (
        "import sys\n"
        f"import bench.{name} as module\n"
        "result = module.main()\n"
        "sys.exit(result if isinstance(result, int) else 0)\n"
    )
    try:
        return subprocess.run([sys.executable, "-c", code], cwd=HERE.parent, timeout=TIMEOUT).returncode
    except subprocess.TimeoutExpired:
        print(f"bench: {name} did not finish within {TIMEOUT:.0f} s", file=sys.stderr)
        return 124


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks in turn; non-zero when any of them exited non-zero."""
    names = discover(sys.argv[1:] if argv is None else argv)
    if not names:
        print("bench: no bench/*_bench.py with a main()")
        return 1
    results = {}
    for name in names:
        print(f"\n######## {name} ########", flush=True)
        started = time.monotonic()
        results[name] = run_one(name)
        print(f"######## {name}: exit {results[name]} after {time.monotonic() - started:.0f} s", flush=True)
    failed = [f"{name} (exit {code})" for name, code in results.items() if code != 0]
    print(
        f"\nbench: {len(names)} benchmark(s) run, {len(names) - len(failed)} exited 0"
        + (
            f"; non-zero: {', '.join(failed)} (a failure or a missed target: see its output)"
            if failed
            else ""
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
