"""Every layout the README claims, end to end: a tiny model built from its transformers config, saved with
``save_pretrained`` (one file in float32, shards in bfloat16), the CLI's ``analyze`` (whole and per head), and
``results.csv`` read back: exactly one row per matrix the oracle expects, each equal to a matrix sliced by hand
from the live module's weights, with NP from scipy's minimum spanning tree.

The slicing here is written per architecture from the modules' own forward code, independently of the library's
planner; mixture-of-experts blocks are sliced from the live module's fused 3-D expert tensors (transformers 5
keeps experts fused in memory and writes them one tensor per expert).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import transformers as tf

import neural_persistence as npers
from neural_persistence.analysis.analyze import describe, plan_units
from neural_persistence.cli import main
from neural_persistence.sources.checkpoints import read_tensor
from neural_persistence.sources.plan import PlanOptions
from neural_persistence.sources.transformer_layout import MatrixSpec, cut, cut_stack
from oracles import scipy_tree

Key = tuple[int, str, int, int, bool]  # block, role, head, expert, shared expert
COMMON = dict(vocab_size=64, num_hidden_layers=2, bos_token_id=0, eos_token_id=0, pad_token_id=0)


@dataclass(frozen=True)
class Arch:
    build: Callable[[], torch.nn.Module]
    slice: Callable[[torch.nn.Module, int], "Block"]


@dataclass
class Block:
    """One block's maps sliced by hand, in (out, in): attention q, k, v, o and the head geometry, and the MLP."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    o: np.ndarray
    heads: int
    kv_heads: int
    mlp: dict[tuple[str, int, bool], np.ndarray]  # (role, expert, shared) -> matrix


