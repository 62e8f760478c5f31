"""Bad files, bad metadata and faults: one bad checkpoint never stops a run, and no fault leaves a wrong table.

Each damaged checkpoint sits beside a good one in the same run; ``analyze`` goes through the CLI; the good one
must be in ``results.csv`` whole, and the bad one's message must name its file.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import transformers as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import neural_persistence as npers
from neural_persistence.analysis.analyze import describe
from neural_persistence.analysis.store import CorruptTreeError, Store
from neural_persistence.cli import main
from neural_persistence.sources.safetensors_file import CorruptCheckpointError, SafetensorsFile


def tiny_llama(folder: Path) -> Path:
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=0, eos_token_id=0)
    tf.LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("good") / "ckpt")


def split(file: Path) -> tuple[dict, bytes]:
    raw = file.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def write(file: Path, header: object, data: bytes, raw_header: bytes | None = None) -> None:
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    file.write_bytes(struct.pack("<Q", len(text)) + text + data)


def first_weight(header: dict) -> str:
    return next(k for k in header if k.endswith("q_proj.weight"))


def edit_header(change: Callable[[dict], object]) -> Callable[[Path], Path]:
    def damage(folder: Path) -> Path:
        file = folder / "model.safetensors"
        header, data = split(file)
        write(file, change(header), data)
        return file
    return damage


def set_entry(field: str, value: object) -> Callable[[dict], dict]:
    def change(header: dict) -> dict:
        header[first_weight(header)][field] = value
        return header
    return change


def drop_entry_field(field: str) -> Callable[[dict], dict]:
    def change(header: dict) -> dict:
        del header[first_weight(header)][field]
        return header
    return change


def shift_offsets(delta_start: int, delta_end: int) -> Callable[[dict], dict]:
    def change(header: dict) -> dict:
        entry = header[first_weight(header)]
        entry["data_offsets"] = [entry["data_offsets"][0] + delta_start, entry["data_offsets"][1] + delta_end]
        return header
    return change


def duplicate_name(folder: Path) -> Path:
    file = folder / "model.safetensors"
    header, data = split(file)
    name = first_weight(header)
    text = json.dumps(header)
    again = json.dumps({name: header[name]})[1:-1]
    write(file, None, data, (text[:-1] + ", " + again + "}").encode())
    return file


def replace_file(make: Callable[[Path], None]) -> Callable[[Path], Path]:
    def damage(folder: Path) -> Path:
        file = folder / "model.safetensors"
        file.unlink()
        make(file)
        return file
    return damage


def append_bytes(folder: Path) -> Path:
    with open(folder / "model.safetensors", "ab") as f:
        f.write(b"\0" * 64)
    return folder / "model.safetensors"


def write_json(name: str, content: object) -> Callable[[Path], Path]:
    def damage(folder: Path) -> Path:
        (folder / name).write_text(content if isinstance(content, str) else json.dumps(content))
        return folder / name
    return damage


def config_field(field: str, value: object) -> Callable[[Path], Path]:
    def damage(folder: Path) -> Path:
        config = json.loads((folder / "config.json").read_text())
        config[field] = value
        (folder / "config.json").write_text(json.dumps(config))
        return folder / "config.json"
    return damage


def index(content: object) -> Callable[[Path], Path]:
    def damage(folder: Path) -> Path:
        path = folder / "model.safetensors.index.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return path
    return damage


DAMAGES: dict[str, Callable[[Path], Path]] = {
    "header is a list": edit_header(lambda h: [1, 2]),
    "header is a number": edit_header(lambda h: 42),
    "entry not an object": edit_header(lambda h: {**h, first_weight(h): "x"}),
    "entry lacks data_offsets": edit_header(drop_entry_field("data_offsets")),
    "entry lacks dtype": edit_header(drop_entry_field("dtype")),
    "offsets are strings": edit_header(set_entry("data_offsets", ["0", "x"])),
    "negative start offset": edit_header(shift_offsets(-65536, 0)),
    "overlapping offsets": edit_header(shift_offsets(-4, -4)),
    "offsets leave a gap": edit_header(shift_offsets(4, 4)),
    "duplicate tensor names": duplicate_name,
    "float in a shape": edit_header(set_entry("shape", [8.5, 32])),
    "negative shape": edit_header(set_entry("shape", [-32, -32])),
    "metadata not strings": edit_header(lambda h: {**h, "__metadata__": {"format": 1}}),
    "bytes after the last tensor": append_bytes,
    "directory named model.safetensors": replace_file(lambda p: p.mkdir()),
    "symlink loop named model.safetensors": replace_file(lambda p: p.symlink_to(p)),
    "FIFO named model.safetensors": replace_file(lambda p: os.mkfifo(p)),
    "index without weight_map": index({"metadata": {}}),
    "index with a list": index([1, 2]),
    "index not JSON": index("{not json"),
    "config heads a string": config_field("num_attention_heads", "4"),
    "config heads a float": config_field("num_attention_heads", 4.0),
    "config heads a list": config_field("num_attention_heads", [4]),
    "config head_dim a string": config_field("head_dim", "16"),
    "config is a list": write_json("config.json", [1, 2]),
    "trainer_state is a list": write_json("trainer_state.json", [1]),
    "trainer_state garbage": write_json("trainer_state.json", "\x00\x01garbage"),
    "trainer_state tokens a string": write_json("trainer_state.json", {"num_input_tokens_seen": "many"}),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_checkpoint_beside_a_good_one(damage: str, good: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(good, run / "checkpoint-0")
    shutil.copytree(good, run / "checkpoint-10")
    culprit = DAMAGES[damage](run / "checkpoint-10")
    assert main(["analyze", str(run), "--out", str(tmp_path / "out"), "--per-head"]) == 0
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    expected = len(describe([good], per_head=True))
    assert (table["checkpoint"] == "checkpoint-0").sum() == expected  # the good one, whole
    with Store(tmp_path / "out", write=False) as store:
        errors = [(ckpt, message) for _, ckpt, _, message in store.errors()]
    assert errors, "the damage went unnoticed"
    assert all(ckpt == "checkpoint-10" for ckpt, _ in errors)
    assert any(str(culprit) in message for _, message in errors), errors


def test_misleading_messages_are_gone(good: Path, tmp_path: Path) -> None:
    for name, fragment in (("negative start offset", "data_offsets must be two integers 0 <= start <= end"),
                           ("config head_dim a string", "head_dim must be a positive integer, got '16'"),
                           ("negative shape", "shape must be a list of non-negative integers")):
        folder = tmp_path / name.replace(" ", "_")
        shutil.copytree(good, folder)
        DAMAGES[name](folder)
        summary = npers.analyze([folder], tmp_path / f"out-{folder.name}", per_head=True)
        assert any(fragment in message for _, _, message in summary.errors), (name, summary.errors)


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=3))
def test_random_header_damage_is_read_as_the_official_reader_does_or_refused(flips: list[tuple[int, int]]) -> None:
    """Flipped header bytes: where safetensors' own reader refuses the file, analyze records a
    CorruptCheckpointError naming it and stores nothing; where it accepts the file, analyze measures every weight
    exactly as that reader loads it. Never anything else (no other exception, no partial table)."""
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "m.safetensors"
        save_file({"layers.0.mlp.up_proj.weight": rng.normal(size=(3, 4)).astype(np.float32),
                   "layers.0.mlp.down_proj.weight": rng.normal(size=(4, 3)).astype(np.float32)}, str(file))
        raw = bytearray(file.read_bytes())
        header_end = 8 + struct.unpack("<Q", bytes(raw[:8]))[0]
        for position, value in flips:
            raw[position % header_end] = value
        file.write_bytes(bytes(raw))
        try:
            official = load_file(str(file))
        except Exception:
            official = None
        if official is None:
            with pytest.raises(CorruptCheckpointError, match=str(file)):
                SafetensorsFile(file)
        summary = npers.analyze([file], Path(tmp) / "out")  # never raises
        assert all(str(file) in message for _, _, message in summary.errors)
        table = npers.load_table(Path(tmp) / "out")
        if official is None:
            assert summary.errors and table.empty
            return
        weights = {r["tensor"] for r in describe([file])}
        assert summary.errors == [] and set(table["tensor"]) == weights
        with Store(Path(tmp) / "out", write=False) as store:
            for tree in store.trees():
                np.testing.assert_array_equal(tree.tree, npers.layer_tree(official[tree.tensor]).values)


def test_a_legacy_torch_save_file_is_read(tmp_path: Path) -> None:
    model_dir = tiny_llama(tmp_path / "st")
    state = tf.LlamaForCausalLM.from_pretrained(model_dir).state_dict()
    (tmp_path / "bin").mkdir()
    shutil.copy(model_dir / "config.json", tmp_path / "bin" / "config.json")
    torch.save(state, tmp_path / "bin" / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    summary = npers.analyze([tmp_path / "bin"], tmp_path / "out-bin")
    assert summary.errors == []
    npers.analyze([model_dir], tmp_path / "out-st")
    np.testing.assert_array_equal(npers.load_table(tmp_path / "out-bin")["np"],
                                  npers.load_table(tmp_path / "out-st")["np"])


@pytest.fixture
def analysed(good: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    npers.analyze([good], out, per_head=True)
    return out


@pytest.mark.parametrize("damage", ["truncated", "garbage", "zeroed header"])
def test_a_damaged_database_is_an_error_naming_it(damage: str, analysed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = analysed / "results.sqlite"
    for extra in ("results.sqlite-wal", "results.sqlite-shm"):
        (analysed / extra).unlink(missing_ok=True)
    raw = path.read_bytes()
    path.write_bytes({"truncated": raw[: len(raw) // 3], "garbage": os.urandom(len(raw)),
                      "zeroed header": b"\0" * 100 + raw[100:]}[damage])
    assert main(["report", str(analysed)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("damage", ["a flipped byte", "cut short", "a value dropped", "not a blob"])
def test_a_damaged_tree_is_an_error_never_a_wrong_number(damage: str, analysed: Path) -> None:
    with sqlite3.connect(analysed / "results.sqlite") as db:
        rowid, blob = db.execute("SELECT rowid, tree FROM trees WHERE role = 'mlp_up'").fetchone()
        bad = {"a flipped byte": blob[:9] + bytes([blob[9] ^ 1]) + blob[10:], "cut short": blob[: len(blob) // 2],
               "a value dropped": blob[:1] + struct.pack("<I", __import__("zlib").crc32(blob[5:-2])) + blob[5:-2],
               "not a blob": 12345}[damage]
        db.execute("UPDATE trees SET tree = ? WHERE rowid = ?", (bad, rowid))
    with pytest.raises(CorruptTreeError, match=r"results\.sqlite: .*tensor 'model\.layers\.0\.mlp\.up_proj\.weight'"):
        npers.load_table(analysed)


def test_report_says_when_an_analysis_is_incomplete(good: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    for step in (0, 10):
        shutil.copytree(good, tmp_path / "run" / f"checkpoint-{step}")
    analysed = tmp_path / "out"
    npers.analyze([tmp_path / "run"], analysed)
    with sqlite3.connect(analysed / "results.sqlite") as db:  # as a run killed part-way would leave it
        db.execute("DELETE FROM done WHERE tensor LIKE '%mlp%' AND checkpoint = 'checkpoint-10'")
    assert main(["report", str(analysed)]) == 0
    printed = capsys.readouterr().out
    assert "11 of 14 planned tensors measured, 3 not measured yet" in printed
    assert "3 not measured yet" in (analysed / "report.html").read_text()
    assert main(["compare", str(analysed), "--out", str(tmp_path / "cmp")]) == 0
    assert "3 not measured yet" in (tmp_path / "cmp" / "compare.html").read_text()


def test_three_writers_into_one_out_all_finish_with_the_right_table(good: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    procs = [subprocess.Popen([sys.executable, "-m", "neural_persistence.cli", "analyze", str(good), "--out", str(out),
                               "--per-head"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    npers.analyze([good], tmp_path / "alone", per_head=True)
    pd.testing.assert_frame_equal(npers.load_table(out), npers.load_table(tmp_path / "alone"))


def test_a_full_disk_leaves_the_previous_table_and_says_so_in_one_line(good: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and tmpfs to make a small disk")
    try:
        out = disk / "out"
        assert main(["analyze", str(good), "--out", str(out)]) == 0
        before = (out / "results.csv").read_bytes()
        filler = disk / "filler"
        with open(filler, "wb", buffering=0) as f:  # fill the disk to the last byte
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        capsys.readouterr()
        assert main(["analyze", str(good), "--out", str(out), "--per-head"]) == 1
        err = capsys.readouterr().err
        assert "no space left on the device" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert (out / "results.csv").read_bytes() == before
        filler.unlink()
        assert main(["analyze", str(good), "--out", str(out), "--per-head"]) == 0
        npers.analyze([good], tmp_path / "alone", per_head=True)
        pd.testing.assert_frame_equal(npers.load_table(out, per_head=True), npers.load_table(tmp_path / "alone"))
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_config_of_another_model_type_does_not_cut_along_the_wrong_axis(good: Path, tmp_path: Path) -> None:
    """A ``model_type: gpt2`` config on a Llama checkpoint: orientation comes from the tensors' names (only GPT-2's
    ``c_*`` maps are stored (in, out)), so every head is cut as in the right config; heads that do not fit the
    shapes are errors naming the tensor."""
    shutil.copytree(good, tmp_path / "wrong")
    config = json.loads((tmp_path / "wrong" / "config.json").read_text())
    (tmp_path / "wrong" / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    summary = npers.analyze([tmp_path / "wrong"], tmp_path / "out-wrong", per_head=True)
    assert summary.errors == []
    npers.analyze([good], tmp_path / "out-good", per_head=True)
    np.testing.assert_array_equal(npers.load_table(tmp_path / "out-wrong")["np"],
                                  npers.load_table(tmp_path / "out-good")["np"])
    (tmp_path / "wrong" / "config.json").write_text(json.dumps({**config, "num_key_value_heads": 4}))
    summary = npers.analyze([tmp_path / "wrong"], tmp_path / "out-kv", per_head=True)
    assert any("k_proj.weight' has 16 outputs, but the config gives 4 heads x head_dim 8 = 32" in m
               for _, _, m in summary.errors)


def test_report_of_a_single_model_and_compare_of_two_sizes(good: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A pretrained model folder has no step: the report shows roles by depth instead of crashing; two models of
    different sizes are compared by relative depth; a per-head and a whole analysis are not mixed."""
    torch.manual_seed(1)
    big = tmp_path / "big"
    tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                       num_attention_heads=4, num_key_value_heads=2, bos_token_id=0,
                                       eos_token_id=0)).save_pretrained(big)
    for name, path in (("small", good), ("big", big)):
        assert main(["analyze", str(path), "--out", str(tmp_path / name)]) == 0
    assert main(["report", str(tmp_path / "small")]) == 0
    assert (tmp_path / "small" / "plots" / "depth.png").stat().st_size > 10_000
    assert "By depth and role" in (tmp_path / "small" / "report.html").read_text()
    assert main(["compare", str(tmp_path / "small"), str(tmp_path / "big"), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "plots" / "compare_depth.png").stat().st_size > 10_000
    assert main(["analyze", str(big), "--out", str(tmp_path / "big-heads"), "--per-head"]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "small"), str(tmp_path / "big-heads"), "--out", str(tmp_path / "c2")]) == 2
    assert "measured with different options" in capsys.readouterr().err
    table = pd.read_csv(tmp_path / "big-heads" / "results.csv")
    assert set(table["normalization"]) == {"global"} and set(table["per_head"]) == {True} and set(table["p"]) == {2.0}


