"""GLUE data: read (local tsv layout or the hub), tokenize once and cache, batch by length.

The tsv files are read as the GLUE download script wrote them: tab-separated, UTF-8 (MRPC with a BOM),
no quoting, some gzipped, CoLA's train/dev without a header. A malformed row names its file and line.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import DataConfig
from .distributed import shard
from .metrics import HELDOUT
from .registry import Column, TaskSpec
from .schema import ConfigError

log = logging.getLogger(__name__)
CACHE_VERSION = 1


@dataclass(frozen=True)
class RawSplit:
    """Texts and labels of one split, before tokenization."""

    texts: list[tuple[str, ...]]  # one or two texts per example
    labels: np.ndarray  # int64 class ids, float32 scores, or empty for unlabelled (test) splits
    source: str  # file or hub split it came from, for messages and cache keys


@dataclass(frozen=True)
class Encoded:
    """A tokenized split: examples laid end to end in flat arrays (cheap to cache and slice)."""

    ids: np.ndarray  # (N_tokens,) int32
    types: np.ndarray  # (N_tokens,) int8 token type ids
    offsets: np.ndarray  # (N + 1,) int64; example i is ids[offsets[i]:offsets[i+1]]
    labels: np.ndarray  # (N,) or (0,) when unlabelled

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def labelled(self) -> bool:
        return len(self.labels) == len(self)

    def subset(self, index: np.ndarray) -> Encoded:
        rows = [self.ids[self.offsets[i] : self.offsets[i + 1]] for i in index]
        types = [self.types[self.offsets[i] : self.offsets[i + 1]] for i in index]
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        return Encoded(
            ids=np.concatenate(rows) if rows else self.ids[:0],
            types=np.concatenate(types) if types else self.types[:0],
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            labels=self.labels[index] if self.labelled else self.labels,
        )


@dataclass(frozen=True)
class TaskData:
    """One task's tokenized splits: train (None for prediction-only sets), dev and test by name."""

    spec: TaskSpec
    train: Encoded | None
    dev: dict[str, Encoded]
    test: dict[str, Encoded]


# --------------------------------------------------------------------------------------- reading


def find_split_file(folder: Path, split: str) -> Path | None:
    for name in (f"{split}.tsv", f"{split}.tsv.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_tsv(path: Path) -> list[list[str]]:
    """All rows of a GLUE tsv file (plain or gzipped), no quoting, BOM stripped."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="").read()
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); GLUE files are UTF-8") from None
    except (OSError, EOFError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None
    return list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))


def read_split(spec: TaskSpec, glue_dir: Path, split: str, labelled: bool) -> RawSplit:
    """One split of a task from the tsv layout; checks every row's width and label."""
    tsv = spec.tsv
    assert tsv is not None
    folder = glue_dir / tsv.dir
    path = find_split_file(folder, split)
    if path is None:
        raise ConfigError(f"{folder}/{split}.tsv[.gz] not found for task {spec.name!r} (glue dir {glue_dir})")
    rows = read_tsv(path)
    has_header = tsv.header or not labelled  # GLUE test files always carry a header
    header = rows[0] if has_header and rows else None
    body = rows[1:] if header is not None else rows
    width = len(header) if header is not None else (len(body[0]) if body else 0)
    text_cols = tsv.text if labelled or tsv.test_text is None else tsv.test_text
    text_idx = [_column(c, header, path) for c in text_cols]
    label_idx = _column(tsv.label, header, path) if labelled and tsv.label is not None else None
    texts, labels = [], []
    first_line = 2 if header is not None else 1
    for line, row in enumerate(body, start=first_line):
        if len(row) != width:
            raise ConfigError(f"{path}:{line}: expected {width} tab-separated columns, got {len(row)}")
        texts.append(tuple(row[i] for i in text_idx))
        if label_idx is not None:
            labels.append(_label(spec, row[label_idx], f"{path}:{line}"))
    if not body:
        raise ConfigError(f"{path}: no data rows")
    return RawSplit(texts, _label_array(spec, labels), str(path))


def _column(col: Column, header: list[str] | None, path: Path) -> int:
    if isinstance(col, int):
        return col
    if header is None:
        raise ConfigError(f"{path}: has no header, so column {col!r} must be given as a 0-based index")
    if col not in header:
        raise ConfigError(f"{path}: no column {col!r} in header {header}")
    return header.index(col)


def _label(spec: TaskSpec, value: str, where: str) -> float | int:
    value = value.strip()
    if spec.kind == "regression":
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: score {value!r} is not a number (task {spec.name})") from None
    if value not in spec.labels:
        raise ConfigError(f"{where}: unknown label {value!r} for task {spec.name}; expected one of {spec.labels}")
    return spec.labels.index(value)


def _label_array(spec: TaskSpec, labels: list) -> np.ndarray:
    return np.asarray(labels, dtype=np.float32 if spec.kind == "regression" else np.int64)


def read_hub_split(spec: TaskSpec, split: str, labelled: bool) -> RawSplit:
    """One split from the Hugging Face hub via `datasets` (needs the internet or the hub cache)."""
    hub = spec.hub
    assert hub is not None
    try:
        import datasets  # only here: local GLUE folders and machines without `datasets` never need it
    except ImportError:
        raise ConfigError(
            f"task {spec.name!r} has no --glue-dir (or GLUE_DIR) and the hub needs the `datasets` package, which is not "
            "installed; give --glue-dir with GLUE in its tsv layout, or pip install datasets"
        ) from None
    try:
        table = datasets.load_dataset(hub.path, hub.name, split=split)
    except Exception as err:  # datasets raises many types; the user needs one line
        raise ConfigError(
            f"cannot load {hub.path}/{hub.name} split {split!r} from the hub ({type(err).__name__}); "
            "offline? give --glue-dir (or GLUE_DIR) with GLUE in its tsv layout"
        ) from None
    texts = list(zip(*(table[c] for c in hub.text), strict=True))
    labels = _label_array(spec, table[hub.label]) if labelled else _label_array(spec, [])
    return RawSplit(texts, labels, f"hub:{hub.path}/{hub.name}/{split}")


# ------------------------------------------------------------------------------ tokenize + cache


def encode(raw: RawSplit, tokenizer, max_seq_len: int) -> Encoded:
    """Tokenize every example once (pairs truncated longest-first)."""
    columns = list(zip(*raw.texts, strict=True))
    out = tokenizer(*[list(c) for c in columns], truncation=True, max_length=max_seq_len)
    ids = out["input_ids"]
    types = out.get("token_type_ids") or [[0] * len(x) for x in ids]
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    return Encoded(
        ids=np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(lengths.sum())),
        types=np.fromiter((t for x in types for t in x), dtype=np.int8, count=int(lengths.sum())),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        labels=raw.labels,
    )


