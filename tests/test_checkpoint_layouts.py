"""Per-head matrices read from saved checkpoints equal the same matrices sliced by hand from the torch module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as tf

import neural_persistence as npers
from neural_persistence.analysis.analyze import describe, measure_unit, plan_units
from neural_persistence.sources.checkpoints import read_tensor
from neural_persistence.sources.transformer_layout import MatrixSpec, cut, cut_stack


def tiny(arch: str) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    if arch == "llama-gqa":
        cfg = tf.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2)
        return tf.LlamaForCausalLM(cfg), {"heads": 4, "kv": 2}
    if arch == "mistral":
        cfg = tf.MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=1)
        return tf.MistralForCausalLM(cfg), {"heads": 4, "kv": 1}
    if arch == "qwen2":
        cfg = tf.Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2)
        return tf.Qwen2ForCausalLM(cfg), {"heads": 4, "kv": 2}
    if arch == "gpt2":
        cfg = tf.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=16, bos_token_id=0,
                            eos_token_id=0)
        return tf.GPT2LMHeadModel(cfg), {"heads": 4, "kv": 4}
    if arch == "neox":
        cfg = tf.GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64)
        return tf.GPTNeoXForCausalLM(cfg), {"heads": 4, "kv": 4}
    cfg = tf.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=16)
    return tf.BertModel(cfg), {"heads": 4, "kv": 4}


def by_hand(arch: str, model: torch.nn.Module, block: int, heads: int, kv: int) -> dict[tuple[str, int], np.ndarray]:
    """The (out, in) matrix of every role and head of one block, sliced from the live module."""
    hd = 32 // heads
    out: dict[tuple[str, int], np.ndarray] = {}

    def w(t: torch.Tensor) -> np.ndarray:
        return t.detach().float().numpy()

    if arch in ("llama-gqa", "mistral", "qwen2"):
        layer = model.model.layers[block]
        q, k, v, o = (w(getattr(layer.self_attn, f"{r}_proj").weight) for r in "qkvo")
        mlp = {"mlp_gate": w(layer.mlp.gate_proj.weight), "mlp_up": w(layer.mlp.up_proj.weight),
               "mlp_down": w(layer.mlp.down_proj.weight)}
    elif arch == "gpt2":
        layer = model.transformer.h[block]
        fused = w(layer.attn.c_attn.weight).T  # Conv1D stores (in, out)
        q, k, v = fused[:32], fused[32:64], fused[64:]
        o = w(layer.attn.c_proj.weight).T
        mlp = {"mlp_up": w(layer.mlp.c_fc.weight).T, "mlp_down": w(layer.mlp.c_proj.weight).T}
    elif arch == "neox":
        layer = model.gpt_neox.layers[block]
        fused = w(layer.attention.query_key_value.weight).reshape(heads, 3, hd, 32)
        q, k, v = (fused[:, i].reshape(heads * hd, 32) for i in range(3))
        o = w(layer.attention.dense.weight)
        mlp = {"mlp_up": w(layer.mlp.dense_h_to_4h.weight), "mlp_down": w(layer.mlp.dense_4h_to_h.weight)}
    else:
        layer = model.encoder.layer[block]
        q, k, v = (w(getattr(layer.attention.self, r).weight) for r in ("query", "key", "value"))
        o = w(layer.attention.output.dense.weight)
        mlp = {"mlp_up": w(layer.intermediate.dense.weight), "mlp_down": w(layer.output.dense.weight)}
    for role, mat, n in (("q", q, heads), ("k", k, kv), ("v", v, kv)):
        for h in range(n):
            out[(role, h)] = mat[h * hd : (h + 1) * hd]
    for h in range(heads):
        out[("o", h)] = o[:, h * hd : (h + 1) * hd]
    out.update({(role, -1): mat for role, mat in mlp.items()})
    return out


ARCHS = ["llama-gqa", "mistral", "qwen2", "gpt2", "neox", "bert"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("storage", ["single", "sharded-bf16"])
def test_per_head_matrices_match_the_module(arch: str, storage: str, tmp_path: Path) -> None:
    model, geometry = tiny(arch)
    if storage == "sharded-bf16":
        model = model.to(torch.bfloat16)
        model.save_pretrained(tmp_path / "ckpt", max_shard_size="30KB")
        assert (tmp_path / "ckpt" / "model.safetensors.index.json").is_file()
    else:
        model.save_pretrained(tmp_path / "ckpt")
    _, units, problems = plan_units([tmp_path / "ckpt"], per_head=True)
    assert not problems
    expected = by_hand(arch, model, 1, geometry["heads"], geometry["kv"])
    seen = set()
    for unit in units:
        rows = measure_unit(unit.tensor, unit.specs)
        for spec, (head, block, role, r, c, max_abs, tree) in zip(unit.specs, rows):
            if block != 1 or (role, head) not in expected:
                continue
            matrix = expected[(role, head)]
            assert (r, c) == matrix.shape, (role, head)
            reference = npers.layer_tree(matrix)
            np.testing.assert_array_equal(tree, reference.values)
            assert max_abs == reference.max_abs
            seen.add((role, head))
    assert seen == set(expected)


def test_embeddings_are_listed_only_on_request(tmp_path: Path) -> None:
    model, _ = tiny("llama-gqa")
    model.save_pretrained(tmp_path / "m")
    default = {r["role"] for r in describe([tmp_path / "m"])}
    assert "embed" not in default and "lm_head" not in default
    assert {"embed", "lm_head"} <= {r["role"] for r in describe([tmp_path / "m"], include_embeddings=True)}


@pytest.mark.parametrize("arch", ["llama-gqa", "gpt2", "neox"])
def test_heads_of_a_tensor_stack_as_they_cut(arch: str, tmp_path: Path) -> None:
    """All heads of a tensor are measured in one call, from a stack: a view where they are consecutive rows (Llama's
    q, k, v), else one copy of them all (o's columns, GPT-2's transposed Conv1D, NeoX's interleaved rows)."""
    model, _ = tiny(arch)
    model.save_pretrained(tmp_path / "ckpt")
    _, units, _ = plan_units([tmp_path / "ckpt"], per_head=True)
    roles = set()
    for unit in (u for u in units if len(u.specs) > 1):
        data = read_tensor(unit.tensor)
        stack = cut_stack(data, unit.specs)
        assert stack.shape == (len(unit.specs), unit.specs[0].rows, unit.specs[0].cols)
        for k, spec in enumerate(unit.specs):
            np.testing.assert_array_equal(stack[k], cut(data, spec))
        role = unit.specs[0].role
        rows_of_tensor = unit.specs[0].cut[:1] == ("rows",)
        assert np.shares_memory(stack, data) == rows_of_tensor, (arch, role)
        roles.add(role)
    assert {"q", "o"} <= roles


def test_heads_of_different_shapes_do_not_stack() -> None:
    tensor = np.arange(24.0).reshape(6, 4)
    specs = [MatrixSpec("w", 0, "q", 0, 2, 4, ("rows", 0, 2)), MatrixSpec("w", 0, "q", 1, 4, 4, ("rows", 2, 6))]
    assert cut_stack(tensor, specs) is None
