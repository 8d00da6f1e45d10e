"""Faults and bad input: non-finite losses, full disks, damaged files and fuzzed input all end in one
clear error and never damage finished work."""

import errno
import re
import shutil
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from mtl_tickets import checkpoint, registry
from mtl_tickets.checkpoint import StorageError
from mtl_tickets.config import load_config
from mtl_tickets.data import read_split
from mtl_tickets.gates import EncoderShape
from mtl_tickets.masks import Ticket, TicketSet
from mtl_tickets.model import MultiTaskModel
from mtl_tickets.schema import ConfigError
from mtl_tickets.train import NumericalError, train

from .test_train import tiny_config

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def nan_on_call(monkeypatch, call: int):
    original, calls = MultiTaskModel.loss, {"n": 0}

    def loss(self, outputs, labels, task):
        calls["n"] += 1
        value = original(self, outputs, labels, task)
        return value * float("nan") if calls["n"] == call else value

    monkeypatch.setattr(MultiTaskModel, "loss", loss)


def test_a_nan_loss_stops_naming_task_and_step_and_keeps_the_last_good_checkpoint(tiny_model_dir, glue_slice, tmp_path, monkeypatch):
    nan_on_call(monkeypatch, 3)
    cfg = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[rte]")
    with pytest.raises(NumericalError, match=r"on task 'rte' at step 3; the weights were not updated"):
        train(cfg, progress=False)
    latest = checkpoint.latest(tmp_path / "run" / "checkpoints")
    assert latest.name == "step-0000002"
    assert all(torch.isfinite(t).all() for t in load_file(str(latest / "model.safetensors")).values())


