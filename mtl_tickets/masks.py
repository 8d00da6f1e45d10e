"""Tickets (which units a task keeps), ticket sets, their JSON file format, overlap measures and
parameter accounting. Pure functions on boolean arrays; no torch besides `Ticket.gates()`.

File format (DESIGN.md decision 9), version 1:

    {"format": "mtl-tickets/ticket-set", "version": 1,
     "encoder": {"name": "minilm-l6", "layers": 6, "heads": 12, "ffn": 1536, "hidden": 384},
     "ffn_granularity": "neuron",
     "tickets": {"rte": {"attn_heads": {"0": [0, 1, ...], ...},    # kept heads per layer
                         "ffn": {"0": [0, 5, ...], ...},           # kept neurons per layer (or kept layers)
                         "sparsity": 0.3, "params_kept": 123, "params_total": 456,
                         "sweep_dir": "rte",                     # where its sweep's runs live (tickets find)
                         "source": {...}}}}                       # scores file, seed, dev curve

`sweep_dir` is written relative to the ticket file, so a sweep folder moved or copied whole still finds
its runs; in memory it is an absolute path.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .gates import EncoderShape, Gates
from .schema import ConfigError, from_dict, to_dict

FORMAT = "mtl-tickets/ticket-set"
VERSION = 1
Granularity = Literal["layer", "neuron"]
SWEEP_DIR = "sweep_dir"  # Ticket.info key: the folder of the `tickets find` runs that found the ticket


@dataclass(frozen=True, eq=False)
class Ticket:
    """The units one task keeps (True = keep).

    Attributes:
        attn_heads: (L, H) bool.
        ffn: (L, F) bool for `neuron` granularity, (L,) bool for `layer` granularity.
        info: free-form provenance (sparsity, kind, scores, seed, dev curve), kept in the file.
    """

    attn_heads: np.ndarray
    ffn: np.ndarray
    info: dict = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        """Same units kept (provenance ignored)."""
        return (isinstance(other, Ticket) and np.array_equal(self.attn_heads, other.attn_heads)
                and np.array_equal(self.ffn, other.ffn))

    __hash__ = None

    @property
    def granularity(self) -> Granularity:
        return "neuron" if self.ffn.ndim == 2 else "layer"

    @classmethod
    def full(cls, shape: EncoderShape, granularity: Granularity = "neuron") -> Ticket:
        ffn = np.ones((shape.layers, shape.ffn) if granularity == "neuron" else shape.layers, dtype=bool)
        return cls(np.ones((shape.layers, shape.heads), dtype=bool), ffn)

    def gates(self) -> Gates:
        import torch

        return Gates(attn_heads=torch.tensor(self.attn_heads, dtype=torch.float32),
                     ffn=torch.tensor(self.ffn, dtype=torch.float32))

    def kept_params(self, shape: EncoderShape) -> int:
        """Encoder parameters this ticket keeps (embeddings excluded, LayerNorms and output biases kept)."""
        return params_of(self, shape)

    def density(self) -> tuple[float, float]:
        """(fraction of heads kept, fraction of FFN units kept)."""
        return float(self.attn_heads.mean()), float(self.ffn.mean())


# ------------------------------------------------------------------------------- parameter counts


def unit_params(shape: EncoderShape) -> dict[str, int]:
    """Parameters owned by one unit of each kind (weights and biases; BERT layout)."""
    D, d, F = shape.hidden, shape.hidden // shape.heads, shape.ffn
    return {
        "attn_head": 3 * (D * d + d) + d * D,  # its Q, K, V rows with biases, its O columns
        "ffn_neuron": D + 1 + D,  # its intermediate row with bias, its output column
        "ffn_layer": F * (D + 1) + D * F + D,  # the whole FFN: both dense layers with biases
        "fixed_per_layer": D + 2 * D + 2 * D,  # O bias, two LayerNorms (FFN output bias is in ffn_layer)
    }


def params_of(ticket: Ticket, shape: EncoderShape) -> int:
    p = unit_params(shape)
    fixed = shape.layers * p["fixed_per_layer"]
    heads = int(ticket.attn_heads.sum()) * p["attn_head"]
    if ticket.granularity == "layer":
        return fixed + heads + int(ticket.ffn.sum()) * p["ffn_layer"]
    kept_layers_bias = shape.layers * shape.hidden  # the FFN output bias stays even with no neuron left
    return fixed + heads + int(ticket.ffn.sum()) * p["ffn_neuron"] + kept_layers_bias


# ----------------------------------------------------------------------------------- overlap


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def overlap(tickets: dict[str, Ticket]) -> dict[str, dict]:
    """Task x task Jaccard and shared-unit counts, heads and FFN separately, plus per-unit task counts."""
    names = list(tickets)
    out: dict[str, dict] = {}
    for part in ("attn_heads", "ffn"):
        masks = [getattr(tickets[n], part) for n in names]
        out[part] = {
            "tasks": names,
            "jaccard": [[jaccard(a, b) for b in masks] for a in masks],
            "shared": [[int(np.logical_and(a, b).sum()) for b in masks] for a in masks],
            "tasks_keeping": np.sum(masks, axis=0).tolist(),  # per unit: how many tasks keep it
        }
    return out


def format_overlap(result: dict[str, dict]) -> str:
    """`overlap`'s result as two task x task tables (Jaccard, shared units) and, per layer, how many
    tasks keep each head."""
    names = result["attn_heads"]["tasks"]
    lines = []
    for part, label in (("attn_heads", "heads"), ("ffn", "FFN")):
        o = result[part]
        lines += ["", f"{label}: Jaccard (shared units)", " " * 8 + "".join(f"{n:>16}" for n in names)]
        for i, a in enumerate(names):
            lines.append(f"{a:8}" + "".join(f"{o['jaccard'][i][j]:>9.2f} ({o['shared'][i][j]:>4})" for j in range(len(names))))
    lines += ["", "heads: how many tasks keep each head"]
    lines += [f"  layer {layer:2d}  " + " ".join(str(c) for c in row) for layer, row in enumerate(result["attn_heads"]["tasks_keeping"])]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ ticket sets


@dataclass
class TicketSet:
    """The tickets of several tasks for one encoder, with what is needed to check they fit it."""

    encoder: str
    shape: EncoderShape
    tickets: dict[str, Ticket]

    @property
    def granularity(self) -> Granularity:
        kinds = {t.granularity for t in self.tickets.values()}
        if len(kinds) > 1:
            raise ValueError(f"tickets mix FFN granularities {sorted(kinds)}")
        return kinds.pop() if kinds else "neuron"

    def save(self, path: Path) -> None:
        data = {
            "format": FORMAT,
            "version": VERSION,
            "encoder": {"name": self.encoder, **self.shape.__dict__},
            "ffn_granularity": self.granularity,
            "tickets": {name: _ticket_to_json(t, self.shape, path.parent) for name, t in self.tickets.items()},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, expect: EncoderShape | None = None) -> TicketSet:
        """Read a ticket file, checked by the same schema checker as configs; with `expect`, refuse
        tickets made for another encoder shape."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: ticket file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not a readable ticket file ({err}); was it truncated?") from None
        ticket_set = _from_json(data, path)
        if expect is not None and ticket_set.shape != expect:
            raise ConfigError(
                f"{path}: tickets were made for an encoder of {_describe(ticket_set.shape)} "
                f"({ticket_set.encoder}), this encoder has {_describe(expect)}; find tickets for this encoder"
            )
        return ticket_set


