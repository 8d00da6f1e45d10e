"""Dev-set evaluation through each task's own gates (`model.sharing`), and GLUE test-set submission files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import metrics, sliced
from .data import Encoded, TaskData, collate, eval_batches
from .model import MultiTaskModel
from .registry import TaskSpec


@torch.no_grad()
def predict(model: MultiTaskModel, data: Encoded, task: str, batch_size: int) -> np.ndarray:
    """Predictions in example order: class ids, or scores for regression; through the task's
    evaluation gates (binary and deterministic: its ticket, sliced or gated)."""
    was_training = model.training
    model.eval()
    out = np.zeros(len(data), dtype=np.float32 if model.specs[task].kind == "regression" else np.int64)
    device = next(model.parameters()).device
    with sliced.through(model.encoder, model.sharing.eval_gates(model.encoder, task)):
        for index in eval_batches(data.lengths, batch_size):
            batch = {k: v.to(device) for k, v in collate(data, index).items() if k != "labels"}
            out[index] = model.predictions(model(batch, task), task).float().cpu().numpy()
    model.train(was_training)
    return out


def evaluate(model: MultiTaskModel, task: TaskData, batch_size: int) -> dict[str, dict[str, float]]:
    """{dev split: {metric: value}} for one task."""
    results = {}
    for split, data in task.dev.items():
        pred = predict(model, data, task.spec.name, batch_size)
        results[split] = metrics.compute(task.spec.metrics, pred, data.labels)
    return results


def submission_label(spec: TaskSpec, value: float) -> str:
    return f"{min(5.0, max(0.0, float(value))):.3f}" if spec.kind == "regression" else spec.labels[int(value)]


def write_submission(spec: TaskSpec, test_index: int, pred: np.ndarray, out_dir: Path) -> Path:
    """`<out_dir>/<SUBMIT>.tsv` in the GLUE server's format: `index<TAB>prediction` per line.

    `test_index` is the position of the test split in the task's list (MNLI: 0 matched, 1 mismatched).
    """
    stem = spec.submit[test_index] if test_index < len(spec.submit) else f"{spec.name}-test{test_index}"
    path = out_dir / f"{stem}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["index\tprediction"] + [f"{i}\t{submission_label(spec, v)}" for i, v in enumerate(pred)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
