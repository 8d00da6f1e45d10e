"""Building a run's pieces from its config: the model, its tickets and its gate source (`model.sharing`).

The recipes (`train.py`), reopening a finished run (`inference.py`, and through it export and the
ticket search) and the benchmarks all build with these, so the same config always builds the same run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import registry
from .config import Config
from .encoders import load_encoder
from .gates import EncoderShape
from .masks import Ticket, TicketSet
from .model import MultiTaskModel
from .schema import ConfigError
from .sharing import AdaptiveSharing, FixedTickets, FullSharing


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def trainable_specs(cfg: Config) -> list[registry.TaskSpec]:
    """The tasks a run trains: its configured tasks and tags, less prediction-only sets such as AX."""
    return registry.trainable(cfg.tasks)


def build_model(cfg: Config, specs: list[registry.TaskSpec], device: torch.device | None = None) -> MultiTaskModel:
    """The pre-trained encoder and freshly initialised task heads: the same for the same seed, so
    building it again is rewinding (DESIGN.md decision 5)."""
    encoder = load_encoder(cfg.model.name, cfg.model.dropout)
    model = MultiTaskModel(encoder, specs, cfg.model.pooling, cfg.model.head_dropout)
    model.reset_task_heads(cfg.train.seed)
    return model.to(device or default_device())


def load_tickets(path: Path, model: MultiTaskModel) -> TicketSet:
    """The tickets of the model's tasks from a ticket file, checked against its encoder."""
    ticket_set = TicketSet.load(path, expect=EncoderShape.of(model.encoder))
    missing = [name for name in model.specs if name not in ticket_set.tickets]
    if missing:
        raise ConfigError(f"{path} has no ticket for {missing}; it has {sorted(ticket_set.tickets)}")
    return TicketSet(ticket_set.encoder, ticket_set.shape, {name: ticket_set.tickets[name] for name in model.specs})


def run_tickets(cfg: Config, model: MultiTaskModel, out: Path | None) -> dict[str, Ticket]:
    """Each task's ticket (sharing `tickets`, or the start of `adaptive`); a copy is kept in `out`,
    where reopening the run finds it."""
    if cfg.sharing == "full":
        return {}
    ticket_set = load_tickets(Path(cfg.tickets_file), model)
    if out is not None and Path(cfg.tickets_file).resolve() != (out / "tickets.json").resolve():
        ticket_set.save(out / "tickets.json")
    return ticket_set.tickets


def build_sharing(cfg: Config, model: MultiTaskModel, tickets: dict[str, Ticket]) -> None:
    """Give the model its gate source: none (`full`), the fixed `tickets`, or `adaptive` starting at them."""
    if cfg.sharing == "full":
        sharing = FullSharing()
    elif cfg.sharing == "tickets":
        sharing = FixedTickets(tickets, cfg.train.sliced, tasks=list(model.specs))
    else:
        sharing = AdaptiveSharing(tickets, cfg.adaptive, cfg.train.sliced)
    model.sharing = sharing.to(next(model.parameters()).device)