def cache_dir(cfg: DataConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get("MTL_TICKETS_CACHE", "~/.cache/mtl_tickets")).expanduser()


def _cache_key(spec: TaskSpec, source: str, tokenizer, max_seq_len: int) -> str:
    stamp = ""
    if Path(source).is_file():
        stat = Path(source).stat()
        stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    fields = [CACHE_VERSION, spec.name, spec.version, source, stamp, tokenizer.name_or_path, len(tokenizer), max_seq_len]
    return hashlib.sha1(repr(fields).encode()).hexdigest()[:16]


def load_encoded(spec: TaskSpec, split: str, labelled: bool, tokenizer, cfg: DataConfig) -> Encoded:
    """A tokenized split, from the cache when its source file and tokenizer are unchanged."""
    glue_dir = cfg.resolved_glue_dir()
    from_tsv = glue_dir is not None and spec.tsv is not None
    if from_tsv:
        found = find_split_file(glue_dir / spec.tsv.dir, split)
        source = str(found) if found else f"{glue_dir}/{spec.tsv.dir}/{split}"
    else:
        source = f"hub:{spec.hub.path}/{spec.hub.name}/{split}"
    path = cache_dir(cfg) / f"{spec.name}-{split}-{_cache_key(spec, source, tokenizer, cfg.max_seq_len)}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return Encoded(z["ids"], z["types"], z["offsets"], z["labels"])
        except (OSError, ValueError, KeyError):
            log.warning("ignoring unreadable cache file %s", path)
    raw = read_split(spec, glue_dir, split, labelled) if from_tsv else read_hub_split(spec, split, labelled)
    encoded = encode(raw, tokenizer, cfg.max_seq_len)
    _save_npz(path, encoded)
    return encoded


def _save_npz(path: Path, enc: Encoded) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, ids=enc.ids, types=enc.types, offsets=enc.offsets, labels=enc.labels)
        os.replace(tmp, path)
    except OSError as err:  # a read-only cache only costs time
        log.warning("cannot write the data cache %s: %s", path, err)


def splits_of(spec: TaskSpec, from_tsv: bool) -> tuple[str | None, list[str], list[str]]:
    source = spec.tsv if from_tsv else spec.hub
    assert source is not None
    return source.train, list(source.dev), list(source.test)


