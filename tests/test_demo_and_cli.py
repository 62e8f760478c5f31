"""The main job and the console script, run for real."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import neural_persistence as npers


def test_demo_fast_end_to_end(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "neural_persistence.demo.mlp_digits", "--fast", "--out", str(tmp_path)],
        capture_output=True, text=True, check=True, timeout=300,
    )
    assert "mean normalized NP" in out.stdout
    table = pd.read_csv(tmp_path / "layers.csv", dtype={"layer": str})
    assert list(table["layer"]) == ["0", "2", "4"]
    assert list(table["rows"]) == [65, 651, 651] and list(table["cols"]) == [650, 650, 10]
    png = (tmp_path / "diagram_layer_2.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_cli_layers_matches_api(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    layers = {"a": rng.normal(size=(6, 5)), "b": rng.normal(size=(5, 3))}
    np.savez(tmp_path / "w.npz", **layers)
    out = subprocess.run(
        [sys.executable, "-m", "neural_persistence.cli", "layers", str(tmp_path / "w.npz")],
        capture_output=True, text=True, check=True,
    )
    expected = npers.compute(layers).mean_normalized_np
    assert f"mean normalized NP: {expected:.6f}" in out.stdout


def test_cli_help_teaches() -> None:
    out = subprocess.run([sys.executable, "-m", "neural_persistence.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "describe" in out.stdout and "only what is missing is computed" in out.stdout


def test_import_stays_light() -> None:
    code = "import sys, neural_persistence; print(sorted(m for m in ('torch','pandas','matplotlib','dask','lightning','transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_describe_analyze_report_compare(tmp_path: Path) -> None:
    """The console script end to end on a real (tiny, trained) checkpoint run."""
    from test_checkpoint_analysis import train_run

    run = train_run(tmp_path / "run", checkpoints=4)
    exe = [sys.executable, "-m", "neural_persistence.cli"]

    def cli(*args: str) -> str:
        out = subprocess.run([*exe, *args], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout

    described = cli("describe", str(run), "--per-head")
    assert "self_attn.q_proj" in described and "checkpoint-12" in described
    analysed = cli("analyze", str(run), "--out", str(tmp_path / "np"), "--per-head", "--format", "parquet")
    assert "mean normalized NP per role" in analysed and "measured 56 tensors" in analysed
    frame = pd.read_parquet(tmp_path / "np" / "results.parquet")
    assert len(frame) == 4 * 30
    again = cli("analyze", str(run), "--out", str(tmp_path / "np"), "--per-head")
    assert "measured 0 tensors, 56 already done" in again
    cli("report", str(tmp_path / "np"))
    assert "Change points per role" in (tmp_path / "np" / "report.html").read_text()
    cli("compare", str(tmp_path / "np"), str(tmp_path / "np"), "--out", str(tmp_path / "cmp"))
    assert (tmp_path / "cmp" / "compare.html").is_file()
    bad = subprocess.run([*exe, "analyze", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no such file or directory" in bad.stderr


def test_core_imports_nothing_of_the_layers_above() -> None:
    """Layers point one way: the engine imports nothing of sources, analysis or training."""
    import ast

    core = Path(npers.__file__).parent / "core"
    for path in core.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                assert (node.module or "").split(".")[0] not in ("sources", "analysis", "training", "measure"), path
