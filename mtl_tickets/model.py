"""`MultiTaskModel`: one shared encoder, one small head per task, and the run's gate source
(`model.sharing`, mtl_tickets/sharing.py), which says which units each task runs through. The forward
itself never mentions masks: callers apply the task's gates around it (`sliced.through`, PEFT style)."""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F
from torch import nn

from .registry import TaskSpec
from .sharing import FullSharing, Sharing


class TaskHead(nn.Module):
    """Dropout and one linear layer from the pooled vector to the task's outputs."""

    def __init__(self, hidden: int, outputs: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden, outputs)

    def reset(self, seed: int) -> None:
        """N(0, 0.02) weights and zero bias, as MT-DNN, from a generator of its own so the draw
        does not depend on what was built before (rewinding re-creates the same head)."""
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(self.linear.weight.shape, generator=generator) * 0.02)
            self.linear.bias.zero_()

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(pooled))


class MultiTaskModel(nn.Module):
    """A shared encoder with per-task heads; `forward(batch, task)` gives that task's outputs."""

    def __init__(self, encoder: nn.Module, specs: list[TaskSpec], pooling: str = "mean", head_dropout: float = 0.1):
        super().__init__()
        if pooling == "pooler" and getattr(encoder, "pooler", None) is None:
            raise ValueError(f"pooling 'pooler' needs an encoder with a pooler; {type(encoder).__name__} has none (use mean or cls)")
        self.encoder = encoder
        self.pooling = pooling
        self.specs = {s.name: s for s in specs}
        hidden = encoder.config.hidden_size
        self.task_heads = nn.ModuleDict({s.name: TaskHead(hidden, s.num_outputs, head_dropout) for s in specs})
        self.sharing: Sharing = FullSharing()  # build.build_sharing sets the run's own

    def reset_task_heads(self, seed: int) -> None:
        for name, head in self.task_heads.items():
            head.reset(seed * 1_000_003 + zlib.crc32(name.encode()))

    def pool(self, out, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = out.last_hidden_state  # (B, T, D)
        if self.pooling == "pooler":
            return out.pooler_output
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def forward(self, batch: dict[str, torch.Tensor], task: str) -> torch.Tensor:
        """Logits (B, C) for a classification task, scores (B,) for a regression task."""
        out = self.encoder(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch.get("token_type_ids"),
        )
        logits = self.task_heads[task](self.pool(out, batch["attention_mask"]))
        return logits.squeeze(-1) if self.specs[task].kind == "regression" else logits

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
        """Mean cross-entropy, or MSE for regression (as the reference code's criteria)."""
        if self.specs[task].kind == "regression":
            return F.mse_loss(outputs, labels.to(outputs.dtype))
        return F.cross_entropy(outputs, labels)

    def predictions(self, outputs: torch.Tensor, task: str) -> torch.Tensor:
        return outputs if self.specs[task].kind == "regression" else outputs.argmax(-1)
