"""Functions over 60 lines, and a ratchet so that their number only goes down (#19).

`make check` runs `python tests/contracts/function_length.py`: it lists every function (methods
and nested functions included) longer than `LIMIT` lines in the project's code, migrations left
out, and fails when one is not in `long_functions.txt` or has grown past its recorded length.
It also fails on a recorded function that is now short or gone, so that the list is kept exact:
shorten a function, then delete its line. `--write` rewrites the list from the tree.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

LIMIT = 60
ROOT = Path(__file__).resolve().parents[2]
BASELINE = Path(__file__).with_name("long_functions.txt")
ROOTS = ("libs", "services", "tests", "bench")
SKIPPED_PARTS = {"migrations", ".venv", ".venv-lock", "__pycache__", "node_modules"}


def python_files() -> Iterator[Path]:
    """The project's Python files, migrations and environments left out."""
    for top in ROOTS:
        for path in sorted((ROOT / top).rglob("*.py")):
            if not SKIPPED_PARTS & set(path.relative_to(ROOT).parts):
                yield path


def long_functions(path: Path, root: Path = ROOT, limit: int = LIMIT) -> Iterator[tuple[str, int]]:
    """(`path::qualified.name`, lines) of every function in `path` longer than `limit` lines."""
    tree = ast.parse(path.read_text(), filename=str(path))
    where = path.relative_to(root).as_posix()

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lines = (child.end_lineno or child.lineno) - child.lineno + 1
                    if lines > limit:
                        yield f"{where}::{name}", lines
                yield from visit(child, f"{name}.")
            else:
                yield from visit(child, prefix)

    yield from visit(tree, "")


def measure() -> dict[str, int]:
    """Every long function in the tree and its length."""
    return {name: lines for path in python_files() for name, lines in long_functions(path)}


def read_baseline() -> dict[str, int]:
    """The recorded long functions (`lines path::name` per line; `#` starts a comment)."""
    recorded: dict[str, int] = {}
    for line in BASELINE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines, name = line.split(maxsplit=1)
            recorded[name] = int(lines)
    return recorded


def write_baseline(found: dict[str, int]) -> None:
    """Record `found`, longest first."""
    header = (
        f"# Functions over {LIMIT} lines that predate the check (tests/contracts/"
        "function_length.py).\n# Shorten one, then delete its line; never add one.\n"
    )
    rows = sorted(found.items(), key=lambda item: (-item[1], item[0]))
    BASELINE.write_text(header + "".join(f"{lines} {name}\n" for name, lines in rows))


def problems(found: dict[str, int], recorded: dict[str, int]) -> list[str]:
    """What breaks the ratchet: new or grown long functions, and stale records."""
    out = []
    for name, lines in sorted(found.items()):
        if name not in recorded:
            out.append(f"{name}: {lines} lines (limit {LIMIT}): split it into named steps")
        elif lines > recorded[name]:
            out.append(f"{name}: grew from {recorded[name]} to {lines} lines: split it")
    for name in sorted(recorded.keys() - found.keys()):
        out.append(
            f"{name}: now within {LIMIT} lines or gone: delete its line from {BASELINE.name}"
        )
    return out


def main(argv: list[str]) -> int:
    """Check the tree against the record (or rewrite it with `--write`)."""
    found = measure()
    if argv[1:] == ["--write"]:
        write_baseline(found)
        sys.stdout.write(f"{len(found)} functions over {LIMIT} lines recorded in {BASELINE}\n")
        return 0
    if argv[1:]:
        sys.stderr.write(f"usage: {argv[0]} [--write]\n")
        return 2
    failures = problems(found, read_baseline())
    sys.stderr.writelines(f"{line}\n" for line in failures)
    sys.stdout.write(f"{len(found)} functions over {LIMIT} lines ({BASELINE.name} lists them)\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