def load_task(spec: TaskSpec, tokenizer, cfg: DataConfig, with_test: bool = False) -> TaskData:
    """Train and dev (and optionally test) splits of one task, subsampled as the config asks."""
    glue_dir = cfg.resolved_glue_dir()
    if glue_dir is not None and not glue_dir.is_dir():
        raise ConfigError(f"GLUE directory {glue_dir} does not exist; give --glue-dir with the GLUE tsv folders")
    from_tsv = glue_dir is not None and spec.tsv is not None
    train_split, dev_splits, test_splits = splits_of(spec, from_tsv)
    train = load_encoded(spec, train_split, True, tokenizer, cfg) if train_split and spec.trainable else None
    if train is not None and cfg.train_cap(spec.name):
        train = subsample(train, cfg.train_cap(spec.name), cfg.subsample_seed)
    heldout = None
    if train is not None and cfg.holdout:
        train, heldout = split_off(train, cfg.holdout, cfg.subsample_seed)
    dev = {}
    for split in dev_splits:
        dev[split] = load_encoded(spec, split, True, tokenizer, cfg)
        if cfg.max_eval_examples:
            dev[split] = subsample(dev[split], cfg.max_eval_examples, cfg.subsample_seed)
    if heldout is not None:
        dev[HELDOUT] = heldout
    test = {}
    for split in test_splits if with_test else []:
        if from_tsv and find_split_file(glue_dir / spec.tsv.dir, split) is None:
            log.warning("skipping %s test split %r: no such file in %s", spec.name, split, glue_dir / spec.tsv.dir)
            continue
        test[split] = load_encoded(spec, split, False, tokenizer, cfg)
    return TaskData(spec, train, dev, test)


def split_off(data: Encoded, fraction: float, seed: int) -> tuple[Encoded, Encoded]:
    """(rest, held-out slice of `fraction`), drawn with a fixed seed, each in file order."""
    order = np.random.default_rng([seed, 1]).permutation(len(data))
    k = max(1, round(fraction * len(data)))
    return data.subset(np.sort(order[k:])), data.subset(np.sort(order[:k]))


def subsample(data: Encoded, k: int, seed: int) -> Encoded:
    """k examples drawn without replacement with a fixed seed, kept in file order."""
    if k >= len(data):
        return data
    index = np.sort(np.random.default_rng(seed).choice(len(data), size=k, replace=False))
    return data.subset(index)


# ------------------------------------------------------------------------------------- batching


def train_batches(lengths: np.ndarray, batch_size: int, generator: torch.Generator) -> list[np.ndarray]:
    """One epoch of shuffled batches whose examples have similar lengths (less padding).

    As transformers' length grouping: shuffle, cut into mega-batches of 50 batches, sort each by
    length, split into batches, then shuffle the batch order.
    """
    order = torch.randperm(len(lengths), generator=generator).numpy()
    mega = batch_size * 50
    batches = []
    for start in range(0, len(order), mega):
        chunk = order[start : start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


def eval_batches(lengths: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Batches of examples sorted by length; callers put predictions back in order by index."""
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def collate(data: Encoded, index: np.ndarray, pad_id: int = 0, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Dynamic padding to the longest example of the batch, rounded up to a multiple of `multiple`."""
    lengths = data.lengths[index]
    T = -(-int(lengths.max()) // multiple) * multiple
    ids = np.full((len(index), T), pad_id, dtype=np.int64)
    types = np.zeros((len(index), T), dtype=np.int64)
    for row, (i, n) in enumerate(zip(index, lengths, strict=True)):
        start = data.offsets[i]
        ids[row, :n] = data.ids[start : start + n]
        types[row, :n] = data.types[start : start + n]
    batch = {
        "input_ids": torch.from_numpy(ids),
        "token_type_ids": torch.from_numpy(types),
        "attention_mask": torch.from_numpy(np.arange(T)[None, :] < lengths[:, None]).long(),
    }
    if data.labelled:
        batch["labels"] = torch.from_numpy(data.labels[index])
    return batch


class TaskStream:
    """Endless shuffled, length-grouped batches of one task.

    Its position is two integers (pass, batches taken in that pass) and each pass's order comes
    from a generator seeded by (seed, task, pass), so a resumed run continues exactly.
    """

    def __init__(self, name: str, data: Encoded, batch_size: int, seed: int, cursor: list[int] | None = None,
                 pad_to_multiple_of: int = 1):
        self.name, self.data, self.batch_size, self.seed = name, data, batch_size, seed
        self.pad_to_multiple_of = pad_to_multiple_of
        self.cursor = list(cursor or [0, 0])
        self._batches = self._pass(self.cursor[0])

    def __len__(self) -> int:
        """Batches per pass."""
        return -(-len(self.data) // self.batch_size)

    def _pass(self, number: int) -> list[np.ndarray]:
        mixed = np.random.SeedSequence([self.seed, zlib.crc32(self.name.encode()), number]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(mixed))
        return train_batches(self.data.lengths, self.batch_size, generator)

    def seek(self, cursor: list[int]) -> None:
        """Continue from a saved position."""
        self.cursor = list(cursor)
        self._batches = self._pass(self.cursor[0])

    def next(self, world=None) -> dict[str, torch.Tensor]:
        """The next batch; under data parallelism, this rank's share of the global batch."""
        if self.cursor[1] >= len(self._batches):
            self.cursor = [self.cursor[0] + 1, 0]
            self._batches = self._pass(self.cursor[0])
        index = self._batches[self.cursor[1]]
        self.cursor[1] += 1
        return collate(self.data, shard(index, world) if world is not None else index, multiple=self.pad_to_multiple_of)
