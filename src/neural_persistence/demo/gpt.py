"""A small character-level GPT in plain PyTorch, saved as Hugging Face-style checkpoints our reader understands.

Pre-norm decoder blocks with ``F.scaled_dot_product_attention`` (causal) and a GELU MLP. Parameter names follow
the Llama layout (``model.layers.{i}.self_attn.q_proj.weight``, ``mlp.up_proj``, ...) and ``config.json`` gives
the head counts, so ``analyze --per-head`` cuts every attention map into its heads.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["CharGPT", "GPTConfig", "save_checkpoint"]


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    context: int = 128
    dropout: float = 0.0

    @property
    def intermediate_size(self) -> int:
        return 4 * self.hidden_size


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(h, h, bias=False) for _ in range(4))
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, h // self.heads).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)),
                                           is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, h))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.down_proj(F.gelu(self.up_proj(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.input_layernorm = nn.LayerNorm(cfg.hidden_size)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = nn.LayerNorm(cfg.hidden_size)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.embed_positions = nn.Embedding(cfg.context, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = nn.LayerNorm(cfg.hidden_size)


class CharGPT(nn.Module):
    """Decoder-only transformer over characters."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = Body(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, Any]:
        t = idx.shape[1]
        x = self.model.embed_tokens(idx) + self.model.embed_positions(torch.arange(t, device=idx.device))
        for block in self.model.layers:
            x = block(x)
        logits = self.lm_head(self.model.norm(x))
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


def save_checkpoint(model: CharGPT, folder: Path, step: int, tokens: int, history: list[dict[str, Any]],
                    vocab: str) -> Path:
    """``model.safetensors`` + ``config.json`` + ``trainer_state.json`` in the layout ``analyze`` reads."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {"model_type": "char-gpt", **asdict(model.cfg), "intermediate_size": model.cfg.intermediate_size,
              "num_key_value_heads": model.cfg.num_attention_heads, "vocab": vocab}
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    (folder / "trainer_state.json").write_text(
        json.dumps({"global_step": step, "num_input_tokens_seen": tokens, "log_history": history}, indent=1)
    )
    return folder
