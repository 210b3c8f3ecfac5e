"""The README's Layout section names files and folders that exist (issue 15: the
layout in the README matches the code; it once named `wiring.py` long after it
became `bootstrap.py`)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def layout_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Layout\n")
    end = readme.find("\n## ", start + 1)
    return readme[start:end if end != -1 else None]


def named_paths(section: str) -> list[str]:
    """Backticked names that look like files or folders (`x.py`, `x/`, `x/y.md`)."""
    names = re.findall(r"`([A-Za-z0-9_./<>-]+)`", section)
    return [n for n in names if "<" not in n and (n.endswith("/") or re.search(r"\.(py|md)$", n))]


def resolve(name: str, folders: list[str]) -> bool:
    """A bare file name is looked up in the folders the section names around it."""
    if (ROOT / name).exists():
        return True
    return any((ROOT / folder / name).exists() for folder in folders)


def test_every_file_and_folder_the_layout_names_exists() -> None:
    names = named_paths(layout_section())
    folders = [n for n in names if n.endswith("/")]
    missing = [n for n in names if not resolve(n, folders)]
    assert len(names) > 15, names  # the parse found the section's names
    assert not missing, f"README Layout names what does not exist: {missing}"


def test_every_top_level_code_folder_is_in_the_layout() -> None:
    names = set(named_paths(layout_section()))
    for folder in ("domain/", "projections/", "adapters/", "api/", "scheduler/", "tests/", "ops/", "docs/"):
        assert folder in names, f"{folder} is not described in the README's Layout"
