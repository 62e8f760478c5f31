"""The null model (NP of a layer's entries shuffled) against shuffling the matrix and measuring it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from neural_persistence.core.compute import layer_tree
from neural_persistence.core.null import joining_ranks, null_ranks, null_tree_values, ranks_needed, top_keys
from neural_persistence.core.spanning_tree import tree_values
from neural_persistence.core.weights import to_keys


def _np(values: np.ndarray, scale: float) -> float:
    """NP (p = 2, essential point included) from raw tree values, written out: the oracle's own arithmetic."""
    deaths = values / scale
    deaths = deaths[deaths != 1.0]
    return float(np.sqrt(np.sum((1.0 - deaths) ** 2) + 1.0))


@settings(max_examples=80, deadline=None, derandomize=True)
@given(n=st.integers(1, 40), m=st.integers(1, 40), levels=st.sampled_from([0, 3, 50]), seed=st.integers(0, 2**32 - 1))
def test_the_joining_ranks_are_exactly_the_tree_of_the_permuted_layer(n: int, m: int, levels: int, seed: int) -> None:
    """Put the layer's values, in descending order, at a random sequence of cells (with repeats, as the sampler
    draws them: a repeat is skipped), measure that permuted layer with the engine: its tree values are the sorted
    values at the joining ranks, ties included."""
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(n, m)).astype(np.float32)
    if levels:
        matrix = (np.round(matrix * levels) / levels).astype(np.float32)  # many ties
    total = n * m
    cells = np.concatenate([rng.integers(0, total, 2 * total), rng.permutation(total)])  # repeats; every cell
    distinct = cells[np.sort(np.unique(cells, return_index=True)[1])]  # first occurrences, in order
    values = np.sort(np.abs(matrix).ravel())[::-1]
    permuted = np.empty(total, np.float32)
    permuted[distinct] = values
    expected = layer_tree(permuted.reshape(n, m)).values
    ranks = joining_ranks(n, m, cells)
    np.testing.assert_array_equal(values[ranks].astype(np.float64), expected)
    top = top_keys(to_keys(matrix), total)
    np.testing.assert_array_equal(to_keys(matrix).decode(top[ranks]), expected)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(n=st.integers(2, 300), m=st.integers(2, 300), levels=st.sampled_from([0, 3, 50]), seed=st.integers(0, 2**32 - 1))
def test_the_engines_top_keys_are_the_largest_keys(n: int, m: int, levels: int, seed: int) -> None:
    """The null model takes the layer's largest values from the tree's own pass: they are every key at or above
    some threshold, descending, as many as asked where no crowd of ties sits at the threshold."""
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(n, m)).astype(np.float32)
    if levels:
        matrix = (np.round(matrix * levels) / levels).astype(np.float32)
    keys = to_keys(matrix)
    want = ranks_needed(n, m, 4, seed % 7)
    tree = tree_values(keys, at_least=want)
    everything = top_keys(keys, n * m)
    assert tree.top is not None
    np.testing.assert_array_equal(tree.top, everything[: len(tree.top)])
    assert len(tree.top) == n * m or tree.top[-1] > everything[len(tree.top)]  # a whole tie is in or out
    if not levels:
        assert len(tree.top) >= want
    np.testing.assert_array_equal(tree.values, layer_tree(matrix).values)  # and the tree is the same
    for a, b in zip(null_tree_values(keys, 4, seed % 7, top=tree.top), null_tree_values(keys, 4, seed % 7)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "int8", "int16", "float32"])
@pytest.mark.parametrize("count", [1, 37, 500, 10_000])
def test_top_keys_are_the_largest_keys_with_their_ties(dtype: str, count: int) -> None:
    """Counted (16-bit keys) or thresholded (wider): the largest keys in descending order, the whole tie at the
    last one included, against sorting every key."""
    import torch

    rng = np.random.default_rng(count)
    w = np.round(rng.normal(size=(70, 90)) * 20)
    given = (torch.tensor(w / 20, dtype=torch.bfloat16) if dtype == "bfloat16" else
             np.clip(w, -127, 127).astype(dtype) if dtype.startswith("int") else (w / 20).astype(dtype))
    keys = to_keys(given)
    everything = np.sort((np.abs(keys.data.astype(np.int64)) if keys.data.dtype.kind == "i"
                          else keys.data & keys.mask).ravel())[::-1]
    got = top_keys(keys, count)
    np.testing.assert_array_equal(got, everything[: len(got)])
    assert len(got) >= min(count, everything.size)
    assert len(got) == everything.size or got[-1] > everything[len(got)]


