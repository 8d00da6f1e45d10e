"""Metric loggers behind one protocol, `log_dict(payload, step)` / `close()` (as torchtune):
TensorBoard event files and a JSON-lines file, with tags like `train/rte/loss`, `eval/rte/accuracy`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol


class MetricLogger(Protocol):
    def log_dict(self, payload: dict[str, float], step: int) -> None: ...

    def log_figure(self, tag: str, figure, step: int) -> None: ...

    def log_histogram(self, tag: str, values, step: int) -> None: ...

    def close(self) -> None: ...


class TensorBoardLogger:
    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log_dict(self, payload: dict[str, float], step: int) -> None:
        for tag, value in payload.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def log_figure(self, tag: str, figure, step: int) -> None:
        self.writer.add_figure(tag, figure, step)  # closes the figure

    def log_histogram(self, tag: str, values, step: int) -> None:
        self.writer.add_histogram(tag, values, step)

    def close(self) -> None:
        self.writer.close()


class JsonlLogger:
    """One JSON object per line: {"step": s, tag: value, ...}; appended, so a resumed run continues it."""

    def __init__(self, path: Path):
        self.file = path.open("a", encoding="utf-8")

    def log_dict(self, payload: dict[str, float], step: int) -> None:
        self.file.write(json.dumps({"step": step, **payload}) + "\n")
        self.file.flush()

    def log_figure(self, tag: str, figure, step: int) -> None:
        """Figures go to TensorBoard only."""

    def log_histogram(self, tag: str, values, step: int) -> None:
        """Histograms go to TensorBoard only."""

    def close(self) -> None:
        self.file.close()


class Loggers:
    """Fans one payload out to several loggers."""

    def __init__(self, *loggers: MetricLogger):
        self.loggers = loggers

    def log_dict(self, payload: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_dict(payload, step)

    def log_figure(self, tag: str, figure, step: int) -> None:
        for logger in self.loggers:
            logger.log_figure(tag, figure, step)

    def log_histogram(self, tag: str, values, step: int) -> None:
        for logger in self.loggers:
            logger.log_histogram(tag, values, step)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()
