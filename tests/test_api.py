"""The public API: a light import, every exported name, and the README's Python example run as written."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import mtl_tickets as mt

README = Path(__file__).resolve().parents[1] / "README.md"
SETTINGS = 'model, glue_dir, out = "minilm-l6", "../shared/data/glue", "runs/api"'


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_import_and_listing_tasks_do_not_import_torch():
    code = ("import sys, mtl_tickets\n"
            "from mtl_tickets.cli import main\n"
            "print(mtl_tickets.__version__, dir(mtl_tickets))\n"
            "main(['tasks'], standalone_mode=False)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "train_model" in result.stdout and "rte" in result.stdout


def test_every_public_name_resolves_and_is_listed():
    assert mt.__version__ and set(mt.__all__) <= set(dir(mt))
    for name in mt.__all__:
        assert getattr(mt, name) is not None, name
    assert mt.train_model is sys.modules["mtl_tickets.train"].train  # not the module of the same name
    with pytest.raises(AttributeError, match="no attribute 'trian_model'"):
        mt.trian_model  # noqa: B018


def readme_example() -> str:
    match = re.search(r"## Python API\n.*?```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert match, "README.md has no python block under '## Python API'"
    return match.group(1)


def test_readme_python_example_runs(tiny_model_dir, glue_slice, tmp_path, monkeypatch):
    code = readme_example()
    assert code.count(SETTINGS) == 1, "the example's first settings line changed; update SETTINGS here"
    monkeypatch.setenv("MTL_TICKETS_CACHE", str(tmp_path / "cache"))
    settings = f"model, glue_dir, out = {str(tiny_model_dir)!r}, {str(glue_slice)!r}, {str(tmp_path / 'api')!r}"
    namespace: dict = {}
    exec(compile(code.replace(SETTINGS, settings), str(README), "exec"), namespace)
    assert set(namespace["tickets"].tickets) == {"rte", "mrpc"}
    assert namespace["run"].results["complete"] and namespace["pruned"].task == "rte"
    assert (tmp_path / "api" / "rte-pruned" / "model.safetensors").is_file()
