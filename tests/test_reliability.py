"""Faults and bad input: non-finite losses, full disks, damaged files and fuzzed input all end in one
clear error and never damage finished work."""

import errno
import shutil
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
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

cells = st.text(alphabet=string.ascii_letters + " \t\"'\\é", max_size=12)


@FUZZ
@given(rows=st.lists(st.lists(cells, min_size=0, max_size=6), max_size=6), header=st.booleans(), raw=st.binary(max_size=40))
def test_fuzzed_tsv_files_load_or_fail_with_a_clear_error(tmp_path, rows, header, raw):
    folder = tmp_path / "RTE"
    folder.mkdir(exist_ok=True)
    lines = (["index\tsentence1\tsentence2\tlabel"] if header else []) + ["\t".join(r) for r in rows]
    data = "\n".join(lines).encode() + raw
    (folder / "train.tsv").write_bytes(data)
    try:
        split = read_split(registry.all_tasks()["rte"], tmp_path, "train", True)
    except ConfigError as err:
        assert str(folder / "train.tsv") in str(err)
    else:
        assert len(split.texts) == len(split.labels) > 0


yaml_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=8)
known_keys = st.sampled_from(["tasks", "output_dir", "model", "data", "train", "sharing", "tickets", "lr", "train.lr"])


@FUZZ
@given(doc=st.dictionaries(known_keys | st.text(max_size=6), yaml_values, max_size=4))
def test_fuzzed_configs_load_or_fail_with_a_clear_error(tmp_path, doc):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        load_config(path)
    except ConfigError as err:
        assert str(path) in str(err)


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
@given(cut=st.floats(0, 1), edit=st.integers(0, 10**6), value=st.sampled_from(["-1", "99", "\"x\"", "null", "[]", "{}", "1.5"]))
def test_damaged_ticket_files_fail_with_a_clear_error(tmp_path, cut, edit, value):
    text = valid_ticket_text(tmp_path)
    digits = [i for i, c in enumerate(text) if c.isdigit()]
    i = digits[edit % len(digits)]
    for damaged in (text[: int(cut * len(text))], text[:i] + value + text[i + 1:]):
        path = tmp_path / "bad.json"
        path.write_text(damaged)
        try:
            TicketSet.load(path, expect=SHAPE)
        except ConfigError as err:
            assert str(path) in str(err)


def test_truncated_checkpoints_and_checkpoints_of_another_model_are_refused(tiny_model_dir, glue_slice, tmp_path):
    cfg = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[rte]", "train.keep_checkpoints=true")
    out = train(cfg, progress=False).output_dir
    latest = checkpoint.latest(out / "checkpoints")
    from mtl_tickets.train import build_model

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
