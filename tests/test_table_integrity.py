"""No silent loss: the ways a results table went wrong, each run as a user runs it (the CLI, results.csv read back).

Options that change what is measured, two runs with the same folder name, unusable head counts, databases of an
older schema or of another program, tensors with fewer stored matrices than planned, and big-endian arrays.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import transformers as tf

import neural_persistence as npers
from neural_persistence.analysis.analyze import describe
from neural_persistence.analysis.store import OldSchemaError
from neural_persistence.cli import main


def tiny_gpt2(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    cfg = tf.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=16, bos_token_id=0, eos_token_id=0)
    tf.GPT2LMHeadModel(cfg).save_pretrained(folder)
    return folder


def csv(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "results.csv")


def test_a_table_shows_only_what_the_current_options_measure(tmp_path: Path) -> None:
    run = tiny_gpt2(tmp_path / "run")
    assert main(["analyze", str(run), "--out", str(tmp_path / "o"), "--include-embeddings"]) == 0
    with_embeddings = csv(tmp_path / "o")
    assert {"embed"} <= set(with_embeddings["role"])
    assert main(["analyze", str(run), "--out", str(tmp_path / "o")]) == 0
    assert main(["analyze", str(run), "--out", str(tmp_path / "fresh")]) == 0
    after, fresh = csv(tmp_path / "o"), csv(tmp_path / "fresh")
    assert not {"embed", "lm_head"} & set(after["role"])
    assert len(after) == len(fresh) == len(describe([run]))
    cols = ["tensor", "role", "head", "expert", "np", "normalized_np", "scale"]
    pd.testing.assert_frame_equal(after[cols], fresh[cols])
    kept = npers.load_table(tmp_path / "o", include_embeddings=True)  # the other analysis is still there, apart
    assert len(kept) == len(with_embeddings)


def test_runs_are_identified_by_their_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tiny_gpt2(tmp_path / "a" / "run", seed=1), tiny_gpt2(tmp_path / "b" / "run", seed=2)
    out = tmp_path / "o"
    assert main(["analyze", str(a), "--out", str(out)]) == 0
    assert main(["analyze", str(b), "--out", str(out)]) == 0
    assert "measured 8 tensors, 0 already done" in capsys.readouterr().out
    table = csv(out)
    assert sorted(table["run"].unique()) == ["run", "run-2"]
    for label, path in (("run", a), ("run-2", b)):
        alone = tmp_path / f"alone-{label}"
        npers.analyze([path], alone)
        mine = table[table["run"] == label].reset_index(drop=True)
        assert len(mine) == len(describe([path]))
        np.testing.assert_array_equal(mine["np"], npers.load_table(alone)["np"])
    assert main(["analyze", str(b), "--out", str(out)]) == 0  # the same path keeps its label and is done
    assert "measured 0 tensors, 8 already done" in capsys.readouterr().out
    assert sorted(csv(out)["run"].unique()) == ["run", "run-2"]


@pytest.mark.parametrize("value", [-8, 0, "4", 2.5, [4], True])
def test_unusable_head_counts_are_an_error_naming_the_field(value: object, tmp_path: Path) -> None:
    run = tiny_gpt2(tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    config["n_head"] = value
    (run / "config.json").write_text(json.dumps(config))
    summary = npers.analyze([run], tmp_path / "o", per_head=True)
    messages = [m for _, tensor, m in summary.errors if tensor == "config.json"]
    assert len(messages) == 1 and f"n_head must be a positive integer, got {value!r}" in messages[0]
    table = npers.load_table(tmp_path / "o")
    assert len(table) == len(describe([run], per_head=True)) > 0  # measured whole, every planned row there
    assert (table["head"] == -1).all()


def test_database_of_the_old_schema_is_refused_to_read_and_migrated_by_analyze(tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    with sqlite3.connect(out / "results.sqlite") as db:  # what version 1 wrote: no role or expert in the key
        db.executescript("""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
            CREATE TABLE checkpoints (run TEXT, checkpoint TEXT, step INTEGER, tokens INTEGER, path TEXT,
                                      PRIMARY KEY (run, checkpoint));
            CREATE TABLE trees (run TEXT, checkpoint TEXT, tensor TEXT, head INTEGER, options TEXT, block INTEGER,
                                role TEXT, rows INTEGER, cols INTEGER, max_abs REAL, tree BLOB,
                                PRIMARY KEY (run, checkpoint, tensor, head, options));
            CREATE TABLE done (run TEXT, checkpoint TEXT, tensor TEXT, options TEXT, error TEXT,
                               PRIMARY KEY (run, checkpoint, tensor, options));
            INSERT INTO meta VALUES ('schema', '1');
            INSERT INTO trees VALUES ('run', 'run', 'h.0.attn.c_attn.weight', -1, 'per_head=0', 0, 'v', 8, 32, 1.0,
                                      x'62');
            INSERT INTO done VALUES ('run', 'run', 'h.0.attn.c_attn.weight', 'per_head=0', NULL);
        """)
    with pytest.raises(OldSchemaError, match=r"schema 1.*neural-persistence analyze RUN \.\.\. --out"):
        npers.load_table(out)
    assert main(["report", str(out)]) == 2
    run = tiny_gpt2(tmp_path / "run")
    summary = npers.analyze([run], out)
    assert any("schema 1" in note for note in summary.notes)
    assert summary.measured == 8 and len(npers.load_table(out)) == len(describe([run]))


def test_a_foreign_sqlite_file_is_not_written_to(tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    with sqlite3.connect(out / "results.sqlite") as db:
        db.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(ValueError, match="not one written by neural-persistence"):
        npers.analyze([tiny_gpt2(tmp_path / "run")], out)
    with sqlite3.connect(out / "results.sqlite") as db:
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["invoices"]


def test_a_tensor_stored_with_fewer_matrices_than_planned_is_measured_again(tmp_path: Path) -> None:
    run, out = tiny_gpt2(tmp_path / "run"), tmp_path / "o"
    npers.analyze([run], out, per_head=True)
    before = npers.load_table(out)
    with sqlite3.connect(out / "results.sqlite") as db:  # a loss as the old key made: the k heads of one tensor
        db.execute("DELETE FROM trees WHERE tensor = 'transformer.h.1.attn.c_attn.weight' AND role = 'k'")
    summary = npers.analyze([run], out, per_head=True)
    assert summary.measured == 1 and summary.skipped_done == 7 and summary.errors == []
    pd.testing.assert_frame_equal(npers.load_table(out), before)


def test_the_end_of_analyze_turns_a_short_tensor_into_an_error_not_a_smaller_table(tmp_path: Path) -> None:
    """A database that loses rows as they are written (a trigger here, a bug or another writer in life): the
    check at the end of analyze names the tensor, drops its partial rows, and the next run measures it."""
    run, out = tiny_gpt2(tmp_path / "run"), tmp_path / "o"
    npers.analyze([tiny_gpt2(tmp_path / "other")], out)  # creates the database
    with sqlite3.connect(out / "results.sqlite") as db:
        db.execute("CREATE TRIGGER lose AFTER INSERT ON trees WHEN NEW.role = 'k' AND NEW.run = 'run' "
                   "BEGIN DELETE FROM trees WHERE rowid = NEW.rowid; END")
    summary = npers.analyze([run], out, per_head=True)
    short = {tensor: message for _, tensor, message in summary.errors}
    assert sorted(short) == [f"transformer.h.{b}.attn.c_attn.weight" for b in (0, 1)]  # 4 q, 4 k, 4 v heads each
    assert all("8 matrices stored where the plan has 12" in m for m in short.values())
    table = npers.load_table(out, per_head=True)
    mine = table[table["run"] == "run"]
    assert not mine["tensor"].str.contains("c_attn").any()
    assert len(mine) == len(describe([run], per_head=True)) - 2 * 12
    with sqlite3.connect(out / "results.sqlite") as db:
        db.execute("DROP TRIGGER lose")
    summary = npers.analyze([run], out, per_head=True)
    assert summary.measured == 2 and summary.errors == []
    assert len(npers.load_table(out, per_head=True).query("run == 'run'")) == len(describe([run], per_head=True))


DTYPES = ["f2", "f4", "f8", "i2", "i4", "i8", "u2", "u4"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_big_endian_arrays_give_the_numbers_of_little_endian_ones(dtype: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 5)) * 40
    x = np.abs(x) if dtype.startswith("u") else x
    little, big = x.astype("<" + dtype), x.astype(">" + dtype)
    assert big.dtype.byteorder == ">"
    expected = npers.compute([little])
    ours = npers.compute([big])
    np.testing.assert_array_equal(ours.np, expected.np)
    assert ours.layers[0].max_abs == expected.layers[0].max_abs == float(np.abs(little.astype(float)).max())
    np.savez(tmp_path / "be.npz", layer=big)
    assert main(["layers", str(tmp_path / "be.npz")]) == 0


def test_big_endian_bfloat16_bits(capsys: pytest.CaptureFixture[str]) -> None:
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    bits = x.view(torch.int16).numpy().view(np.uint16)
    expected = npers.compute([x])
    ours = npers.compute([npers.bfloat16_bits(bits.astype(">u2"))])
    np.testing.assert_array_equal(ours.np, expected.np)
    assert ours.layers[0].max_abs == float(x.float().abs().max())


def test_cli_layers_prints_the_true_max_of_a_big_endian_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.array([[2.71, -1.0], [0.5, 0.25]], dtype=">f4")
    np.savez(tmp_path / "be.npz", layer=x)
    assert main(["layers", str(tmp_path / "be.npz")]) == 0
    assert "2.71" in capsys.readouterr().out


def test_a_checkpoint_saved_again_under_the_same_name_is_measured_again(tmp_path: Path) -> None:
    run, out = tiny_gpt2(tmp_path / "run", seed=1), tmp_path / "o"
    npers.analyze([run], out)
    tiny_gpt2(run, seed=2)  # the trainer overwrote the checkpoint
    summary = npers.analyze([run], out)
    assert summary.measured == 8 and summary.skipped_done == 0
    npers.analyze([tiny_gpt2(tmp_path / "fresh" / "run", seed=2)], tmp_path / "fresh-out")
    np.testing.assert_array_equal(npers.load_table(out)["np"], npers.load_table(tmp_path / "fresh-out")["np"])


def test_a_config_that_cuts_differently_with_as_many_matrices_is_measured_again(tmp_path: Path) -> None:
    """Fewer, wider heads change how GPT-NeoX's interleaved query_key_value is cut into q, k and v (three matrices
    either way): stale rows must not pass as complete."""
    torch.manual_seed(0)
    cfg = tf.GPTNeoXConfig(vocab_size=64, hidden_size=32, num_attention_heads=4, num_hidden_layers=2,
                           intermediate_size=64, bos_token_id=0, eos_token_id=0)
    tf.GPTNeoXForCausalLM(cfg).save_pretrained(tmp_path / "run")
    out = tmp_path / "o"
    npers.analyze([tmp_path / "run"], out)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["num_attention_heads"] = 2
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    summary = npers.analyze([tmp_path / "run"], out)
    assert summary.measured == 2 and summary.skipped_done == 6 and summary.errors == []  # the two fused tensors
    npers.analyze([tmp_path / "run"], tmp_path / "fresh")
    np.testing.assert_array_equal(npers.load_table(out)["np"], npers.load_table(tmp_path / "fresh")["np"])


def test_a_tensor_in_two_files_of_a_checkpoint_is_reported_not_dropped(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    run = tiny_gpt2(tmp_path / "run")
    weights = load_file(run / "model.safetensors")
    save_file({k: v * 2 for k, v in weights.items()}, run / "model-ema.safetensors")
    summary = npers.analyze([run], tmp_path / "o")
    duplicates = [m for _, t, m in summary.errors if "model-ema.safetensors" in t]
    assert len(duplicates) == len([k for k in weights if k.endswith("weight") and weights[k].ndim == 2
                                   and "wte" not in k and "wpe" not in k])
    assert all("is in both" in m and "model.safetensors" in m for m in duplicates)
    assert summary.measured == 8 and len(npers.load_table(tmp_path / "o")) == 12


def test_trajectory_returns_the_analysis_asked_for(tmp_path: Path) -> None:
    run, out = tiny_gpt2(tmp_path / "run"), tmp_path / "o"
    npers.analyze([run], out, per_head=True)
    npers.analyze([run], out)
    assert (npers.trajectory(out, per_head=False)["head"] == -1).all()
    assert (npers.trajectory(out, per_head=True)["head"] >= 0).any()
    assert (npers.trajectory(run, out=tmp_path / "t")["head"] == -1).all()