@pytest.mark.parametrize("shape", [(8, 12), (32, 6), (48, 48), (90, 70)])  # the last draws with replacement
def test_null_samples_follow_the_distribution_of_shuffled_layers(shape: tuple[int, int]) -> None:
    """Over many seeds: the same mean NP within sampling error, and a two-sample test cannot tell them apart."""
    rng = np.random.default_rng(sum(shape))
    matrix = rng.standard_t(3, size=shape)  # heavy tails: NP then depends on where the large weights sit
    scale = float(np.abs(matrix).max())
    fast = [_np(t, scale) for t in null_tree_values(to_keys(matrix), 400, seed=1)]
    slow = [_np(layer_tree(rng.permutation(matrix.ravel()).reshape(shape)).values, scale) for _ in range(400)]
    error = np.sqrt(np.var(fast) / 400 + np.var(slow) / 400)
    assert abs(np.mean(fast) - np.mean(slow)) < 4 * error
    assert stats.ks_2samp(fast, slow).pvalue > 1e-3
    original = _np(layer_tree(matrix).values, scale)
    assert np.std(fast) > 0 and original == pytest.approx(original)  # sanity: a spread, a finite original


def test_more_samples_extend_the_same_sequence_and_the_rare_second_round_is_exact() -> None:
    rng = np.random.default_rng(3)
    keys = to_keys(rng.normal(size=(20, 30)))
    four = null_tree_values(keys, 4, seed=9)
    eight = null_tree_values(keys, 8, seed=9)
    for a, b in zip(four, eight[:4]):
        np.testing.assert_array_equal(a, b)
    # Too few top values for the graph to connect: the rest of the layer is drawn, and the tree is still whole.
    matrix = rng.normal(size=(60, 70))
    keys = to_keys(matrix)
    scale = float(np.abs(matrix).max())
    forced = [_np(t, scale) for t in null_tree_values(keys, 300, seed=2, first=100)]
    assert all(len(t) == 60 + 70 - 1 for t in null_tree_values(keys, 3, seed=2, first=100))
    assert all(null_ranks(60, 70, 2, i, first=100)[-1] >= 100 for i in range(300))  # every sample took that round
    slow = [_np(layer_tree(rng.permutation(matrix.ravel()).reshape(60, 70)).values, scale) for _ in range(300)]
    assert stats.ks_2samp(forced, slow).pvalue > 1e-3


