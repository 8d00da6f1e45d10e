"""Re-open a finished run: evaluate its weights on the dev sets, or write GLUE test predictions."""

from __future__ import annotations

from pathlib import Path

from . import checkpoint, registry
from .build import build_model, build_sharing, load_tickets, trainable_specs
from .config import Config, load_config
from .data import load_task
from .encoders import load_tokenizer
from .evaluation import evaluate, predict, write_submission
from .model import MultiTaskModel
from .schema import ConfigError


def load_run(run_dir: str | Path, glue_dir: str | None = None, weights: str = "best") -> tuple[Config, MultiTaskModel]:
    """The run's resolved config and its model with the chosen weights loaded, gates included (its
    tickets, or the adaptive scores, which are weights)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml); give the --output-dir of a train run")
    overrides = [f"data.glue_dir={glue_dir}"] if glue_dir else []
    cfg = load_config(run_dir / "config.yaml", overrides, saved_run=True)
    model = build_model(cfg, trainable_specs(cfg))
    build_sharing(cfg, model, load_tickets(run_dir / "tickets.json", model).tickets if cfg.sharing != "full" else {})
    if weights == "best":
        path = run_dir / "best" / "model.safetensors"
    else:
        last = checkpoint.latest(run_dir / "checkpoints")
        path = last / "model.safetensors" if last else run_dir / "missing"
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no {weights} weights ({path}); {missing_weights_hint(cfg, run_dir, weights)}")
    checkpoint.load_weights(model, path)
    return cfg, model.eval()


def missing_weights_hint(cfg: Config, run_dir: Path, weights: str) -> str:
    if weights == "best" and not cfg.train.save_best:
        return "it ran with train.save_best off (as a ticket sweep's cells other than its scored full model)"
    if weights == "last" and (run_dir / "results.json").is_file():
        return "a finished run drops its checkpoints unless train.keep_checkpoints is on; use --weights best"
    return "train it first"


def evaluate_run(run_dir: str | Path, glue_dir: str | None = None, weights: str = "best") -> dict[str, dict[str, dict[str, float]]]:
    """Dev metrics of a run's best (or last) weights through its gates: task -> split -> metric -> value."""
    run_dir = Path(run_dir)
    cfg, model = load_run(run_dir, glue_dir, weights)
    tokenizer = load_tokenizer(cfg.model.name)
    return {
        name: evaluate(model, load_task(spec, tokenizer, cfg.data), cfg.train.eval_batch_size)
        for name, spec in model.specs.items()
    }


def format_evaluation(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """`evaluate_run`'s metrics, one line per task and dev split."""
    return "\n".join(f"{task:8} {split:22} " + "  ".join(f"{m} {v:.2f}" for m, v in metrics.items())
                     for task, splits in results.items() for split, metrics in splits.items())


def predict_run(run_dir: str | Path, out_dir: str | Path | None = None, glue_dir: str | None = None) -> list[Path]:
    """GLUE submission files for every task of the run, plus prediction-only sets (AX) it can serve."""
    run_dir = Path(run_dir)
    cfg, model = load_run(run_dir, glue_dir)
    tokenizer = load_tokenizer(cfg.model.name)
    out_dir = Path(out_dir or run_dir / "predictions")
    borrowers = [s for s in registry.all_tasks().values() if s.predict_with in model.specs]
    written = []
    for spec in [*model.specs.values(), *borrowers]:
        head = spec.predict_with or spec.name
        task = load_task(spec, tokenizer, cfg.data, with_test=True)
        test_splits = list(spec.tsv.test if spec.tsv and cfg.data.resolved_glue_dir() else spec.hub.test)
        for split, data in task.test.items():
            pred = predict(model, data, head, cfg.train.eval_batch_size)
            written.append(write_submission(spec, test_splits.index(split), pred, out_dir))
    return written