def w(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().numpy()


def llama_like(layer: torch.nn.Module, heads: int, kv: int) -> Block:
    a = layer.self_attn
    mlp = {(r, -1, False): w(getattr(layer.mlp, f"{p}_proj").weight)
           for r, p in (("mlp_gate", "gate"), ("mlp_up", "up"), ("mlp_down", "down"))}
    return Block(w(a.q_proj.weight), w(a.k_proj.weight), w(a.v_proj.weight), w(a.o_proj.weight), heads, kv, mlp)


def moe(layer: torch.nn.Module, heads: int, kv: int) -> Block:
    """q, k, v, o, the router and every expert's gate, up and down from the fused (experts, 2I, H) tensors."""
    a, m = layer.self_attn, layer.mlp
    gate_up, down = w(m.experts.gate_up_proj), w(m.experts.down_proj)
    inter = gate_up.shape[1] // 2
    mlp = {("router", -1, False): w(m.gate.weight)}
    for e in range(gate_up.shape[0]):
        mlp[("mlp_gate", e, False)] = gate_up[e, :inter]  # forward: gate, up = linear(x, gate_up[e]).chunk(2)
        mlp[("mlp_up", e, False)] = gate_up[e, inter:]
        mlp[("mlp_down", e, False)] = down[e]
    if hasattr(m, "shared_expert"):
        for r, p in (("mlp_gate", "gate"), ("mlp_up", "up"), ("mlp_down", "down")):
            mlp[(r, -1, True)] = w(getattr(m.shared_expert, f"{p}_proj").weight)
        mlp[("router", -1, True)] = w(m.shared_expert_gate.weight)
    return Block(w(a.q_proj.weight), w(a.k_proj.weight), w(a.v_proj.weight), w(a.o_proj.weight), heads, kv, mlp)


def gpt2(model: torch.nn.Module, b: int) -> Block:
    layer = model.transformer.h[b]
    fused = w(layer.attn.c_attn.weight).T  # Conv1D stores (in, out); forward splits the outputs [q | k | v]
    mlp = {("mlp_up", -1, False): w(layer.mlp.c_fc.weight).T, ("mlp_down", -1, False): w(layer.mlp.c_proj.weight).T}
    return Block(fused[:32], fused[32:64], fused[64:], w(layer.attn.c_proj.weight).T, 4, 4, mlp)


def per_head_interleaved(fused: np.ndarray, heads: int, hd: int) -> tuple[np.ndarray, ...]:
    """NeoX and Bloom: view(heads, 3, head_dim) of the outputs."""
    g = fused.reshape(heads, 3, hd, -1)
    return tuple(g[:, i].reshape(heads * hd, -1) for i in range(3))


def h_to_4h(mlp: torch.nn.Module) -> dict[tuple[str, int, bool], np.ndarray]:
    """The MLP of NeoX, Bloom and Falcon: dense_h_to_4h (up), dense_4h_to_h (down)."""
    return {("mlp_up", -1, False): w(mlp.dense_h_to_4h.weight), ("mlp_down", -1, False): w(mlp.dense_4h_to_h.weight)}


def interleaved(attention: torch.nn.Module, mlp: torch.nn.Module) -> Block:
    """NeoX and Bloom blocks: query_key_value rows per head, dense the output map."""
    q, k, v = per_head_interleaved(w(attention.query_key_value.weight), 4, 8)
    return Block(q, k, v, w(attention.dense.weight), 4, 4, h_to_4h(mlp))


def neox(model: torch.nn.Module, b: int) -> Block:
    layer = model.gpt_neox.layers[b]
    return interleaved(layer.attention, layer.mlp)


def bloom(model: torch.nn.Module, b: int) -> Block:
    layer = model.transformer.h[b]
    return interleaved(layer.self_attention, layer.mlp)


def falcon(model: torch.nn.Module, b: int) -> Block:
    """New decoder architecture, 4 heads in 2 key/value groups: view(kv, heads/kv + 2, head_dim)."""
    layer = model.transformer.h[b]
    g = w(layer.self_attention.query_key_value.weight).reshape(2, 4, 8, 32)
    q, k, v = g[:, :2].reshape(32, 32), g[:, 2].reshape(16, 32), g[:, 3].reshape(16, 32)
    mlp = h_to_4h(layer.mlp)
    return Block(q, k, v, w(layer.self_attention.dense.weight), 4, 2, mlp)


def falcon_multi_query(model: torch.nn.Module, b: int) -> Block:
    """Falcon's multi_query: view(heads + 2, head_dim): all queries, one key head, one value head."""
    layer = model.transformer.h[b]
    fused = w(layer.self_attention.query_key_value.weight)
    mlp = h_to_4h(layer.mlp)
    return Block(fused[:32], fused[32:40], fused[40:48], w(layer.self_attention.dense.weight), 4, 1, mlp)


def phi3(model: torch.nn.Module, b: int) -> Block:
    layer = model.model.layers[b]
    fused = w(layer.self_attn.qkv_proj.weight)  # rows [q (4 x 8) | k (2 x 8) | v (2 x 8)]
    gate_up = w(layer.mlp.gate_up_proj.weight)  # forward: gate, up = gate_up(x).chunk(2)
    mlp = {("mlp_gate", -1, False): gate_up[:48], ("mlp_up", -1, False): gate_up[48:],
           ("mlp_down", -1, False): w(layer.mlp.down_proj.weight)}
    return Block(fused[:32], fused[32:48], fused[48:], w(layer.self_attn.o_proj.weight), 4, 2, mlp)


def mpt(model: torch.nn.Module, b: int) -> Block:
    layer = model.transformer.blocks[b]
    fused = w(layer.attn.Wqkv.weight)  # forward: query, key, value = Wqkv(x).chunk(3)
    mlp = {("mlp_up", -1, False): w(layer.ffn.up_proj.weight), ("mlp_down", -1, False): w(layer.ffn.down_proj.weight)}
    return Block(fused[:32], fused[32:64], fused[64:], w(layer.attn.out_proj.weight), 4, 4, mlp)


def bert(model: torch.nn.Module, b: int) -> Block:
    layer = model.encoder.layer[b]
    s = layer.attention.self
    mlp = {("mlp_up", -1, False): w(layer.intermediate.dense.weight), ("mlp_down", -1, False): w(layer.output.dense.weight)}
    return Block(w(s.query.weight), w(s.key.weight), w(s.value.weight), w(layer.attention.output.dense.weight), 4, 4, mlp)


def llama_family(config: type, model: type, heads: int = 4, kv: int = 2, **extra: int) -> Arch:
    def build() -> torch.nn.Module:
        return model(config(hidden_size=32, intermediate_size=48, num_attention_heads=heads, num_key_value_heads=kv,
                            **extra, **COMMON))
    return Arch(build, lambda m, b: llama_like(m.model.layers[b], heads, kv))


def moe_family(config: type, model: type, kv: int, **extra: int) -> Arch:
    def build() -> torch.nn.Module:
        return model(config(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=kv,
                            num_experts_per_tok=2, **extra, **COMMON))
    return Arch(build, lambda m, b: moe(m.model.layers[b], 4, kv))


ARCHS: dict[str, Arch] = {
    "llama-gqa": llama_family(tf.LlamaConfig, tf.LlamaForCausalLM),
    "mistral-mqa": llama_family(tf.MistralConfig, tf.MistralForCausalLM, kv=1),
    "qwen2": llama_family(tf.Qwen2Config, tf.Qwen2ForCausalLM),
    "gemma": llama_family(tf.GemmaConfig, tf.GemmaForCausalLM, head_dim=16),  # heads x head_dim != hidden
    "olmo": llama_family(tf.OlmoConfig, tf.OlmoForCausalLM, kv=4),
    "gpt2": Arch(lambda: tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=16, vocab_size=64,
                                                          bos_token_id=0, eos_token_id=0)), gpt2),
    "gpt-neox": Arch(lambda: tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(hidden_size=32, num_attention_heads=4,
                                                                    intermediate_size=64, **COMMON)), neox),
    "bloom": Arch(lambda: tf.BloomForCausalLM(tf.BloomConfig(hidden_size=32, n_layer=2, n_head=4, vocab_size=64,
                                                             bos_token_id=0, eos_token_id=0)), bloom),
    "falcon": Arch(lambda: tf.FalconForCausalLM(tf.FalconConfig(hidden_size=32, num_attention_heads=4, num_kv_heads=2,
                                                                new_decoder_architecture=True, **COMMON)), falcon),
    "falcon-mq": Arch(lambda: tf.FalconForCausalLM(tf.FalconConfig(hidden_size=32, num_attention_heads=4,
                                                                   multi_query=True, **COMMON)), falcon_multi_query),
    "phi3": Arch(lambda: tf.Phi3ForCausalLM(tf.Phi3Config(hidden_size=32, intermediate_size=48, num_attention_heads=4,
                                                          num_key_value_heads=2, **COMMON)), phi3),
    "mpt": Arch(lambda: tf.MptForCausalLM(tf.MptConfig(d_model=32, n_heads=4, n_layers=2, expansion_ratio=2,
                                                       vocab_size=64)), mpt),
    "bert": Arch(lambda: tf.BertModel(tf.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=4, intermediate_size=48,
                                                    max_position_embeddings=16)), bert),
    "openai-gpt": Arch(lambda: tf.OpenAIGPTLMHeadModel(tf.OpenAIGPTConfig(n_embd=32, n_layer=2, n_head=4,
                                                                         n_positions=16, vocab_size=64)), gpt2),
    "mixtral": moe_family(tf.MixtralConfig, tf.MixtralForCausalLM, kv=2, num_local_experts=3),
    "olmoe": moe_family(tf.OlmoeConfig, tf.OlmoeForCausalLM, kv=4, num_experts=3),
    "qwen2-moe": moe_family(tf.Qwen2MoeConfig, tf.Qwen2MoeForCausalLM, kv=2, num_experts=3, moe_intermediate_size=24,
                            shared_expert_intermediate_size=40),
}