def test_cli_null_model_and_baselines_end_to_end(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`analyze --per-head --null 8 --baselines` on checkpoints written by transformers: every row of
    results.csv has its baselines equal to numpy's on the matrix sliced by hand from the saved model, its null
    mean within sampling error of shuffling that matrix explicitly, structural_np = (np - null) / std; counted;
    and a second run measures nothing, while asking for more samples extends them."""
    import pandas as pd
    import torch
    import transformers as tf

    from neural_persistence.cli import main

    torch.manual_seed(0)
    config = tf.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=1, bos_token_id=0, eos_token_id=0)
    model = tf.LlamaForCausalLM(config)
    for step in (0, 10):
        with torch.no_grad():
            for param in model.parameters():
                param.mul_(1.3)  # some change between the checkpoints
        model.save_pretrained(tmp_path / "run" / f"checkpoint-{step}")
    out = tmp_path / "out"
    assert main(["analyze", str(tmp_path / "run"), "--out", str(out), "--per-head", "--null", "8", "--baselines"]) == 0
    table = pd.read_csv(out / "results.csv")
    rng = np.random.default_rng(0)
    seen = 0
    for step in (0, 10):
        loaded = tf.LlamaForCausalLM.from_pretrained(tmp_path / "run" / f"checkpoint-{step}")
        rows = table[table["step"] == step].set_index(["tensor", "head"])
        for name, param in loaded.named_parameters():
            if param.ndim != 2 or "embed" in name or "lm_head" in name:
                continue
            w = param.detach().float().numpy()
            if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
                parts = {h: w[h * 8:(h + 1) * 8] for h in range(w.shape[0] // 8)}
            elif name.endswith("o_proj.weight"):
                parts = {h: w[:, h * 8:(h + 1) * 8] for h in range(2)}
            else:
                parts = {-1: w}
            for head, matrix in parts.items():
                row = rows.loc[(name, head)]
                a = np.abs(matrix.astype(np.float64))
                assert row["rms"] == pytest.approx(np.sqrt(np.mean(matrix.astype(np.float64) ** 2)), rel=1e-9)
                assert row["frobenius"] == pytest.approx(np.linalg.norm(matrix.astype(np.float64)), rel=1e-9)
                assert row["spread"] == pytest.approx(np.var(a / a.max()), rel=1e-9)
                assert row["excess_kurtosis"] == pytest.approx(stats.kurtosis(matrix.ravel().astype(np.float64)), rel=1e-6)
                shuffled = [_np(layer_tree(rng.permutation(matrix.ravel()).reshape(matrix.shape)).values, row["scale"])
                            for _ in range(64)]
                error = np.sqrt(row["null_np_std"] ** 2 / 8 + np.var(shuffled) / 64)
                assert abs(row["null_np"] - np.mean(shuffled)) < 5 * error + 1e-12, (name, head)
                assert row["structural_np"] == pytest.approx((row["np"] - row["null_np"]) / row["null_np_std"])
                assert row["null_samples"] == 8
                seen += 1
    assert seen == len(table) == 2 * 2 * (2 + 1 + 1 + 2 + 3)  # 2 checkpoints x 2 blocks x (q k v o heads, mlp)
    assert main(["analyze", str(tmp_path / "run"), "--out", str(out), "--per-head", "--null", "8", "--baselines"]) == 0
    assert pd.read_csv(out / "results.csv")["null_np"].tolist() == table["null_np"].tolist()
    assert main(["analyze", str(tmp_path / "run"), "--out", str(out), "--per-head", "--null", "16"]) == 0
    more = pd.read_csv(out / "results.csv")
    assert set(more["null_samples"]) == {16} and more["rms"].tolist() == table["rms"].tolist()  # kept


def test_report_sets_np_beside_its_null_and_the_best_baseline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The report's 'Structure or distribution?' table, recomputed from results.csv by hand."""
    import pandas as pd
    import torch
    import transformers as tf

    from neural_persistence.analysis.report import report
    from neural_persistence.cli import main

    torch.manual_seed(1)
    model = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=24,
                                               num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                               bos_token_id=0, eos_token_id=0))
    for step in range(0, 50, 10):
        with torch.no_grad():
            for param in model.parameters():
                if param.ndim == 2:
                    param[:2] *= 1.2  # a few rows grow: an arrangement that a shuffle destroys
        model.save_pretrained(tmp_path / "run" / f"checkpoint-{step}")
    out = tmp_path / "out"
    assert main(["analyze", str(tmp_path / "run"), "--out", str(out), "--null", "4", "--baselines"]) == 0
    result = report(out, interactive=False)
    page = result.html.read_text()
    assert "Structure or distribution?" in page and 'src="plots/null.png"' in page
    table = pd.read_csv(out / "results.csv")
    summary = result.tables["structure"].set_index("role")
    assert sorted(summary.index) == sorted(table["role"].unique())
    for role, part in table.groupby("role"):
        means = part.groupby("step")[["normalized_np", "null_normalized_np", "structural_np", "rms", "outlier_ratio",
                                      "excess_kurtosis", "spread", "frobenius"]].mean()
        r = {c: np.corrcoef(means["normalized_np"], means[c])[0, 1]
             for c in ("rms", "outlier_ratio", "excess_kurtosis", "spread", "frobenius")}
        best = max(r, key=lambda c: abs(r[c]))
        row = summary.loc[role]
        assert row["best_baseline"] == best and row["r_best"] == pytest.approx(r[best])
        assert row["r_null"] == pytest.approx(np.corrcoef(means["normalized_np"], means["null_normalized_np"])[0, 1])
        assert row["structural_np"] == pytest.approx(means["structural_np"].iloc[-1])
        assert row["checkpoints"] == 5