def test_skip_mode_skips_the_update_and_finishes(tiny_model_dir, glue_slice, tmp_path, monkeypatch):
    nan_on_call(monkeypatch, 3)
    cfg = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[rte]", "train.on_nonfinite=skip")
    result = train(cfg, progress=False)
    assert result.results["skipped_steps"] == [{"step": 3, "task": "rte"}] and result.results["complete"]
    weights = load_file(str(result.output_dir / "best" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_a_full_disk_is_refused_before_training(tiny_model_dir, glue_slice, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(StorageError, match="MiB free, the run needs about"):
        train(tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[rte]"), progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_checkpoint_write_that_fails_half_way_keeps_the_previous_one(tiny_model_dir, glue_slice, tmp_path, monkeypatch):
    real_save, calls = torch.save, {"n": 0}

    def failing_save(obj, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(path).write_bytes(b"half")  # a partial file, as a full disk leaves it
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    cfg = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[rte]")
    with pytest.raises(StorageError, match=r"the last good checkpoint \(step-0000002\) is intact"):
        train(cfg, progress=False)
    folder = tmp_path / "run" / "checkpoints"
    assert [p.name for p in folder.iterdir() if p.name.startswith((".tmp", "step"))] == ["step-0000002"]
    monkeypatch.setattr(torch, "save", real_save)
    assert train(cfg, progress=False).results["complete"]  # resumes from step 2


def test_an_unwritable_output_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = load_config(None, [f"output_dir={blocker / 'run'}"])
    with pytest.raises(ConfigError, match="is not writable"):
        train(cfg, progress=False)


def test_bad_input_never_touches_a_finished_run(tiny_model_dir, glue_slice, tmp_path):
    cfg = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[wnli]")
    out = train(cfg, progress=False).output_dir
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for bad in (["train.lr=2e-4"], ["data.glue_dir=/nowhere"], ["sharing=tickets", f"tickets_file={tmp_path / 'none.json'}"]):
        with pytest.raises(ConfigError):
            train(tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[wnli]", *bad), progress=False)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------------------------------- fuzzing

RTE_LABELS = ["entailment", "not_entailment"]
cells = st.text(alphabet=string.ascii_letters + " \"'\\é", max_size=12)  # GLUE text: no tab, no line break
rte_rows = st.lists(st.tuples(cells, cells, cells, st.sampled_from(RTE_LABELS)), min_size=1, max_size=6)


def write_rte_train(tmp_path, lines: list[str], trailing_newline: bool = True) -> Path:
    folder = tmp_path / "RTE"
    folder.mkdir(exist_ok=True)
    path = folder / "train.tsv"
    path.write_text("\n".join(["index\tsentence1\tsentence2\tlabel", *lines]) + ("\n" if trailing_newline else ""), encoding="utf-8")
    return path


@FUZZ
@given(rows=rte_rows, trailing_newline=st.booleans())
def test_fuzzed_valid_tsv_files_load_verbatim(tmp_path, rows, trailing_newline):
    write_rte_train(tmp_path, ["\t".join(r) for r in rows], trailing_newline)
    split = read_split(registry.all_tasks()["rte"], tmp_path, "train", True)
    assert split.texts == [(s1, s2) for _, s1, s2, _ in rows]  # quotes and backslashes are literal text
    assert split.labels.tolist() == [RTE_LABELS.index(label) for *_, label in rows]


@FUZZ
@given(rows=rte_rows, defect=st.sampled_from(["extra column", "missing column", "unknown label", "not utf-8", "no rows"]),
       at=st.integers(0, 10**6), junk=cells)
def test_fuzzed_bad_tsv_files_are_refused_naming_file_and_line(tmp_path, rows, defect, at, junk):
    lines = ["\t".join(r) for r in rows]
    i = at % len(rows)
    where = f"train.tsv:{i + 2}: "  # a header line, then data rows from line 2
    if defect == "extra column":
        lines[i] += "\t" + junk
        expected = where + "expected 4 tab-separated columns, got 5"
    elif defect == "missing column":
        lines[i] = lines[i].rsplit("\t", 1)[0]
        expected = where + "expected 4 tab-separated columns, got 3"
    elif defect == "unknown label":
        assume(junk.strip() not in RTE_LABELS)
        lines[i] = "\t".join([*rows[i][:3], junk])
        expected = where + "unknown label"
    elif defect == "no rows":
        lines, expected = [], "no data rows"
    path = write_rte_train(tmp_path, lines)
    if defect == "not utf-8":
        data = path.read_bytes()
        cut = at % len(data)
        path.write_bytes(data[:cut] + b"\xff" + data[cut:])
        expected = "not UTF-8 text"
    with pytest.raises(ConfigError) as err:
        read_split(registry.all_tasks()["rte"], tmp_path, "train", True)
    assert str(path) in str(err.value) and expected in str(err.value)


# A valid value for a few settings, and a value each must refuse (wrong type, out of range, unknown).
GOOD_SETTINGS = {
    "train.lr": st.floats(1e-6, 1.0), "train.epochs": st.floats(0.1, 10.0), "train.batch_size": st.integers(1, 64),
    "train.warmup": st.floats(0.0, 0.99), "data.max_seq_len": st.integers(8, 4096),
    "model.pooling": st.sampled_from(["mean", "cls", "pooler"]), "tasks": st.lists(st.sampled_from(["rte", "stsb", "glue"]), min_size=1),
}
BAD_SETTINGS = {
    "train.lr": st.floats(max_value=0.0) | st.sampled_from(["fast", [1e-4], {"peak": 1e-4}, None]),
    "train.batch_size": st.integers(max_value=0) | st.floats(0.5, 64.5) | st.just("32"),
    "train.warmup": st.floats(min_value=1.0, allow_infinity=False) | st.floats(max_value=-1e-9, allow_infinity=False),
    "data.max_seq_len": st.integers(max_value=7) | st.integers(min_value=4097),
    "model.pooling": st.text(max_size=8).filter(lambda v: v not in ("mean", "cls", "pooler")),
    "tasks": st.just([]) | st.just("rte"),
    "train.learning_rate": st.floats(1e-6, 1.0),  # unknown keys, at the top and in a section
    "sharing_mode": st.sampled_from(["full", "tickets"]),
}
good_configs = st.lists(st.sampled_from(sorted(GOOD_SETTINGS)), unique=True).flatmap(
    lambda keys: st.fixed_dictionaries({k: GOOD_SETTINGS[k] for k in keys}))


def write_config(tmp_path, values: dict) -> Path:
    import yaml

    doc: dict = {}
    for key, value in values.items():
        *sections, last = key.split(".")
        target = doc
        for section in sections:
            target = target.setdefault(section, {})
        target[last] = value
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@FUZZ
@given(chosen=good_configs)
def test_fuzzed_valid_configs_load_every_value(tmp_path, chosen):
    cfg = load_config(write_config(tmp_path, chosen))
    for key, value in chosen.items():
        loaded = cfg
        for part in key.split("."):
            loaded = getattr(loaded, part)
        assert loaded == value, key


@FUZZ
@given(chosen=good_configs, bad=st.sampled_from(sorted(BAD_SETTINGS)).flatmap(lambda k: st.tuples(st.just(k), BAD_SETTINGS[k])))
def test_fuzzed_bad_configs_are_refused_naming_file_and_key(tmp_path, chosen, bad):
    key, value = bad
    path = write_config(tmp_path, {**chosen, key: value})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and key.split(".")[-1] in str(err.value)


@FUZZ
@given(text=st.sampled_from(["!!python/object/apply:os.system ['true']", "a: [1, 2", "\x00\x01", "- - -", "{a: !!binary 'zz'}",
                             "tasks: !!python/name:os.system", "train: {lr: .nan}", "tasks: [rte]\ntrain: {lr: -1}"]))
def test_hostile_yaml_is_refused(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_config(path)


SHAPE = EncoderShape(2, 4, 5, 8)


def valid_ticket_text(tmp_path) -> str:
    ticket = Ticket(np.array([[1, 0, 1, 1], [1, 1, 1, 0]], bool), np.ones((2, 5), bool))
    TicketSet("tiny", SHAPE, {"rte": ticket}).save(tmp_path / "t.json")
    return (tmp_path / "t.json").read_text()


@FUZZ
@given(cut=st.integers(0, 10**6), edit=st.integers(0, 10**6), value=st.sampled_from(["-1", "99", "\"x\"", "null", "[]", "{}", "1.5"]))
def test_damaged_ticket_files_are_refused_naming_the_file(tmp_path, cut, edit, value):
    text = valid_ticket_text(tmp_path)
    # every digit but those of params_kept / params_total, which loading recomputes rather than reads
    digits = [i for i, c in enumerate(text) if c.isdigit() and "params_" not in text[text.rfind("\n", 0, i):i]]
    i = digits[edit % len(digits)]
    for damaged in (text[: cut % len(text)], text[:i] + value + text[i + 1:]):
        path = tmp_path / "bad.json"
        path.write_text(damaged)
        with pytest.raises(ConfigError, match=re.escape(str(path))):
            TicketSet.load(path, expect=SHAPE)


def test_truncated_checkpoints_and_checkpoints_of_another_model_are_refused(tiny_model_dir, glue_slice, tmp_path):
    cfg = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[rte]", "train.keep_checkpoints=true")
    out = train(cfg, progress=False).output_dir
    latest = checkpoint.latest(out / "checkpoints")
    from mtl_tickets.build import build_model

    for name in ("model.safetensors", "trainer.pt", "state.json"):
        broken = tmp_path / f"broken-{name}"
        shutil.copytree(latest, broken)
        data = (broken / name).read_bytes()
        (broken / name).write_bytes(data[: len(data) // 3])
        model = build_model(cfg, registry.resolve(["rte"]))
        opt = torch.optim.AdamW(model.parameters())
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        with pytest.raises(ConfigError, match=str(broken)):
            checkpoint.restore(broken, model, opt, sched)
    other = build_model(cfg, registry.resolve(["mnli"]))
    with pytest.raises(ConfigError, match="do not fit this model"):
        checkpoint.load_weights(other, latest / "model.safetensors")
