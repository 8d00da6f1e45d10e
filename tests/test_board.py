"""Figures render without pyplot and without switching the process's matplotlib backend."""

import os
import subprocess
import sys

SCRIPT = """
import sys
from pathlib import Path
import matplotlib
before = matplotlib.get_backend()
from mtl_tickets import board
board.save_figure(board.heatmap_figure([[1.0, 0.5], [0.5, 1.0]], ["rte", "stsb"], "Jaccard"), Path(sys.argv[1]))
print(before, matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""


def test_board_renders_without_touching_the_global_backend(tmp_path):
    png = tmp_path / "heatmap.png"
    env = {**os.environ, "MPLBACKEND": "svg"}  # a user's choice that a global switch to Agg would overwrite
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(png)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["svg", "svg", "False"]
    assert png.read_bytes().startswith(b"\x89PNG")
