"""The heavy steps of a many-run recipe (`tickets find`, `compare`) each in a fresh process.

A process that trains run after run keeps what each run left behind: oneDNN's kernel cache grows with
every new batch length and glibc's heap fragments, so a 22-run sweep process held 14-15 GB and its late
runs took 12.5 minutes where its early ones took 7-9 (speed.md). A child process per run (and for the
importance pass) gives all of it back when the step ends. The numbers are the same either way (a run
seeds everything it draws; a test holds a sweep's scores equal in and out of children); a child costs the
seconds it takes to import torch.

Stop signals reach the child: SIGTERM or SIGINT to this process is passed on, the child saves its
checkpoint and stops, and its TrainingInterrupted is raised here, as if the run had trained in this
process. A child whose parent dies is sent SIGTERM (Linux), so no orphan trains on holding a run's lock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import pickle
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TypeVar

from transformers.utils import logging as hf_logging

from . import registry
from .config import Config
from .distributed import launched_size
from .rundir import finished_results
from .train import RunResult, StopOnSignal, TrainingInterrupted, train

PR_SET_PDEATHSIG = 1  # prctl option, linux/prctl.h
T = TypeVar("T")


class RunProcessDied(RuntimeError):
    """The process of a run (or of a sweep's importance pass) died without a word (killed, out of
    memory); the run's checkpoints stay."""


def apart(cfg: Config) -> bool:
    """Whether this command's heavy steps run in fresh processes: `train.process_per_run` on a POSIX
    system, never under torchrun (its ranks share one process group for the whole command)."""
    return cfg.train.process_per_run and os.name == "posix" and launched_size() == 1


def train_run(cfg: Config, progress: bool = True) -> RunResult:
    """`train(cfg)`, in a fresh process where `apart(cfg)`; a finished run is only read, here."""
    if finished_results(Path(cfg.output_dir)):
        return train(cfg, progress)
    return heavy_step(cfg, f"the run in {cfg.output_dir}", train, cfg, progress)


def heavy_step(cfg: Config, what: str, fn: Callable[..., T], *args) -> T:
    """`fn(*args)`: in a fresh process where `apart(cfg)`, else in this one."""
    return in_fresh_process(what, fn, *args) if apart(cfg) else fn(*args)


def in_fresh_process(what: str, fn: Callable[..., T], *args) -> T:
    """`fn(*args)` in a fresh Python process: its result, or its exception raised here. The child is a
    plain interpreter that reads `fn` and its arguments from a pipe, not multiprocessing's spawn, which
    would import the calling script again as the child's main module (and run its top level)."""
    results, child_end = os.pipe()
    with _ForwardStopSignals() as forward:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(child_end)], stdin=subprocess.PIPE,
                                 pass_fds=(child_end,))
        os.close(child_end)  # the child holds the only writing end: its death ends `recv` with EOFError
        forward.to(child.pid)
        with Connection(results) as receive:
            try:
                pickle.dump(sys.path, child.stdin)
                pickle.dump((fn, args, os.getpid(), Inherited.of_this_process()), child.stdin)
                child.stdin.close()
                outcome = receive.recv()
            except (EOFError, BrokenPipeError):
                outcome = None
        child.wait()
    if isinstance(outcome, BaseException):
        raise outcome
    if forward.requested:  # a stop that came as the child was finishing is not lost: the command stops here
        raise TrainingInterrupted(f"stopped after {what} finished" if outcome else f"stopped before {what} could save anything")
    if outcome is None:
        raise RunProcessDied(f"the process of {what} died (exit code {child.returncode}, e.g. out of memory); "
                             "rerun the same command to resume from the last checkpoint")
    return outcome[0]


# The child's program: this process's import path first (the pickled function's module must import as
# it does here), then the call.
CHILD = ("import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); "
         "from mtl_tickets.fresh_process import child_main; child_main(int(sys.argv[1]))")


def child_main(results_fd: int) -> None:
    """The child: read the call from stdin, make it, send (result,) or the exception (its traceback as a
    note) back through the pipe."""
    fn, args, parent, inherited = pickle.load(sys.stdin.buffer)
    with Connection(results_fd) as send:
        try:
            _stop_when_parent_dies(parent)
            inherited.apply()
            outcome: object = (fn(*args),)
        except BaseException as err:  # noqa: BLE001 - every failure is the parent's to raise
            err.__notes__ = [*getattr(err, "__notes__", []), f"in its fresh process:\n{traceback.format_exc()}"]
            outcome = err
        try:
            send.send(outcome)
        except Exception:  # an exception that does not pickle: its text still reaches the parent
            send.send(RuntimeError(f"{type(outcome).__name__}: {outcome}\n{traceback.format_exc()}"))


def _stop_when_parent_dies(parent: int) -> None:
    """Linux: SIGTERM this process when its parent dies (a run saves and stops instead of training on,
    orphaned, holding its lock); elsewhere nothing."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass(frozen=True)
class Inherited:
    """What a child must share with this process that a fresh interpreter lacks: what it prints (the CLI's
    -v and --quiet: logger levels, transformers' progress bars) and the tasks registered in code."""

    levels: dict[str, int]
    hf_progress_bars: bool
    tasks: list[registry.TaskSpec]

    @classmethod
    def of_this_process(cls) -> Inherited:
        loggers = {name: logger.level for name, logger in logging.root.manager.loggerDict.items()
                   if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET}
        return cls({"": logging.root.level, **loggers}, hf_logging.is_progress_bar_enabled(),
                   registry.registered_in_code())

    def apply(self) -> None:
        logging.basicConfig(level=self.levels[""], format="%(message)s")
        for name, level in self.levels.items():
            logging.getLogger(name or None).setLevel(level)
        if not self.hf_progress_bars:
            hf_logging.disable_progress_bar()
        known = registry.all_tasks()  # a script's top level, run again as the child's __mp_main__, may register them too
        for spec in self.tasks:
            if spec.name not in known:
                registry.register_task(spec)


class _ForwardStopSignals(StopOnSignal):
    """While a child works, SIGINT and SIGTERM to this process are passed on to it (a run saves and
    stops); outside the main thread signals stay as they are."""

    pid: int | None = None

    def to(self, pid: int) -> None:
        """Forward to `pid` from now on, and a stop that arrived while it was starting, now."""
        self.pid = pid
        if self.requested:
            os.kill(pid, signal.SIGTERM)

    def _handle(self, signum, frame) -> None:
        super()._handle(signum, frame)
        if self.pid is not None:
            os.kill(self.pid, signum)
