"""`make demo FAST=1` end to end: a real char-level GPT trained on the King James Bible, analysed and reported."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

import neural_persistence as npers
from neural_persistence.analysis.analyze import describe, measure_unit, plan_units
from neural_persistence.sources.plan import PlanOptions
from neural_persistence.analysis.table import load_table
from neural_persistence.demo.corpus import CorpusMissingError, load_kjv

ROOT = Path(__file__).resolve().parents[1]
needs_corpus = pytest.mark.skipif(shutil.which("bible") is None,
                                  reason="the demo corpus needs Debian's bible-kjv: sudo apt-get install bible-kjv")


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("bible") is None or shutil.which("make") is None:
        pytest.skip("needs make and Debian's bible-kjv (sudo apt-get install bible-kjv)")
    out = tmp_path_factory.mktemp("demo")
    done = subprocess.run(
        ["make", "-s", "demo", "FAST=1", f"DEMO_OUT={out}", f"DATA_DIR={out / 'data'}", f"PY={sys.executable}",
         "INSTALL="],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "report:" in done.stdout
    return out


@needs_corpus
def test_report_has_every_section(demo_out: Path) -> None:
    page = (demo_out / "report.html").read_text()
    for section in ("Loss and neural persistence during training", "What the numbers say", "Trajectories per role",
                    "Layer x step", "Heads at the first and last checkpoint", "Change points per role",
                    "Structure or distribution?"):
        assert section in page, section
    for image in ("plots/loss.png", "plots/trajectories.png", "plots/layer_heatmap.png", "plots/heads_first.png",
                  "plots/heads_last.png"):
        assert image in page and (demo_out / image).stat().st_size > 5000


@needs_corpus
def test_report_numbers_equal_the_database(demo_out: Path) -> None:
    summary = json.loads((demo_out / "summary.json").read_text())
    table = load_table(demo_out)
    last = table[table["step"] == table["step"].max()].groupby("role")["normalized_np"].mean()
    assert summary["last_role_means"] == pytest.approx(last.to_dict(), rel=1e-12)
    page = (demo_out / "report.html").read_text()
    assert f"{last.max():.3f}" in page and f"{last.min():.3f}" in page
    checkpoints = summary["history"]["checkpoints"]
    assert [c["step"] for c in checkpoints] == sorted(table["step"].unique().tolist())
    assert f"{checkpoints[-1]['eval_loss']:.3f}" in page


@needs_corpus
def test_the_demo_sets_np_beside_its_null(demo_out: Path) -> None:
    """The demo analyses with the null model on: every row has 8 shuffles, and the paragraph's numbers are the
    last checkpoint's NP minus null per role, recomputed from the table."""
    summary = json.loads((demo_out / "summary.json").read_text())
    table = load_table(demo_out, per_head=True)
    assert (table["null_samples"] == 8).all() and table["rms"].notna().all()
    last = table[table["step"] == table["step"].max()].groupby("role")[["normalized_np", "null_normalized_np"]].mean()
    for role, numbers in summary["structure"].items():
        expected = last.loc[role, "normalized_np"] - last.loc[role, "null_normalized_np"]
        assert numbers["np_minus_null"] == pytest.approx(expected, rel=1e-9, abs=1e-12), role
    assert "the same weights shuffled" in (demo_out / "report.html").read_text()


@needs_corpus
def test_checkpoints_load_back_with_roles_and_heads(demo_out: Path) -> None:
    rows = describe([demo_out / "run"], per_head=True)
    first = [r for r in rows if r["checkpoint"] == "checkpoint-0"]
    roles = {r["role"] for r in first}
    assert roles == {"q", "k", "v", "o", "mlp_up", "mlp_down"}
    assert {r["head"] for r in first if r["role"] == "q"} == {0, 1, 2, 3}
    assert {(r["rows"], r["cols"]) for r in first if r["role"] == "q"} == {(32, 128)}
    assert {(r["rows"], r["cols"]) for r in first if r["role"] == "o"} == {(128, 32)}
    weights = load_file(demo_out / "run" / "checkpoint-20" / "model.safetensors")
    units = plan_units([demo_out / "run" / "checkpoint-20"], PlanOptions(per_head=True)).units
    unit = next(u for u in units if u.tensor.name == "model.layers.2.self_attn.o_proj.weight")
    head = measure_unit(unit.tensor, unit.specs)[3]
    by_hand = weights["model.layers.2.self_attn.o_proj.weight"].numpy()[:, 96:128]
    assert (head.role, head.head) == ("o", 3)
    np.testing.assert_array_equal(head.tree, npers.layer_tree(by_hand).values)


def test_corpus_error_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(CorpusMissingError, match=r"apt-get install bible-kjv"):
        load_kjv(tmp_path, bible="no-such-bible-command")


@needs_corpus
def test_corpus_is_clean_text(tmp_path: Path) -> None:
    text = load_kjv(tmp_path)
    assert text.startswith("In the beginning God created the heaven and the earth.\n")
    assert 4_000_000 < len(text) < 4_300_000 and "Genesis 1" not in text and ":1 " not in text[:1000]
    assert (tmp_path / "kjv.txt").read_text() == text
