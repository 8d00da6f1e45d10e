"""The run directory: created or re-opened safely, its config compared on resume, finished runs reused.

A run directory holds the resolved `config.yaml`, `metrics.jsonl`, `tensorboard/`, `results.json`,
`best/` weights, resumable `checkpoints/` and, for ticket sharing, its own copy of `tickets.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

from .checkpoint import atomic_write_text
from .config import Config, save_config
from .schema import ConfigError, from_dict, load_yaml, to_dict

# May change between resumes: a step cap, the log interval, and which contenders and seeds a
# `compare` trains (each of its runs has one seed; adding seeds must not orphan the finished ones).
RESUME_NEUTRAL = {("train", "max_steps"), ("train", "log_every"), ("compare",)}


def prepare(cfg: Config, write: bool = True) -> Path:
    """Create (or re-open) the run directory; a different config there is refused, not overwritten."""
    out = Path(cfg.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{id(cfg)}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"output dir {out} is not writable ({err.strerror}); choose another --output-dir") from None
    saved = out / "config.yaml"
    if saved.is_file():
        differences = config_differences(with_defaults(load_yaml(saved) or {}), to_dict(cfg))
        if differences:
            raise ConfigError(
                f"{out} holds a run with another config ({'; '.join(differences[:3])}); "
                "rerun with the same settings to resume it, or choose a new --output-dir"
            )
    if write:
        save_config(cfg, saved)
    return out


def with_defaults(saved: dict) -> dict:
    """A saved config with the settings added since it was written filled in at their defaults, so a
    run from an older version resumes; one that no longer parses is compared as written."""
    try:
        return to_dict(from_dict(Config, saved, "saved config"))
    except ConfigError:
        return saved


def config_differences(old: dict, new: dict, prefix: tuple = ()) -> list[str]:
    found = []
    for key in sorted(set(old) | set(new)):
        path = (*prefix, key)
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += config_differences(a, b, path)
        elif a != b and not any(path[: len(n)] == n for n in RESUME_NEUTRAL):
            found.append(f"{'.'.join(path)}: {a!r} -> {b!r}")
    return found


def finished_results(out: Path) -> dict | None:
    """The results of a run that went through its whole schedule (not one cut short by max_steps)."""
    try:
        results = json.loads((out / "results.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return results if results.get("complete") else None


def drop_metrics_after(path: Path, step: int) -> None:
    """Forget logged metrics past a checkpoint: those steps are about to be replayed."""
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
        atomic_write_text(path, "".join(line + "\n" for line in kept))