def format_ticket_set(ticket_set: TicketSet) -> str:
    """Each ticket as a layer x head map (# kept, . removed) with its FFN share and parameter count."""
    shape = ticket_set.shape
    lines = [f"encoder {ticket_set.encoder}: {shape.layers} layers x {shape.heads} heads, FFN {shape.ffn}, "
             f"FFN granularity {ticket_set.granularity}"]
    for task, t in ticket_set.tickets.items():
        total = Ticket.full(shape, t.granularity).kept_params(shape)
        heads, ffn = t.density()
        lines += ["", f"{task}: heads kept {heads:.0%}, FFN kept {ffn:.0%}, encoder parameters "
                  f"{t.kept_params(shape):,} / {total:,} ({t.kept_params(shape) / total:.1%})"
                  + (f", {t.info['kind']} at sparsity {t.info['sparsity']:g}" if "kind" in t.info else "")]
        for layer in range(shape.layers):
            row = "".join("#" if k else "." for k in t.attn_heads[layer])
            share = t.ffn[layer].mean() if t.ffn.ndim == 2 else float(t.ffn[layer])
            lines.append(f"  layer {layer:2d}  heads {row}  FFN {share:4.0%}")
    return "\n".join(lines)


def merge(sets: list[tuple[Path, TicketSet]]) -> TicketSet:
    """One ticket set from several (e.g. one `tickets find` per task); they must fit one encoder and
    name each task once."""
    (first_path, first), *rest = sets
    tickets = dict(first.tickets)
    for path, other in rest:
        if other.shape != first.shape:
            raise ConfigError(f"{path}: tickets for {_describe(other.shape)}, but {first_path} has {_describe(first.shape)}")
        for task, ticket in other.tickets.items():
            if task in tickets:
                raise ConfigError(f"{path}: task {task!r} already has a ticket from an earlier file; merge each task once")
            tickets[task] = ticket
    granularities = {t.granularity for t in tickets.values()}
    if len(granularities) > 1:
        raise ConfigError(f"the files mix FFN granularities {sorted(granularities)}; merge tickets of one granularity")
    return TicketSet(first.encoder, first.shape, tickets)


