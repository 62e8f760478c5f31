"""Deep graph persistence against naive oracles: a triple loop for the bottleneck product, the paper's recipe
written with numpy broadcasting for the whole measure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import minimum_spanning_tree

import neural_persistence as npers
from neural_persistence.core.dgp import bottleneck_product


def _triple_loop(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0], b.shape[1]))
    for i in range(a.shape[0]):
        for k in range(b.shape[1]):
            out[i, k] = max(min(a[i, j], b[j, k]) for j in range(a.shape[1]))
    return out


@settings(max_examples=80, deadline=None, derandomize=True)
@given(n=st.integers(1, 9), m=st.integers(1, 9), c=st.integers(1, 9), ties=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_the_bottleneck_product_is_the_triple_loop(n: int, m: int, c: int, ties: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(size=(n, m)), rng.uniform(size=(m, c))
    if ties:
        a, b = np.round(a * 3) / 3, np.round(b * 3) / 3
    np.testing.assert_array_equal(bottleneck_product(a, b), _triple_loop(a, b))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_bottleneck_product_across_tiles(dtype: type) -> None:
    """Sizes that cross every tile boundary (rows, columns and the inner slices, with ragged ends), zeros that the
    kernel skips, against the product by broadcasting, a few rows at a time."""
    from neural_persistence.core import dgp

    rng = np.random.default_rng(4)
    n, m, c = dgp.TILE_ROWS * 2 + 7, dgp.TILE_INNER * 3 + 5, dgp.TILE_COLS + 9
    a, b = rng.uniform(size=(n, m)), rng.uniform(size=(m, c))
    a[a < 0.2] = 0.0
    a, b = a.astype(dtype), b.astype(dtype)
    expected = np.vstack([np.minimum(a[i:i + 16, :, None], b[None]).max(axis=1) for i in range(0, n, 16)])
    got = bottleneck_product(a, b, dtype)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, expected)


def _recipe(weights: list[np.ndarray]) -> float:
    """The published recipe, spelled out: z-score, |.|, divide by the global max, fold by broadcasting
    min then max over the middle axis, then NP of the result's maximum spanning tree (scipy) at scale 1."""
    z = [np.abs((w - w.mean()) / w.std()).T for w in weights]
    top = max(x.max() for x in z)
    z = [x / top for x in z]
    s = z[0]
    for nxt in z[1:]:
        s = np.minimum(s[:, :, None], nxt[None, :, :]).max(axis=1)
    n, m = s.shape
    graph = np.zeros((n + m, n + m))
    graph[:n, n:] = -(s + 1e-300)  # a minimum spanning tree of negated weights is a maximum one; zero means no edge
    tree = -minimum_spanning_tree(graph).data
    deaths = tree[tree != 1.0]
    return float(np.sqrt(np.sum((1 - deaths) ** 2) + 1.0))


def test_dgp_of_a_small_mlp_follows_the_recipe_and_takes_torch_modules() -> None:
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(7, 11), torch.nn.ReLU(), torch.nn.Linear(11, 5), torch.nn.ReLU(),
                              torch.nn.Linear(5, 3))
    weights = [m.weight.detach().double().numpy() for m in mlp if isinstance(m, torch.nn.Linear)]
    result = npers.deep_graph_persistence(mlp)
    assert result.matrix.shape == (7, 3)
    assert result.np == pytest.approx(_recipe(weights), rel=1e-12)
    assert result.normalized_np == pytest.approx(result.np / np.sqrt(7 + 3 - 1), rel=1e-12)
    assert npers.deep_graph_persistence(weights).np == result.np
    with pytest.raises(ValueError, match="not a chain"):
        npers.deep_graph_persistence([weights[0], weights[0]])
    with pytest.raises(ValueError, match="constant"):
        npers.deep_graph_persistence([np.ones((3, 4))])


def _scipy_np(folded: np.ndarray) -> tuple[float, float]:
    """NP and normalized NP (p = 2) of a folded matrix at scale 1, by scipy's minimum spanning tree."""
    n, m = folded.shape
    graph = np.zeros((n + m, n + m))
    graph[:n, n:] = -(folded + 1e-300)
    tree = -minimum_spanning_tree(graph).data
    deaths = tree[tree != 1.0]
    value = float(np.sqrt(np.sum((1 - deaths) ** 2) + 1.0))
    return value, value / np.sqrt(n + m - 1)


def _scaled(*layers: np.ndarray) -> list[np.ndarray]:
    z = [np.abs((w - w.mean()) / w.std()) for w in layers]
    top = max(x.max() for x in z)
    return [x / top for x in z]


