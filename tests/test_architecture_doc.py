"""docs/architecture.md stays true: the files it names exist, every module is on its map, and every citation of one of
its sections elsewhere in the repository names a section it has."""
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
PATH_RE = re.compile(r"\b((?:lstmcore|variants|tests|examples|docs|benchmarks)/[\w./-]*[\w/])")
CITATION_RE = re.compile(r"architecture\.md`?\)?[ ,(]*(?:section|§)\s*(\d+)")


def _tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return out.split()


def test_every_path_it_names_exists():
    text = DOC.read_text(encoding="utf-8")
    missing = sorted({p for p in PATH_RE.findall(text) if not (ROOT / p.rstrip("/")).exists()})
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"


def test_every_module_is_on_the_map():
    text = DOC.read_text(encoding="utf-8")
    modules = [f for f in _tracked_files() if f.startswith("lstmcore/") and f.endswith((".py", ".pyx"))
               and not f.endswith("__init__.py") and not f.endswith("__main__.py")]
    absent = [m for m in modules if Path(m).stem.lstrip("_") not in text]
    assert not absent, f"modules missing from docs/architecture.md: {absent}"


def test_cited_sections_exist():
    sections = {int(n) for n in re.findall(r"^## (\d+)\. ", DOC.read_text(encoding="utf-8"), flags=re.M)}
    cited = {}
    for name in _tracked_files():
        path = ROOT / name
        if path.suffix not in (".py", ".md", ".toml", ".pyx", ".txt") or path == DOC or not path.exists():
            continue
        for number in CITATION_RE.findall(path.read_text(encoding="utf-8", errors="replace")):
            cited.setdefault(int(number), []).append(name)
    assert cited, "nothing cites docs/architecture.md by section (the pattern is out of date)"
    wrong = {n: files for n, files in cited.items() if n not in sections}
    assert not wrong, f"citations of sections docs/architecture.md does not have: {wrong}"