def _describe(s: EncoderShape) -> str:
    return f"{s.layers} layers x {s.heads} heads, FFN {s.ffn}, hidden {s.hidden}"


# ------------------------------------------------------------------------------------ file schema


@dataclass(frozen=True)
class EncoderRecord(EncoderShape):
    """A ticket file's `encoder`: the shape its tickets fit, and the encoder's name."""

    name: str = "unknown"

    def __post_init__(self) -> None:
        sizes = [self.layers, self.heads, self.ffn, self.hidden]
        if min(sizes) < 1:
            raise ValueError(f"layers, heads, ffn and hidden must be positive, got {sizes}")

    @property
    def shape(self) -> EncoderShape:
        return EncoderShape(self.layers, self.heads, self.ffn, self.hidden)


@dataclass(frozen=True)
class TicketRecord:
    """One task's entry in a ticket file: its kept units, their parameter count, and provenance (the
    remaining fields, a `Ticket`'s info). A new kind of provenance is a new field here."""

    attn_heads: dict[str, list[int]]  # layer -> kept heads
    ffn: dict[str, list[int]] | list[int]  # layer -> kept neurons (`neuron` granularity), or kept layers (`layer`)
    params_kept: int | None = None  # for readers of the file; loading recomputes it from the units
    params_total: int | None = None
    kind: Literal["full", "winning", "random", "losing", "adaptive", "random_swaps"] | None = None  # adaptive: learned
    sparsity: float | None = None
    heads_removed: int | None = None  # units removed at this sparsity (pruning.nested_tickets)
    ffn_removed: int | None = None
    selected_on: Literal["dev", "heldout"] | None = None  # a super ticket's selection split, metric, seed
    metric: str | None = None
    seed: int | None = None
    scores: str | None = None  # the importance scores file
    curve: list[dict[str, Any]] | None = None  # the phase-transition cells
    confirm: dict[str, dict[str, Any]] | None = None  # the seed reruns of the full model and best winning ticket
    source: dict[str, Any] | None = None  # where an imported ticket came from
    sweep_dir: str | None = None  # the `tickets find` runs that found it, relative to the ticket file

    def __post_init__(self) -> None:
        for key in ("params_kept", "params_total", "heads_removed", "ffn_removed"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.sparsity is not None and not 0 <= self.sparsity < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")


UNIT_FIELDS = ("attn_heads", "ffn", "params_kept", "params_total")
PROVENANCE = tuple(f.name for f in fields(TicketRecord) if f.name not in UNIT_FIELDS)


@dataclass(frozen=True)
class TicketFile:
    """A ticket file as written (format version 1, DESIGN.md decision 9)."""

    format: str
    version: int
    encoder: EncoderRecord
    ffn_granularity: Granularity
    tickets: dict[str, TicketRecord]


def _ticket_to_json(t: Ticket, shape: EncoderShape, folder: Path) -> dict:
    """A ticket's file entry, built through `TicketRecord` so that nothing is written that loading refuses."""
    kept = lambda mask: {str(l): np.flatnonzero(row).tolist() for l, row in enumerate(mask)}  # noqa: E731
    ffn = kept(t.ffn) if t.granularity == "neuron" else np.flatnonzero(t.ffn).tolist()
    info = dict(t.info)
    if SWEEP_DIR in info:
        info[SWEEP_DIR] = os.path.relpath(Path(info[SWEEP_DIR]).resolve(), folder.resolve())
    record = TicketRecord(kept(t.attn_heads), ffn, t.kept_params(shape), Ticket.full(shape, t.granularity).kept_params(shape), **info)
    return {key: value for key, value in to_dict(record).items() if value is not None}


def _from_json(data: Any, path: Path) -> TicketSet:
    found = data.get("format") if isinstance(data, dict) else None
    if found != FORMAT:
        raise ConfigError(f"{path}: not an mtl-tickets ticket file (format {found!r})")
    if data.get("version") != VERSION:
        raise ConfigError(f"{path}: ticket file version {data.get('version')} is not supported (expected {VERSION})")
    parsed = from_dict(TicketFile, data, str(path))
    shape = parsed.encoder.shape
    tickets = {name: _ticket_from_record(r, parsed.ffn_granularity, shape, Path(path).parent, f"{path}: tickets.{name}")
               for name, r in parsed.tickets.items()}
    return TicketSet(parsed.encoder.name, shape, tickets)


def _ticket_from_record(record: TicketRecord, granularity: Granularity, shape: EncoderShape, folder: Path, where: str) -> Ticket:
    """The units of one entry as masks, each unit checked against the file's declared shape."""
    heads = _mask_from_lists(record.attn_heads, shape.layers, shape.heads, f"{where}.attn_heads")
    if granularity == "neuron":
        if not isinstance(record.ffn, dict):
            raise ConfigError(f"{where}.ffn: ffn_granularity 'neuron' lists kept neurons per layer, e.g. {{\"0\": [0, 5]}}")
        ffn = _mask_from_lists(record.ffn, shape.layers, shape.ffn, f"{where}.ffn")
    else:
        if isinstance(record.ffn, dict):
            raise ConfigError(f"{where}.ffn: ffn_granularity 'layer' lists the kept FFN layers, e.g. [0, 1, 3]")
        ffn = _mask_from_indices(record.ffn, shape.layers, f"{where}.ffn")
    info = {key: getattr(record, key) for key in PROVENANCE if getattr(record, key) is not None}
    if SWEEP_DIR in info:
        info[SWEEP_DIR] = str((folder / info[SWEEP_DIR]).resolve())
    return Ticket(heads, ffn, info)


def _mask_from_indices(indices, size: int, where: str) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    for i in indices:
        if not isinstance(i, int) or not 0 <= i < size:
            raise ConfigError(f"{where}: index {i!r} is out of range [0, {size})")
        mask[i] = True
    return mask


def _mask_from_lists(per_layer: dict, layers: int, size: int, where: str) -> np.ndarray:
    mask = np.zeros((layers, size), dtype=bool)
    for layer, indices in per_layer.items():
        if not str(layer).isdigit() or not 0 <= int(layer) < layers:
            raise ConfigError(f"{where}: layer {layer!r} is out of range [0, {layers})")
        mask[int(layer)] = _mask_from_indices(indices, size, f"{where}[{layer}]")
    return mask


def import_reference(heads_file: Path, ffn_file: Path | None, task_names: list[str], encoder: str, shape: EncoderShape) -> TicketSet:
    """Tickets from the reference code's `heads_to_mask.json` ({task_idx: {layer: [heads]}}, the units
    it *masks*) and `ffn_to_mask.json` ({task_idx: [layers]}); task indices map to `task_names`."""
    try:
        heads = json.loads(Path(heads_file).read_text())
        ffn = json.loads(Path(ffn_file).read_text()) if ffn_file else {}
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read reference mask files: {err}") from None
    tickets = {}
    for index, name in enumerate(task_names):
        keep_heads = np.ones((shape.layers, shape.heads), dtype=bool)
        keep_heads &= ~_mask_from_lists(heads.get(str(index), {}), shape.layers, shape.heads, f"{heads_file}: {index}")
        keep_ffn = ~_mask_from_indices(ffn.get(str(index), []), shape.layers, f"{ffn_file}: {index}")
        tickets[name] = Ticket(keep_heads, keep_ffn, {"source": {"imported_from": [str(heads_file), str(ffn_file)]}})
    return TicketSet(encoder, shape, tickets)