def _broadcast_fold(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Two layers in nn.Linear orientation folded the obvious way: min over a broadcast cube, max over the middle."""
    return np.minimum(first.T[:, :, None], second.T[None, :, :]).max(axis=1)


def test_cli_dgp_of_transformer_paths_matches_an_oracle_and_resumes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`neural-persistence dgp` on two Llama checkpoints written by transformers (grouped-query attention: 4 query
    heads on 2 key/value heads, a gated MLP): every row of dgp.csv equals the paths built by hand from the loaded
    model's parameters (broadcast fold, scipy spanning tree), counted; an interrupted table is completed."""
    import pandas as pd
    import transformers as tf

    from neural_persistence.cli import main

    torch.manual_seed(0)
    config = tf.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, bos_token_id=0, eos_token_id=0)
    model = tf.LlamaForCausalLM(config)
    for step in (0, 10):
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.05 * torch.randn_like(param))
        model.save_pretrained(tmp_path / "run" / f"checkpoint-{step}")
    out = tmp_path / "out"
    assert main(["dgp", str(tmp_path / "run"), "--out", str(out), "--float64"]) == 0
    table = pd.read_csv(out / "dgp.csv")
    hd, seen = 4, 0
    for step in (0, 10):
        loaded = tf.LlamaForCausalLM.from_pretrained(tmp_path / "run" / f"checkpoint-{step}")
        for b, layer in enumerate(loaded.model.layers):
            w = {name: p.detach().double().numpy() for name, p in layer.named_parameters()}
            rows = table[(table["step"] == step) & (table["block"] == b)].set_index(["path", "head"])
            up, gate, down = _scaled(w["mlp.up_proj.weight"], w["mlp.gate_proj.weight"], w["mlp.down_proj.weight"])
            expected = {("mlp", -1): _scipy_np(_broadcast_fold(np.maximum(up, gate), down))}
            for h in range(4):
                g = h // 2
                v = w["self_attn.v_proj.weight"][g * hd:(g + 1) * hd]
                o = w["self_attn.o_proj.weight"][:, h * hd:(h + 1) * hd]
                q = w["self_attn.q_proj.weight"][h * hd:(h + 1) * hd]
                k = w["self_attn.k_proj.weight"][g * hd:(g + 1) * hd]
                expected[("vo", h)] = _scipy_np(_broadcast_fold(*_scaled(v, o)))
                expected[("qk", h)] = _scipy_np(_broadcast_fold(*_scaled(q, k.T)))
            assert sorted(rows.index) == sorted(expected)
            for key, (value, normalized) in expected.items():
                assert rows.loc[key, "np"] == pytest.approx(value, rel=1e-9), (step, b, key)
                assert rows.loc[key, "normalized_np"] == pytest.approx(normalized, rel=1e-9)
                assert (rows.loc[key, "rows"], rows.loc[key, "cols"]) == (16, 16)
                seen += 1
    assert seen == len(table) == 2 * 2 * (1 + 4 + 4)
    # Interrupted after the first block: started again, only the rest is measured, and the table is whole.
    lines = (out / "dgp.csv").read_text().splitlines()
    (out / "dgp.csv").write_text("\n".join(lines[:1 + 9]) + "\n")
    assert main(["dgp", str(tmp_path / "run"), "--out", str(out), "--float64"]) == 0
    again = pd.read_csv(out / "dgp.csv")
    key = ["step", "block", "path", "head"]
    pd.testing.assert_frame_equal(again.sort_values(key).reset_index(drop=True),
                                  table.sort_values(key).reset_index(drop=True))
    # float32 folding (the default) rounds only the scaled weights.
    assert main(["dgp", str(tmp_path / "run"), "--out", str(tmp_path / "f32"), "--paths", "mlp,vo"]) == 0
    f32 = pd.read_csv(tmp_path / "f32" / "dgp.csv").set_index(key).sort_index()
    assert set(f32.index.get_level_values("path")) == {"mlp", "vo"}
    np.testing.assert_allclose(f32["np"], table.set_index(key).sort_index().loc[f32.index, "np"], rtol=1e-5)


def test_cli_dgp_of_an_npz_chain(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(2)
    layers = [rng.normal(size=(9, 6)), rng.normal(size=(4, 9))]
    np.savez(tmp_path / "mlp.npz", first=layers[0], second=layers[1])
    from neural_persistence.cli import main

    assert main(["dgp", str(tmp_path / "mlp.npz"), "--float64"]) == 0
    value = _scipy_np(_broadcast_fold(*_scaled(*layers)))[0]
    assert f"NP {value:.6f}" in capsys.readouterr().out
