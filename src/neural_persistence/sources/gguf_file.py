"""Read the weights of a GGUF file (llama.cpp) one tensor at a time, through the ``gguf`` package.

GGUF keeps a model's tensors under llama.cpp's names (``blk.3.attn_q.weight``), with its dimensions listed
innermost first, quantized in blocks (Q4_0, Q8_0, K-quants, ...) or as F32 / F16 / BF16. Here each tensor is:

* named as the Hugging Face model of that architecture names it (``model.layers.3.self_attn.q_proj.weight`` for
  ``llama``), so roles, heads and tables are those of the same model saved by transformers; tensors of other
  architectures keep their GGUF names, which the planner's role rules also know;
* dequantized alone, to float32 (F32 and F16 tensors are mapped, not copied; BF16 stays 16-bit patterns);
* for q and k of ``llama``-type models, put back in Hugging Face's row order: llama.cpp's converter interleaves
  the two halves of each head's rotary dimensions (``permute`` in ``convert_hf_to_gguf.py``); undone here, so that
  heads cut as in the HF layout and NP equals that of the original weights.

The model's shape comes from the metadata (``llama.attention.head_count``, ``head_count_kv``,
``embedding_length``, ...), as a ``config.json`` would give it.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..core.weights import BFloat16Bits
from .safetensors_file import CorruptCheckpointError

__all__ = ["GGUFFile", "gguf_file"]

#: llama.cpp's tensor names -> Hugging Face's, for the architectures laid out as Llama.
_LLAMA_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
#: Architectures whose q and k llama.cpp's converter permutes, and which are renamed to Llama's HF names.
LLAMA_LIKE = ("llama", "mistral", "granite")
_BLOCK = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}


def _require_gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise ImportError("reading .gguf files needs the gguf package: pip install 'neural-persistence[gguf]'") from None
    return gguf


def unpermute_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k permutation: per head, rows interleaved as (pair, 2) back to (2, pair) halves."""
    rows = w.shape[0]
    if heads <= 0 or rows % (2 * heads):
        raise CorruptCheckpointError(f"cannot cut {rows} rows into {heads} heads of rotary pairs")
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class GGUFFile:
    """The tensors of one ``.gguf`` file, by name (see the module docstring); ``config``: the model's shape as a
    ``config.json`` would hold it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        gguf = _require_gguf()
        try:
            self._reader = gguf.GGUFReader(str(self.path), "r")
        except (ValueError, OSError, IndexError, KeyError, TypeError) as err:
            raise CorruptCheckpointError(f"{self.path}: not a readable GGUF file ({type(err).__name__}: {err})") from None
        self.architecture = str(self._field("general.architecture") or "")
        self.config = self._config()
        self._llama = self.architecture in LLAMA_LIKE
        self.tensors: dict[str, Any] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, str] = {}
        for tensor in self._reader.tensors:
            name = self.hf_name(tensor.name)
            self.tensors[name] = tensor
            self.shapes[name] = tuple(int(d) for d in reversed(tensor.shape.tolist()))  # GGUF lists innermost first
            self.dtypes[name] = tensor.tensor_type.name

    def _field(self, key: str) -> Any:
        field = self._reader.fields.get(key)
        if field is None:
            return None
        try:
            return field.contents()
        except (ValueError, IndexError, TypeError):
            return None

    def _config(self) -> dict[str, Any]:
        arch = self.architecture
        keys = {"hidden_size": "embedding_length", "num_attention_heads": "attention.head_count",
                "num_key_value_heads": "attention.head_count_kv", "intermediate_size": "feed_forward_length",
                "num_hidden_layers": "block_count", "head_dim": "attention.key_length"}
        config: dict[str, Any] = {"model_type": arch} if arch else {}
        for hf, key in keys.items():
            value = self._field(f"{arch}.{key}")
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                config[hf] = int(value)
        return config

    def hf_name(self, name: str) -> str:
        """The Hugging Face name of a GGUF tensor (Llama-like architectures), else the GGUF name."""
        if self.architecture not in LLAMA_LIKE:
            return name
        if name in _GLOBAL:
            return _GLOBAL[name]
        match = _BLOCK.match(name)
        if match and match.group(2) in _LLAMA_NAMES:
            return f"model.layers.{match.group(1)}.{_LLAMA_NAMES[match.group(2)]}.{match.group(3)}"
        return name

    def read(self, name: str) -> Any:
        """One tensor in the HF (out, in) layout: F32/F16 mapped, BF16 as bits, quantized types dequantized to
        float32; q and k of Llama-like models un-permuted."""
        gguf = _require_gguf()
        tensor = self.tensors[name]
        kind = tensor.tensor_type
        shape = self.shapes[name]
        try:
            if kind in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                data: Any = np.asarray(tensor.data).reshape(shape)
            elif kind == gguf.GGMLQuantizationType.BF16:
                data = np.asarray(tensor.data).view(np.uint16).reshape(shape)
            else:
                data = gguf.quants.dequantize(np.asarray(tensor.data), kind).reshape(shape)
        except (ValueError, NotImplementedError, TypeError) as err:
            raise CorruptCheckpointError(f"{self.path}: tensor {tensor.name!r} ({kind.name}, {shape}) cannot be "
                                         f"dequantized: {err}") from None
        if self._llama and (name.endswith("q_proj.weight") or name.endswith("k_proj.weight")):
            heads = self.config.get("num_attention_heads", 0)
            if name.endswith("k_proj.weight"):
                heads = self.config.get("num_key_value_heads", heads)
            bits = isinstance(data, np.ndarray) and data.dtype == np.uint16 and kind == gguf.GGMLQuantizationType.BF16
            data = unpermute_rows(np.asarray(data), int(heads))
            if bits:
                return BFloat16Bits(np.ascontiguousarray(data))
        elif kind == gguf.GGMLQuantizationType.BF16:
            return BFloat16Bits(data)
        return data


def gguf_file(path: Path) -> GGUFFile:
    """One reader per file (its header parsed once, again when the file changes)."""
    info = path.stat()
    return _gguf_file(path, info.st_mtime_ns, info.st_size)


@functools.lru_cache(maxsize=4)
def _gguf_file(path: Path, mtime: int, size: int) -> GGUFFile:
    return GGUFFile(path)
