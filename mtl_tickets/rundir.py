"""The run directory: created or re-opened safely, its config compared on resume, finished runs reused,
one training process at a time.

A run directory holds the resolved `config.yaml`, `metrics.jsonl`, `tensorboard/`, `results.json`,
`best/` weights, resumable `checkpoints/` (dropped when the run finishes, unless
`train.keep_checkpoints`), `.lock` and, for ticket sharing, its own copy of `tickets.json`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .checkpoint import atomic_write_text
from .config import Config, as_saved_run
from .schema import ConfigError, from_dict, load_yaml, to_dict

try:
    import fcntl
except ImportError:  # Windows: not a target; runs there are simply not guarded against a second process
    fcntl = None

# May change between resumes, as no number a run reports depends on them: a step cap, the log
# interval, what is kept on disk; how a fixed ticket is computed (`train.sliced`: its kept weight slices
# or gates on all weights agree within float tolerance; dropout draws differ, sliced.py; `train.pruned_copy`:
# checkpoints are full-size either way, pruned_copy.py); where freed memory goes (`train.keep_freed_memory`)
# and in which process a run trains (`train.process_per_run`); which contenders and seeds a `compare` trains
# (each of its runs has one seed; adding seeds must not orphan the finished ones); which cells a ticket sweep trains
# and how it picks among them; and where tokenized data is cached. The tickets settings that decide what
# a cell's ticket is (granularity, sparsity mode, scoring, random seed) are not neutral: a cell's ticket
# file is written once.
RESUME_NEUTRAL = {
    ("train", "max_steps"), ("train", "log_every"), ("train", "keep_checkpoints"), ("train", "save_best"),
    ("train", "sliced"), ("train", "pruned_copy"), ("train", "keep_freed_memory"),
    ("train", "process_per_run"), ("data", "cache_dir"), ("compare",),
    ("tickets", "confirm_seeds"), ("tickets", "select_on"), ("tickets", "kinds"), ("tickets", "sparsities"),
    ("tickets", "control_sparsities"),
}
# Paths: the same place written another way (`runs/x`, `./runs/x`, `/home/me/runs/x`) is the same setting.
PATHS = {("output_dir",), ("tickets_file",), ("data", "glue_dir"), ("model", "name")}


def prepare(cfg: Config) -> Path:
    """Create (or re-open) the run directory; a different config there is refused, not overwritten
    (the run writes its own once it holds the directory's lock)."""
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
    return out


def with_defaults(saved: dict) -> dict:
    """A saved config with the settings added since it was written filled in at their defaults (at the
    old behaviour where a default changed the numbers: `as_saved_run`), so a run from an older version
    resumes as it ran; one that no longer parses is compared as written."""
    saved = as_saved_run(saved)
    try:
        return to_dict(from_dict(Config, saved, "saved config"))
    except ConfigError:
        return saved


def config_differences(old: dict, new: dict, prefix: tuple = ()) -> list[str]:
    """The settings that differ between two configs (as `key.sub: old -> new`), less the neutral ones."""
    found = []
    for key in sorted(set(old) | set(new)):
        path = (*prefix, key)
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += config_differences(a, b, path)
        elif a != b and not any(path[: len(n)] == n for n in RESUME_NEUTRAL) \
                and not (path in PATHS and same_place(a, b)):
            found.append(f"{'.'.join(path)}: {a!r} -> {b!r}")
    return found


def same_place(a, b) -> bool:
    """Two path settings naming one place from the working directory (a relative path in a saved config
    was written from it: runs resume from where they started)."""
    if not (isinstance(a, str) and isinstance(b, str)):
        return False
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


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


class RunInUse(ConfigError):
    """Another live process is training in this run directory."""


class RunLock:
    """An OS lock on `<run dir>/.lock`, held while one process trains there; a second one is refused,
    naming the first's PID. The kernel releases it when the holder dies, however it dies (SIGKILL
    included), so a killed run never blocks its own resume."""

    def __init__(self, out: Path):
        self.path = out / ".lock"
        self._file = None

    def __enter__(self) -> RunLock:
        if fcntl is None:
            return self
        lock_file = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "unknown"
            lock_file.close()
            raise RunInUse(f"{self.path.parent} is in use by another process (PID {holder}); wait for it to "
                           "finish or stop it (it resumes from its checkpoint), or choose another --output-dir") from None
        lock_file.truncate(0)
        lock_file.write(f"{os.getpid()}\n")
        lock_file.flush()
        self._file = lock_file
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()  # closing the file releases the lock
            self._file = None
