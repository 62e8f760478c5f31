"""The reports as a reader sees them: each kind of input's page opened in a real headless Chromium.

Every page must load with no console error, every plotly figure must have drawn its traces, every image must
have decoded, and hovering a head heatmap must show its value. Screenshots go to the test's temp dir.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers as tf

from neural_persistence.cli import main

CONFIG = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, bos_token_id=0, eos_token_id=0)


def _chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "no Chromium: `make test` installs Debian's chromium as root (sudo apt-get install chromium)"
        if os.geteuid() == 0:  # where the Makefile installs it, its absence is a failure, not a skip
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        yield launched
        launched.close()


def _run(folder: Path, hidden: int = 32, layers: int = 2, steps: tuple[int, ...] = (0, 100, 200, 300, 400, 500,
         600, 700, 800, 900, 1000, 1100)) -> Path:
    """A tiny Llama whose weights drift between checkpoints, saved with save_pretrained like a Trainer does."""
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(tf.LlamaConfig(**{**CONFIG, "hidden_size": hidden, "num_hidden_layers": layers}))
    for step in steps:
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.02 * torch.randn_like(param))
        model.save_pretrained(folder / f"checkpoint-{step}")
    return folder


def _open(browser: Any, page_path: Path, shot: Path) -> Any:
    """Open a page; fail on any console error or page error; check each figure and image; screenshot it."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_path.resolve().as_uri(), wait_until="load")
    page.wait_for_timeout(300)
    figures = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].map(d => ({
        id: d.id, traces: (d._fullData || []).length,
        drawn: d.querySelectorAll('.scatterlayer .trace, .heatmaplayer .hm').length,
        height: d.getBoundingClientRect().height}))""")
    images = page.evaluate("""() => [...document.images].map(i => ({src: i.getAttribute('src'),
        width: i.naturalWidth}))""")
    page.screenshot(path=str(shot), full_page=True)
    assert errors == [], f"{page_path.name}: {errors}"
    for figure in figures:
        assert figure["traces"] > 0 and figure["drawn"] > 0 and figure["height"] > 200, (page_path.name, figure)
    for image in images:
        assert image["width"] > 0, (page_path.name, image)
    return page, figures, images


def test_every_kind_of_report_renders_in_a_browser(browser: Any, tmp_path: Path) -> None:
    run = _run(tmp_path / "run")
    out = tmp_path / "run-out"
    assert main(["analyze", str(run), "--out", str(out), "--per-head"]) == 0
    assert main(["report", str(out)]) == 0
    page, figures, images = _open(browser, out / "report.html", tmp_path / "run.png")
    assert {f["id"] for f in figures} == {"np-trajectories", "np-heads", "np-head-steps"}
    assert {i["src"] for i in images} >= {"plots/layer_heatmap.png", "plots/diagram.png"}
    # Hover a cell of the head heatmaps (at two checkpoints, and every head over training): plotly shows its
    # block, head and value.
    for figure in ("np-heads", "np-head-steps"):
        cell = page.locator(f"#{figure} .heatmaplayer .hm").first
        cell.scroll_into_view_if_needed()
        box = cell.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_selector(f"#{figure} .hoverlayer .hovertext", timeout=5000)
        hover = page.text_content(f"#{figure} .hoverlayer .hovertext") or ""
        assert "head" in hover and "NP" in hover, (figure, hover)
        page.mouse.move(0, 0)
    # Zoom: a drag on the trajectories narrows the step axis.
    before = page.evaluate("() => document.getElementById('np-trajectories')._fullLayout.xaxis.range.slice()")
    drag = page.locator("#np-trajectories .nsewdrag").first
    drag.scroll_into_view_if_needed()
    plot = drag.bounding_box()
    page.mouse.move(plot["x"] + plot["width"] * 0.3, plot["y"] + plot["height"] / 2)
    page.mouse.down()
    page.mouse.move(plot["x"] + plot["width"] * 0.6, plot["y"] + plot["height"] / 2, steps=5)
    page.mouse.up()
    page.wait_for_timeout(300)
    after = page.evaluate("() => document.getElementById('np-trajectories')._fullLayout.xaxis.range.slice()")
    assert after[1] - after[0] < 0.5 * (before[1] - before[0])
    page.close()

    other = _run(tmp_path / "run-b")  # same configuration, another seed of drift
    assert main(["analyze", str(other), "--out", str(tmp_path / "b-out"), "--per-head"]) == 0
    assert main(["compare", str(out), str(tmp_path / "b-out"), "--out", str(tmp_path / "runs")]) == 0
    page, figures, _ = _open(browser, tmp_path / "runs" / "compare.html", tmp_path / "runs.png")
    assert "compare-step" in {f["id"] for f in figures}
    page.close()

    small, big = tmp_path / "small", tmp_path / "big"
    _run(tmp_path / "s", steps=(0,))
    _run(tmp_path / "b", hidden=48, layers=4, steps=(0,))
    shutil.move(tmp_path / "s" / "checkpoint-0", small)
    shutil.move(tmp_path / "b" / "checkpoint-0", big)
    for model in (small, big):
        assert main(["analyze", str(model), "--out", str(tmp_path / f"{model.name}-out"), "--per-head"]) == 0
    assert main(["report", str(tmp_path / "small-out")]) == 0
    page, figures, images = _open(browser, tmp_path / "small-out" / "report.html", tmp_path / "model.png")
    assert {f["id"] for f in figures} == {"np-heads"} and "plots/depth.png" in {i["src"] for i in images}
    page.close()
    assert main(["compare", str(tmp_path / "small-out"), str(tmp_path / "big-out"), "--out", str(tmp_path / "sizes")]) == 0
    page, figures, images = _open(browser, tmp_path / "sizes" / "compare.html", tmp_path / "sizes.png")
    assert figures == [] and "plots/compare_depth.png" in {i["src"] for i in images}
    page.close()
    for shot in ("run", "runs", "model", "sizes"):
        assert (tmp_path / f"{shot}.png").stat().st_size > 20_000