def test_change_summary_says_whether_the_null_moved_too(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Checkpoints written by transformers, 24 steps with fresh noise each. At step 120 one matrix's weights are
    rearranged (the same values, the largest gathered into a few rows: an arrangement the null cannot see, since
    it depends only on the values) and another's are replaced by heavier-tailed ones (a change of distribution,
    which the null sees). `analyze --null 8`, then the change summary of the table under layer normalization
    (globally, the heavier tails would rescale every matrix): the first is a change the null did not share, the
    second one it did."""
    import torch
    import transformers as tf

    from neural_persistence.analysis.table import load_table
    from neural_persistence.analysis.trajectory import change_summary, changes_shown
    from neural_persistence.cli import main

    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=48,
                                               num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                               bos_token_id=0, eos_token_id=0))
    mlp = model.model.layers[0].mlp
    base_up, base_down = mlp.up_proj.weight.detach().clone(), mlp.down_proj.weight.detach().clone()
    flat = base_up.flatten()
    order = torch.argsort(flat.abs(), descending=True)
    gathered = torch.empty_like(flat)
    gathered[torch.arange(flat.numel())] = flat[order]  # row-major: the largest values fill the first rows
    arranged = gathered.reshape(base_up.shape)
    heavy = base_down.sign() * base_down.abs() ** 3
    heavy *= base_down.std() / heavy.std()
    rng = torch.Generator().manual_seed(1)
    for index in range(24):
        step = index * 10
        up, down = (arranged, heavy) if step >= 120 else (base_up, base_down)
        with torch.no_grad():
            mlp.up_proj.weight.copy_(up + 1e-4 * torch.randn(up.shape, generator=rng))
            mlp.down_proj.weight.copy_(down + 1e-4 * torch.randn(down.shape, generator=rng))
        model.save_pretrained(tmp_path / "run" / f"checkpoint-{step}")
    out = tmp_path / "out"
    assert main(["analyze", str(tmp_path / "run"), "--out", str(out), "--null", "8"]) == 0
    frame = load_table(out, normalization="layer")
    summary = change_summary(frame, by="matrix").set_index("role")
    up_changes, down_changes = summary.loc["mlp_up", "changes"], summary.loc["mlp_down", "changes"]
    assert [(c.step, c.kind, c.null_moved) for c in up_changes] == [(120, "level", False)]
    assert [(c.step, c.null_moved) for c in down_changes][:1] == [(120, True)]
    assert not summary.loc["mlp_up", "first_null_moved"] and summary.loc["mlp_down", "first_null_moved"]
    assert all(c.null_moved is not None for found in summary["changes"] for c in found)
    shown = changes_shown(change_summary(frame, by="matrix")).set_index("role")
    assert "the null did not move" in shown.loc["mlp_up", "changes"]
    assert "the null moved too" in shown.loc["mlp_down", "changes"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("layer", ["zero", "constant", "tied_top"])
def test_top_keys_when_ties_at_the_top_outnumber_the_buffer(layer: str) -> None:
    """A layer whose largest key is shared by more entries than the thresholded pass buffers (an all-zero or
    constant layer, e.g. a frozen MLP; or most entries at the maximum) used to halve its threshold share forever:
    now every tied key comes back, as sorting every key says."""
    rng = np.random.default_rng(1)
    w = {"zero": np.zeros((96, 192)), "constant": np.full((96, 192), -0.25),
         "tied_top": np.where(rng.random((96, 192)) < 0.9, 1.0, rng.random((96, 192)))}[layer].astype(np.float32)
    keys = to_keys(w)
    everything = np.sort((keys.data & keys.mask).ravel())[::-1]
    got = top_keys(keys, 1629)
    np.testing.assert_array_equal(got, everything[: len(got)])
    assert len(got) >= 1629 and (len(got) == everything.size or got[-1] > everything[len(got)])


@pytest.mark.timeout(120)
def test_cli_null_model_of_frozen_zero_maps(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`analyze --null` on checkpoints whose MLPs are frozen at zero (attention-only models, saved by transformers)
    finishes, and a constant layer's null is its own NP (every shuffle of it is the layer itself)."""
    import pandas as pd
    import torch
    import transformers as tf

    from neural_persistence.cli import main

    torch.manual_seed(0)
    config = tf.LlamaConfig(vocab_size=32, hidden_size=96, intermediate_size=192, num_hidden_layers=1,
                            num_attention_heads=4, num_key_value_heads=4, bos_token_id=0, eos_token_id=0)
    model = tf.LlamaForCausalLM(config)
    with torch.no_grad():
        for param in model.model.layers[0].mlp.parameters():
            param.zero_()
    model.save_pretrained(tmp_path / "run" / "checkpoint-0")
    out = tmp_path / "out"
    assert main(["analyze", str(tmp_path / "run"), "--out", str(out), "--null", "8"]) == 0
    table = pd.read_csv(out / "results.csv")
    mlp = table[table["role"].str.startswith("mlp")]
    assert len(mlp) == 3 and len(table) == 7
    assert table["null_np"].notna().all()
    np.testing.assert_allclose(mlp["null_np"], mlp["np"], rtol=1e-12)
