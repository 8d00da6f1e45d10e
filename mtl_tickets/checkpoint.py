"""Resumable checkpoints, written atomically, loaded without unpickling arbitrary objects.

A checkpoint is a folder `checkpoints/step-NNNNNNN/` with the weights (safetensors), the optimizer,
scheduler and RNG state (`torch.load(weights_only=True)`) and the loop state (JSON). It is written
under a temporary name and renamed when complete; only then does `checkpoints/latest` (replaced
atomically) point to it, so a write killed half-way never replaces the last good checkpoint.
The two newest are kept: a file damaged after it was written (a bad disk, a copy cut short) costs
the steps since the one before, not the run. Peak disk stays at two, as the older ones are dropped
before a new one is written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .schema import ConfigError

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Everything the loop needs to continue exactly, besides weights and optimizer."""

    step: int = 0
    cursors: dict[str, list[int]] = field(default_factory=dict)  # task -> [pass, batches taken in it]
    best_score: float | None = None
    best_step: int | None = None
    history: list[dict] = field(default_factory=list)  # one record per evaluation
    task_steps: dict[str, int] = field(default_factory=dict)  # steps each task has trained (the realised mix)
    sampler: dict = field(default_factory=dict)  # a dynamic scheduler's state
    skipped_steps: list[dict] = field(default_factory=list)  # updates skipped for a non-finite loss
    seconds: float = 0.0  # wall time of the training loop (steps, evaluations, checkpoints), over all sessions


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    _fsync_write(tmp, text.encode("utf-8"))
    os.replace(tmp, path)


def save_weights(model: nn.Module, path: Path) -> None:
    """Weights as safetensors, atomically."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)


def load_weights(model: nn.Module, path: Path) -> None:
    try:
        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for truncated files
        raise ConfigError(f"{path}: not a readable safetensors file ({err})") from None
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"{path}: weights do not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "was it written by a run with another model or task list?"
        )


class StorageError(RuntimeError):
    """A checkpoint or result could not be written (full disk, lost permission); nothing was replaced."""


def bytes_needed(model: nn.Module) -> int:
    """Disk a run needs at its peak: a checkpoint being written beside the last one (weights and two
    Adam moments each), plus the best weights."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return 2 * 3 * weights + weights


def check_free_space(folder: Path, model: nn.Module) -> None:
    free = shutil.disk_usage(folder).free
    need = bytes_needed(model)
    if free < need:
        raise StorageError(
            f"{folder} has {free / 2**20:.0f} MiB free, the run needs about {need / 2**20:.0f} MiB for its "
            "checkpoints; free some space or choose another --output-dir"
        )


def save(folder: Path, model: nn.Module, optimizer, scheduler, state: TrainState) -> Path:
    """Write a complete checkpoint, then point `latest` at it and drop older ones. A failed write
    leaves the previous checkpoint as the latest and raises StorageError."""
    final = folder / f"step-{state.step:07d}"
    tmp = folder / f".tmp-step-{state.step:07d}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        drop_all_but_newest_before(folder, state.step)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_weights(model, tmp / "model.safetensors")
        trainer = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), **rng_state()}
        torch.save(trainer, tmp / "trainer.pt")
        _fsync_write(tmp / "state.json", json.dumps(asdict(state)).encode())
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        previous = (folder / "latest").read_text().strip() if (folder / "latest").is_file() else "none yet"
        raise StorageError(f"could not write the checkpoint of step {state.step} in {folder} ({err}); "
                           f"the last good checkpoint ({previous}) is intact: free space and rerun to resume") from None
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    atomic_write_text(folder / "latest", final.name)
    return final


def drop_all_but_newest_before(folder: Path, step: int) -> None:
    """Make room for the checkpoint of `step`: keep only the newest one before it. Later ones are
    left over from a damaged checkpoint that resuming passed over."""
    keep = next((p for p in complete(folder) if p.name < f"step-{step:07d}"), None)
    for old in complete(folder):
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def complete(folder: Path) -> list[Path]:
    """The complete checkpoints in `folder`, newest first (a folder gets its `step-` name only when complete)."""
    return sorted(folder.glob("step-*"), reverse=True)


def rng_state() -> dict:
    """The CPU generator's state and, on a GPU machine, every CUDA generator's: what dropout draws next."""
    return {"rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(saved: dict) -> None:
    """Restore `rng_state()`. CUDA states restore on as many devices as both machines have: a checkpoint
    written on the CPU resumes on a GPU machine (its CUDA generators stay as seeded) and vice versa."""
    torch.set_rng_state(saved["rng"])
    if torch.cuda.is_available():
        for device, state in enumerate(saved.get("cuda_rng", [])[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, device)


def latest(folder: Path) -> Path | None:
    pointer = folder / "latest"
    if not pointer.is_file():
        return None
    path = folder / pointer.read_text(encoding="utf-8").strip()
    if not path.is_dir():
        raise ConfigError(f"{pointer} points to {path.name}, which is missing; delete {folder} to start over")
    return path


def restore(path: Path, model: nn.Module, optimizer, scheduler) -> TrainState:
    """Load a checkpoint folder written by `save` into the given objects."""
    load_weights(model, path / "model.safetensors")
    try:
        trainer = torch.load(path / "trainer.pt", weights_only=True)
        optimizer.load_state_dict(trainer["optimizer"])
        scheduler.load_state_dict(trainer["scheduler"])
        set_rng_state(trainer)
        state = TrainState(**json.loads((path / "state.json").read_text(encoding="utf-8")))
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, EOFError) as err:
        raise ConfigError(f"{path}: checkpoint is damaged or from another run ({type(err).__name__}: {err})") from None
    return state


def restore_newest(folder: Path, model: nn.Module, optimizer, scheduler) -> tuple[Path, TrainState] | None:
    """Restore the newest intact checkpoint in `folder` (None: there is none yet). A damaged newer one
    is passed over with a warning naming it and the one used."""
    errors = {}
    for path in complete(folder):
        try:
            state = restore(path, model, optimizer, scheduler)
        except ConfigError as err:
            errors[path] = err
            continue
        for damaged, err in errors.items():
            log.warning("checkpoint %s is damaged (%s); resuming from %s, the newest intact one", damaged, err, path.name)
        return path, state
    if errors:
        raise ConfigError(f"no checkpoint in {folder} can be resumed (the newest: {next(iter(errors.values()))}); "
                          f"delete {folder} to start over")
    return None
