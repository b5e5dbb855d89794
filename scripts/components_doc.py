"""Regenerate docs/components.md, the reference of the built-in components (what `crs components` shows).

usage: .venv/bin/python scripts/components_doc.py [--check]

--check writes nothing and exits 1 when the file is not current (tests/test_components_reference.py
checks the same).  Only the built-in plugins are documented, so the file is the same on every machine
whatever else is installed; `crs components --markdown` prints the same reference for everything installed.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    from crs.component_reference import DOC_FILE, builtin_markdown
    from crs.io import atomic_write_text

    target = ROOT / DOC_FILE
    text = builtin_markdown()
    if "--check" in argv:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current != text:
            print(f"{DOC_FILE} is not current: run `python scripts/components_doc.py`", file=sys.stderr)
            return 1
        print(f"{DOC_FILE} is current")
        return 0
    atomic_write_text(target, text)
    print(f"wrote {target.relative_to(ROOT)} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
