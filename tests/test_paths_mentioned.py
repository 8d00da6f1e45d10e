"""Paths that code, configs and docs mention (`configs/quickstart.yaml`, `benchmarks/...`) exist:
a stale one sends a newcomer to a file that is not there."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MENTION = re.compile(r"\b(?:configs|tasks|benchmarks|tests|mtl_tickets)/[\w./-]*\w")
WHEEL_ONLY = {"mtl_tickets/tasks"}  # where a wheel puts tasks/ (pyproject.toml)
OUTPUTS = {"benchmarks/results/v2_grid"}  # written by the command that names it (benchmarks/protocol_grid.py)


def test_every_mentioned_repository_path_exists():
    sources = [p for pattern in ("*.md", "*.toml", "configs/*.yaml", "tasks/*.yaml", "mtl_tickets/*.py", "tests/*.py",
                                 "benchmarks/*.py") for p in ROOT.glob(pattern)]
    missing = {f"{source.relative_to(ROOT)}: {path}" for source in sources
               for path in MENTION.findall(source.read_text(encoding="utf-8"))
               if path not in WHEEL_ONLY | OUTPUTS and not (ROOT / path).exists()}
    assert not missing, sorted(missing)
