"""One run of a many-run recipe (`tickets find`, `compare`) trained in a fresh process.

A process that trains run after run keeps what each run left behind: oneDNN's kernel cache grows with
every new batch length and glibc's heap fragments, so a 22-run sweep process held 14-15 GB and its late
runs took 12.5 minutes where its early ones took 7-9 (speed.md). A child process per run gives all of it
back when the run ends. The run is the same either way (it seeds everything it draws, and a test holds a
sweep's scores equal in and out of a child); the child costs the seconds it takes to import torch.

Stop signals reach the child: SIGTERM or SIGINT to this process is passed on, the child saves its
checkpoint and stops, and its TrainingInterrupted is raised here, as if the run had trained in this process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from transformers.utils import logging as hf_logging

from .config import Config
from .distributed import launched_size
from .rundir import finished_results
from .train import RunResult, TrainingInterrupted, train

PR_SET_PDEATHSIG = 1  # prctl option, linux/prctl.h


class RunProcessDied(RuntimeError):
    """The process training a run died without a word (killed, out of memory); its checkpoints stay."""


def train_run(cfg: Config, progress: bool = True) -> RunResult:
    """`train(cfg)`, in a fresh process when `train.process_per_run` is set (never under torchrun: its
    ranks share one process group for the whole command)."""
    if not cfg.train.process_per_run or launched_size() > 1 or finished_results(Path(cfg.output_dir)):
        return train(cfg, progress)  # a finished run is only read: not worth a process
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_train_and_send, args=(cfg, progress, send, os.getpid(), Console.of_this_process()))
    with _ForwardStopSignals() as forward:
        child.start()
        forward.to(child.pid)
        send.close()  # the child holds the only sending end: its death ends `recv` with EOFError
        try:
            outcome = receive.recv()
        except EOFError:
            outcome = None
        child.join()
    if isinstance(outcome, BaseException):
        raise outcome
    if outcome is None:
        if forward.forwarded:
            raise TrainingInterrupted(f"stopped while the run in {cfg.output_dir} was starting")
        raise RunProcessDied(f"the process training {cfg.output_dir} died (exit code {child.exitcode}, e.g. out of "
                           "memory); rerun the same command to resume from its last checkpoint")
    return outcome


def _train_and_send(cfg: Config, progress: bool, send: Connection, parent: int, console: Console) -> None:
    """The child: train, then send the RunResult or the exception (its traceback as a note) back."""
    try:
        _stop_when_parent_dies(parent)
        console.apply()
        outcome: object = train(cfg, progress)
    except BaseException as err:  # noqa: BLE001 - every failure is the parent's to raise
        err.__notes__ = [*getattr(err, "__notes__", []), f"in the run's process:\n{traceback.format_exc()}"]
        outcome = err
    try:
        send.send(outcome)
    except Exception:  # an exception that does not pickle: its text still reaches the parent
        send.send(RuntimeError(f"{type(outcome).__name__}: {outcome}\n{traceback.format_exc()}"))
    send.close()


def _stop_when_parent_dies(parent: int) -> None:
    """Linux: SIGTERM this process when its parent dies (the child saves and stops instead of training
    on, orphaned, holding the run's lock); elsewhere nothing."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass(frozen=True)
class Console:
    """What this process prints (the CLI's -v and --quiet: logger levels, transformers' progress bars),
    for the run's process to print the same."""

    levels: dict[str, int]
    hf_progress_bars: bool

    @classmethod
    def of_this_process(cls) -> Console:
        loggers = {name: logger.level for name, logger in logging.root.manager.loggerDict.items()
                   if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET}
        return cls({"": logging.root.level, **loggers}, hf_logging.is_progress_bar_enabled())

    def apply(self) -> None:
        logging.basicConfig(level=self.levels[""], format="%(message)s")
        for name, level in self.levels.items():
            logging.getLogger(name or None).setLevel(level)
        if not self.hf_progress_bars:
            hf_logging.disable_progress_bar()


class _ForwardStopSignals:
    """While a child trains, SIGINT and SIGTERM to this process are passed on to it (it saves and stops);
    outside the main thread signals stay as they are."""

    def __init__(self):
        self.pid: int | None = None
        self.forwarded = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> _ForwardStopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._forward)
            except ValueError:
                pass
        return self

    def to(self, pid: int) -> None:
        """Forward to `pid` from now on, and a stop that arrived while it was starting, now."""
        self.pid = pid
        if self.forwarded:
            os.kill(pid, signal.SIGTERM)

    def _forward(self, signum, frame) -> None:
        self.forwarded = True
        if self.pid is not None:
            os.kill(self.pid, signum)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