def tiny(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = ARCHS[arch].build() if arch in ARCHS else EXTRA[arch]()
    with torch.no_grad():  # spread the weights so that ties and the global maximum differ between matrices
        for p in model.parameters():
            p.mul_(1 + torch.rand_like(p))
    return model


def expected_matrices(arch: str, model: torch.nn.Module, per_head: bool) -> dict[Key, np.ndarray]:
    """Every matrix the analysis must report, sliced by hand from the live module."""
    out: dict[Key, np.ndarray] = {}
    for b in range(2):
        blk = ARCHS[arch].slice(model, b)
        hd = blk.q.shape[0] // blk.heads
        for role, mat, n in (("q", blk.q, blk.heads), ("k", blk.k, blk.kv_heads), ("v", blk.v, blk.kv_heads)):
            if per_head:
                out.update({(b, role, h, -1, False): mat[h * hd : (h + 1) * hd] for h in range(n)})
            else:
                out[(b, role, -1, -1, False)] = mat
        if per_head:
            out.update({(b, "o", h, -1, False): blk.o[:, h * hd : (h + 1) * hd] for h in range(blk.heads)})
        else:
            out[(b, "o", -1, -1, False)] = blk.o
        out.update({(b, role, -1, expert, shared): m for (role, expert, shared), m in blk.mlp.items()})
    if arch == "bert":  # the pooler, a linear map outside the blocks
        out[(-1, "other", -1, -1, False)] = w(model.pooler.dense.weight)
    return out


def oracle_table(matrices: dict[Key, np.ndarray]) -> dict[Key, tuple[float, float]]:
    """(NP, normalized NP) of each matrix under global normalization, from scipy's MST (Rieck et al. 2019)."""
    w_max = max(float(np.abs(m).max()) for m in matrices.values())
    out = {}
    for key, m in matrices.items():
        deaths = scipy_tree(m) / w_max
        persistence = np.append(1.0 - deaths[deaths != 1.0], 1.0)
        value = float(np.sqrt(np.sum(persistence**2)))
        out[key] = (value, value / np.sqrt(sum(m.shape) - 1))
    return out


def table_keys(table: pd.DataFrame) -> list[Key]:
    return [(int(r.block), str(r.role), int(r.head), int(r.expert), "shared_expert" in r.tensor)
            for r in table.itertuples()]


def save(model: torch.nn.Module, folder: Path, storage: str) -> Path:
    """``storage``: "single" or "sharded", then "f32" or "bf16" (the model is converted in place)."""
    if storage.endswith("bf16"):
        model.to(torch.bfloat16)
    if storage.startswith("sharded"):
        model.save_pretrained(folder, max_shard_size="20KB")
        assert (folder / "model.safetensors.index.json").is_file()
    else:
        model.save_pretrained(folder)
        assert not (folder / "model.safetensors.index.json").exists()
    return folder


@pytest.mark.parametrize("per_head", [False, True], ids=["whole", "per-head"])
@pytest.mark.parametrize("storage", ["single-f32", "single-bf16", "sharded-f32", "sharded-bf16"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_cli_table_has_every_matrix_equal_to_the_oracle(arch: str, storage: str, per_head: bool, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny(arch)
    ckpt = save(model, tmp_path / "ckpt", storage)
    expected = oracle_table(expected_matrices(arch, model, per_head))
    args = ["analyze", str(ckpt), "--out", str(tmp_path / "out")] + (["--per-head"] if per_head else [])
    assert main(args) == 0
    assert "error" not in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    keys = table_keys(table)
    assert len(keys) == len(set(keys)) == len(expected), sorted(set(expected) ^ set(keys))
    assert set(keys) == set(expected)
    matrices = expected_matrices(arch, model, per_head)
    for key, row in zip(keys, table.itertuples()):
        assert (row.rows, row.cols) == matrices[key].shape, key
        assert row.np == pytest.approx(expected[key][0], rel=1e-12), key
        assert row.normalized_np == pytest.approx(expected[key][1], rel=1e-12), key
    assert len(describe([ckpt], per_head=per_head)) == len(table)  # what describe lists is what the table holds


LIVE = ["llama-gqa", "gpt2", "openai-gpt", "gpt-neox", "falcon", "phi3", "bert", "mixtral", "qwen2-moe", "t5"]
EXTRA = {"t5": lambda: tf.T5Model(tf.T5Config(vocab_size=64, d_model=32, d_kv=8, num_heads=4, num_layers=2, d_ff=48,
                                              decoder_start_token_id=0))}  # tied embeddings, relative positions


@pytest.mark.parametrize("per_head", [False, True], ids=["whole", "per-head"])
@pytest.mark.parametrize("arch", LIVE)
def test_a_live_model_is_measured_as_its_saved_checkpoint(arch: str, per_head: bool, tmp_path: Path) -> None:
    """``npers.compute(model)`` (so EarlyStopping and the callbacks) measures the matrices ``analyze`` measures
    on the checkpoint saved from the same model, with the same numbers and the same global scale."""
    model = tiny(arch)
    save(model, tmp_path / "ckpt", "single-f32")
    npers.analyze([tmp_path / "ckpt"], tmp_path / "out", per_head=per_head)
    table = npers.load_table(tmp_path / "out")
    live = npers.compute(model, per_head=per_head)
    def key(info: dict) -> tuple:
        """Live and saved names agree but for experts and routers (``mlp.experts.gate_up_proj`` is written as
        ``block_sparse_moe.experts.E.w1``, ``mlp.gate`` as ``block_sparse_moe.gate``)."""
        named = info["expert"] < 0 and info["role"] != "router"
        return (info["block"], info["role"], info["head"], info["expert"], "shared_expert" in info["tensor"],
                info["tensor"] if named else "")

    live_keys = [key(layer.info) for layer in live]
    saved_keys = [key(row._asdict()) for row in table.itertuples()]
    assert len(set(live_keys)) == len(live_keys) and sorted(live_keys) == sorted(saved_keys)
    by_key = dict(zip(saved_keys, table.itertuples()))
    for key, layer in zip(live_keys, live):
        row = by_key[key]
        assert layer.shape == (row.rows, row.cols), key
        assert layer.np == pytest.approx(row.np, rel=1e-12), key
        assert layer.scale == row.scale
    assert live.mean_normalized_np == pytest.approx(table["normalized_np"].mean(), rel=1e-12)


@pytest.mark.parametrize("arch", ["llama-gqa", "gpt2", "gpt-neox", "falcon"])
def test_heads_of_a_tensor_stack_as_they_cut(arch: str, tmp_path: Path) -> None:
    """All heads of a tensor are measured in one call, from a stack: a view where they are consecutive rows (Llama's
    q, k, v), else one copy of them all (o's columns, GPT-2's transposed Conv1D, interleaved and grouped rows)."""
    tiny(arch).save_pretrained(tmp_path / "ckpt")
    units = plan_units([tmp_path / "ckpt"], PlanOptions(per_head=True)).units
    roles = set()
    for unit in (u for u in units if len(u.specs) > 1 and all(s.head >= 0 for s in u.specs)):
        data = read_tensor(unit.tensor)
        for role in {s.role for s in unit.specs}:
            specs = [s for s in unit.specs if s.role == role]
            stack = cut_stack(data, specs)
            assert stack.shape == (len(specs), specs[0].rows, specs[0].cols)
            for k, spec in enumerate(specs):
                np.testing.assert_array_equal(stack[k], cut(data, spec))
            assert np.shares_memory(stack, data) == (specs[0].cut[:1] == ("rows",)), (arch, role)
            roles.add(role)
    assert {"q", "o"} <= roles


def test_heads_of_different_shapes_do_not_stack() -> None:
    tensor = np.arange(24.0).reshape(6, 4)
    specs = [MatrixSpec("w", 0, "q", 0, 2, 4, ("rows", 0, 2)), MatrixSpec("w", 0, "q", 1, 4, 4, ("rows", 2, 6))]
    assert cut_stack(tensor, specs) is None


def test_embeddings_are_listed_only_on_request(tmp_path: Path) -> None:
    tiny("llama-gqa").save_pretrained(tmp_path / "m")
    default = {r["role"] for r in describe([tmp_path / "m"])}
    assert "embed" not in default and "lm_head" not in default
    assert {"embed", "lm_head"} <= {r["role"] for r in describe([tmp_path / "m"], include_embeddings=True)}


def test_report_of_a_mixture_of_experts_run_shows_each_expert(tmp_path: Path) -> None:
    """Per-role trajectories average over experts (and say so); each expert has its own change-point series and
    its own cell in the per-expert heatmap of the last checkpoint."""
    from neural_persistence.analysis.trajectory import change_summary, role_trajectories

    model = tiny("mixtral")
    for step in (0, 10, 20):
        with torch.no_grad():
            model.model.layers[0].mlp.experts.gate_up_proj[1].mul_(1.5)  # one expert moves
        model.save_pretrained(tmp_path / "run" / f"checkpoint-{step}")
    out = tmp_path / "out"
    assert main(["analyze", str(tmp_path / "run"), "--out", str(out)]) == 0
    assert main(["report", str(out)]) == 0
    assert (out / "plots" / "experts_last.png").stat().st_size > 10_000
    assert "Experts at the last checkpoint" in (out / "report.html").read_text()
    table = npers.load_table(out)
    means = role_trajectories(table)
    gate = table[(table["role"] == "mlp_gate") & (table["step"] == 20)]
    assert len(gate) == 2 * 3  # two blocks of three experts
    got = means[(means["role"] == "mlp_gate") & (means["step"] == 20)]["normalized_np"].iloc[0]
    assert got == pytest.approx(gate["normalized_np"].mean(), rel=1e-12)
    series = change_summary(table)
    assert len(series) == len(table[table["step"] == 0])  # one series per matrix, experts apart
    assert set(series[series["role"] == "mlp_gate"]["expert"]) == {0, 1, 2}


def test_cli_describe_lists_experts_and_the_router(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny("qwen2-moe").save_pretrained(tmp_path / "moe")
    assert main(["describe", str(tmp_path / "moe")]) == 0
    printed = capsys.readouterr().out
    assert "expert" in printed and "router" in printed and "shared_expert_gate" in printed
    rows = describe([tmp_path / "moe"])
    assert {r["expert"] for r in rows if r["role"] == "mlp_down"} == {-1, 0, 1, 2}  # -1: the shared expert
