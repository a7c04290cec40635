"""Rewrite the configuration reference section of README.md from the config model.

    .venv/bin/python scripts/update_readme_reference.py          # rewrite
    .venv/bin/python scripts/update_readme_reference.py --check  # exit 1 if README is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

from portway.config.reference import render_reference

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- reference:start -->", "<!-- reference:end -->"


def reference_section() -> str:
    lines = render_reference().strip().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]  # README has its own heading
    demoted = ["#" + line if line.startswith("## ") else line for line in lines]
    return "\n".join(demoted).strip()


def updated(readme: str) -> str:
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{reference_section()}\n{END}{tail}"


def main() -> int:
    current = README.read_text()
    fresh = updated(current)
    if "--check" in sys.argv:
        if fresh != current:
            print("README.md's configuration reference is stale: run scripts/update_readme_reference.py")
            return 1
        return 0
    README.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
