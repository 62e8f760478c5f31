"""Revisions in the local Hugging Face hub cache as a run: laid out as huggingface_hub lays it out (checked by its
own offline resolution), through the CLI, against the same checkpoints as plain folders."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neural_persistence.cli import main
from neural_persistence.sources.hub_cache import revision_step

REPO = "EleutherAI/pythia-tiny"


def _cache_revision(cache: Path, repo: str, revision: str, folder: Path) -> str:
    """Put a saved model into the cache as a download would: blobs by content hash, a snapshot of links, a ref."""
    root = cache / ("models--" + repo.replace("/", "--"))
    commit = hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()
    for file in sorted(folder.iterdir()):
        blob = root / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, blob)
        link = root / "snapshots" / commit / file.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / revision).write_text(commit)
    return commit


@pytest.fixture()
def pythia_run(tmp_path: Path) -> tuple[Path, Path]:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    config = tf.GPTNeoXConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, max_position_embeddings=64)
    model = tf.GPTNeoXForCausalLM(config)
    cache, plain = tmp_path / "hub", tmp_path / "plain"
    for step in (0, 1000, 2000):
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.02 * torch.randn_like(param))
        model.save_pretrained(plain / f"checkpoint-{step}")
        _cache_revision(cache, REPO, f"step{step}", plain / f"checkpoint-{step}")
    _cache_revision(cache, REPO, "main", plain / "checkpoint-2000")
    return cache, plain


def test_hub_revisions_are_a_run_equal_to_the_plain_checkpoints(pythia_run: tuple[Path, Path], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    cache, plain = pythia_run
    for step in (0, 1000, 2000):  # the hub's own offline resolution finds what we wrote
        found = huggingface_hub.snapshot_download(REPO, revision=f"step{step}", cache_dir=cache, local_files_only=True)
        assert (Path(found) / "config.json").is_file()
    hub_out, plain_out = tmp_path / "out-hub", tmp_path / "out-plain"
    assert main(["analyze", REPO, "--revisions", "step*", "--cache-dir", str(cache), "--out", str(hub_out),
                 "--per-head"]) == 0
    assert main(["analyze", str(plain), "--out", str(plain_out), "--per-head"]) == 0
    key = ["step", "tensor", "role", "head"]
    hub = pd.read_csv(hub_out / "results.csv").set_index(key).sort_index()
    ref = pd.read_csv(plain_out / "results.csv").set_index(key).sort_index()
    assert list(hub.index) == list(ref.index) and len(hub) == 3 * 2 * (4 + 4 + 4 + 4 + 2)
    np.testing.assert_allclose(hub["np"], ref["np"], rtol=1e-12)
    assert sorted(set(hub["checkpoint"])) == ["step0", "step1000", "step2000"] and set(hub["run"]) == {"pythia-tiny"}
    # HF_HUB_CACHE is honoured, and main is the default revision.
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    from neural_persistence.analysis.analyze import describe

    rows = describe([REPO])
    assert {r["checkpoint"] for r in rows} == {"main"} and {r["format"] for r in rows} == {"hub cache, safetensors"}
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "nowhere"))
    assert main(["describe", REPO]) == 2  # not in this cache: one line that says how to fetch it


def test_no_matching_revision_says_what_is_cached_and_how_to_fetch(pythia_run: tuple[Path, Path],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cache, _ = pythia_run
    assert main(["describe", REPO, "--revisions", "step5*", "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    assert "no cached revision matches 'step5*'" in err and "step1000" in err and "snapshot_download" in err


def test_revision_names_give_steps_and_tokens() -> None:
    assert revision_step("step143000") == (143000, None)
    assert revision_step("step1000-tokens4B") == (1000, 4_000_000_000)
    assert revision_step("stage1-step20000-tokens84B") == (20000, 84_000_000_000)
    assert revision_step("main") == (None, None)


def test_a_revision_cached_without_weights_is_named(pythia_run: tuple[Path, Path], tmp_path: Path) -> None:
    """A revision fetched with only its config (allow_patterns without weights): a problem that says how to fetch
    the weights, while the other revisions are measured."""
    cache, plain = pythia_run
    only_config = tmp_path / "only-config"
    only_config.mkdir()
    shutil.copyfile(plain / "checkpoint-0" / "config.json", only_config / "config.json")
    _cache_revision(cache, REPO, "step3000", only_config)
    from neural_persistence.analysis.analyze import plan_units
    from neural_persistence.sources.hub_cache import HubOptions

    planned = plan_units([REPO], hub=HubOptions("step*", cache))
    assert {u.checkpoint.name for u in planned.units} == {"step0", "step1000", "step2000"}
    messages = [p.message for p in planned.problems if p.checkpoint.name == "step3000"]
    assert messages and "no weight files" in messages[0] and "snapshot_download" in messages[0]
