"""Checkpoints: the two newest are kept, a damaged one falls back to the one before, and the RNG state
(CPU and CUDA) round-trips between machines with and without a GPU."""

import json
import logging

import pytest
import torch

from mtl_tickets import checkpoint
from mtl_tickets.checkpoint import TrainState
from mtl_tickets.schema import ConfigError
from mtl_tickets.train import train

from .test_train import tiny_config


def test_a_damaged_checkpoint_falls_back_to_the_one_before(tiny_model_dir, glue_slice, tmp_path, caplog):
    straight = train(tiny_config(tiny_model_dir, glue_slice, tmp_path / "straight", "tasks=[rte]"), progress=False)
    cut = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[rte]", "train.max_steps=3")
    train(cut, progress=False)  # checkpoints at steps 2 and 3 (the end of this invocation)
    folder = tmp_path / "run" / "checkpoints"
    assert [p.name for p in checkpoint.complete(folder)] == ["step-0000003", "step-0000002"]
    weights = folder / "step-0000003" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a copy cut short
    with caplog.at_level(logging.WARNING, logger="mtl_tickets.checkpoint"):
        resumed = train(tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[rte]"), progress=False)
    warning = next(r.getMessage() for r in caplog.records if "is damaged" in r.getMessage())
    assert str(folder / "step-0000003") in warning and "resuming from step-0000002" in warning
    assert resumed.results["complete"] and resumed.results["history"] == straight.results["history"]


def test_a_resumed_run_counts_the_wall_time_of_its_earlier_sessions(tiny_model_dir, glue_slice, tmp_path):
    cut = tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[rte]", "train.max_steps=3")
    train(cut, progress=False)
    state_file = tmp_path / "run" / "checkpoints" / "step-0000003" / "state.json"
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "seconds": 1000.0}))  # a long first session
    resumed = train(tiny_config(tiny_model_dir, glue_slice, tmp_path / "run", "tasks=[rte]"), progress=False)
    assert resumed.results["seconds"] >= 1000.0  # carried on (plus this short session), not restarted from 0


def test_when_every_checkpoint_is_damaged_the_error_says_what_to_do(tmp_path):
    model, optimizer, scheduler = tiny_trainer()
    for step in (1, 2):
        checkpoint.save(tmp_path, model, optimizer, scheduler, TrainState(step=step))
        weights = tmp_path / f"step-{step:07d}" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ConfigError, match=r"the newest: .*step-0000002/model.safetensors: not a readable safetensors file.*"
                                          rf"delete {tmp_path} to start over"):
        checkpoint.restore_newest(tmp_path, model, optimizer, scheduler)


def tiny_trainer():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)


class FakeCuda:
    """torch.cuda's RNG functions on a machine with `devices` GPUs, recording what is restored."""

    def __init__(self, monkeypatch, devices: int):
        self.restored: list[tuple[int, torch.Tensor]] = []
        self.states = [torch.full((16,), 10 + i, dtype=torch.uint8) for i in range(devices)]
        monkeypatch.setattr(torch.cuda, "is_available", lambda: devices > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(self.states))
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: self.restored.append((device, state)))


def save_and_restore(tmp_path, monkeypatch, written_on: int, read_on: int) -> FakeCuda:
    model, optimizer, scheduler = tiny_trainer()
    with monkeypatch.context() as patch:
        FakeCuda(patch, written_on)
        path = checkpoint.save(tmp_path / f"{written_on}-{read_on}", model, optimizer, scheduler, TrainState(step=1))
    with monkeypatch.context() as patch:
        reader = FakeCuda(patch, read_on)
        checkpoint.restore(path, model, optimizer, scheduler)
    return reader


def test_cuda_generators_are_saved_and_restored(tmp_path, monkeypatch):
    cpu_before = torch.get_rng_state()
    reader = save_and_restore(tmp_path, monkeypatch, written_on=2, read_on=2)
    assert [d for d, _ in reader.restored] == [0, 1]
    assert all(torch.equal(state, reader.states[d]) for d, state in reader.restored)
    assert torch.equal(torch.get_rng_state(), cpu_before)


@pytest.mark.parametrize("written_on,read_on,restored", [(0, 1, []), (1, 0, []), (2, 1, [0])])
def test_a_checkpoint_moves_between_cpu_and_gpu_machines(tmp_path, monkeypatch, written_on, read_on, restored):
    reader = save_and_restore(tmp_path, monkeypatch, written_on, read_on)
    assert [d for d, _ in reader.restored] == restored