def test_describe_orders_steps_as_numbers_and_leaves_no_value_blank(good: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    for step in (0, 100, 1000, 1050, 200):
        shutil.copytree(good, tmp_path / "run" / f"checkpoint-{step}")
    assert main(["describe", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    order = [int(m) for m in __import__("re").findall(r"│ +checkpoint-(\d+) │", printed)]
    assert order == [0, 100, 200, 1000, 1050]
    assert "nan" not in printed and "│    -1 │" not in printed


def test_reports_of_each_normalization_are_kept_side_by_side(good: Path, tmp_path: Path) -> None:
    for step in (0, 10):
        shutil.copytree(good, tmp_path / "run" / f"checkpoint-{step}")
    out = tmp_path / "out"
    assert main(["analyze", str(tmp_path / "run"), "--out", str(out), "--per-head"]) == 0
    assert main(["report", str(out)]) == 0
    assert main(["report", str(out), "--normalization", "layer"]) == 0
    page, layer = (out / "report.html").read_text(), (out / "report-layer.html").read_text()
    assert "normalization <b>global</b>" in page and "normalization <b>layer</b>" in layer
    assert 'href="plots-layer/heads_first.png"' in layer and (out / "plots-layer" / "heads_first.png").is_file()
    assert "How to read it" in page


def test_report_plots_the_trainers_loss_and_a_metrics_file_on_the_step_axis(good: Path, tmp_path: Path) -> None:
    history = []
    for step in (0, 10, 20):
        history += [{"step": step, "loss": 3.0 - step / 10, "epoch": step / 10}, {"step": step, "eval_loss": 3.2 - step / 20}]
        shutil.copytree(good, tmp_path / "run" / f"checkpoint-{step}")
        (tmp_path / "run" / f"checkpoint-{step}" / "trainer_state.json").write_text(
            json.dumps({"global_step": step, "log_history": history}))
    out = tmp_path / "out"
    assert main(["analyze", str(tmp_path / "run"), "--out", str(out)]) == 0
    result = npers.analysis.report(out)
    curves = result.tables["metrics"]
    assert sorted(curves["metric"].unique()) == ["eval_loss", "loss"]
    assert curves[curves["metric"] == "loss"].sort_values("step")["value"].tolist() == [3.0, 2.0, 1.0]
    assert (out / "plots" / "metrics.png").stat().st_size > 10_000
    page = (out / "report.html").read_text()
    assert "Training metrics and trajectories per role" in page  # one figure, linked step axes
    assert '"name":"eval_loss"' in page and '"name":"loss"' in page and 'href="plots/metrics.png"' in page
    pd.DataFrame({"step": [0, 10, 20], "accuracy": [0.1, 0.5, 0.7]}).to_csv(tmp_path / "m.csv", index=False)
    assert main(["report", str(out), "--metrics", str(tmp_path / "m.csv")]) == 0
    assert '"name":"accuracy"' in (out / "report.html").read_text()
    assert main(["report", str(out), "--metrics", str(tmp_path / "m.csv"), "--static"]) == 0
    static = (out / "report.html").read_text()
    assert "Training metrics and NP" in static and 'src="plots/metrics.png"' in static and "<script>" not in static
    pd.DataFrame({"epoch": [1]}).to_csv(tmp_path / "bad.csv", index=False)
    assert main(["report", str(out), "--metrics", str(tmp_path / "bad.csv")]) == 2
