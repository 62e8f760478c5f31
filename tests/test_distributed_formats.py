"""Distributed Checkpoint and DeepSpeed folders through the CLI, written by torch.distributed.checkpoint and by a
real DeepSpeed engine, against the same weights saved as safetensors by transformers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from neural_persistence.analysis.analyze import describe, plan_units
from neural_persistence.cli import main

KEY = ["step", "tensor", "role", "head"]


def _llama() -> object:
    import transformers as tf

    torch.manual_seed(0)
    return tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=48, hidden_size=32, intermediate_size=48,
                                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                              bos_token_id=0, eos_token_id=0))


def _same_rows(a: Path, b: Path, count: int) -> None:
    left = pd.read_csv(a / "results.csv").set_index(KEY).sort_index()
    right = pd.read_csv(b / "results.csv").set_index(KEY).sort_index()
    assert list(left.index) == list(right.index) and len(left) == count
    for column in ("rows", "cols", "np", "normalized_np", "scale"):
        np.testing.assert_allclose(left[column], right[column], rtol=1e-12, err_msg=column)


def test_dcp_run_equals_safetensors_and_a_damaged_step_is_named(tmp_path: Path) -> None:
    """A run of three DCP checkpoints (model wrapped as {"model": ..., "optimizer": ..., "train_state": ...},
    bfloat16, the config at the run's root), beside the same weights saved by save_pretrained: analyze --per-head
    gives the same rows; then a truncated .distcp and a foreign .metadata are each named while the rest is measured."""
    import torch.distributed.checkpoint as dcp

    model = _llama().to(torch.bfloat16)  # type: ignore[attr-defined]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    (tmp_path / "dcp").mkdir()
    model.config.save_pretrained(tmp_path / "dcp")
    for step in (0, 10, 20):
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.01 * torch.randn_like(param))
        model(torch.tensor([[1, 2, 3]])).logits.float().sum().backward()
        opt.step()
        model.save_pretrained(tmp_path / "hf" / f"checkpoint-{step}")
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "train_state": torch.tensor(step)}
        dcp.save(state, checkpoint_id=str(tmp_path / "dcp" / f"step-{step}"))
    for name in ("hf", "dcp"):
        assert main(["analyze", str(tmp_path / name), "--out", str(tmp_path / f"out-{name}"), "--per-head"]) == 0
    _same_rows(tmp_path / "out-hf", tmp_path / "out-dcp", 3 * 2 * (4 + 2 + 2 + 4 + 3))
    assert {r["format"] for r in describe([tmp_path / "dcp"])} == {"dcp"}
    # Damage: one step's data cut short, another's metadata replaced.
    data = tmp_path / "dcp" / "step-10" / "__0_0.distcp"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    (tmp_path / "dcp" / "step-20" / ".metadata").write_bytes(b"not a pickle")
    out = tmp_path / "out-damaged"
    assert main(["analyze", str(tmp_path / "dcp"), "--out", str(out)]) == 0
    table = pd.read_csv(out / "results.csv")
    assert set(table["step"]) == {0} and len(table) == 2 * 7
    problems = " ".join(p.message for p in plan_units([tmp_path / "dcp"]).problems)
    assert "step-20" in problems and ".metadata" in problems


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_DEEPSPEED_SAVE = """
import os, sys, torch, transformers as tf
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[3], RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
import deepspeed
import deepspeed.comm.torch
sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None  # its shared-memory all-reduce, compiled on first use (30 s): one process needs none
deepspeed.init_distributed(dist_backend="gloo")
torch.manual_seed(0)
model = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=48, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                           num_attention_heads=4, num_key_value_heads=2, bos_token_id=0,
                                           eos_token_id=0))
for stage in (0, 3):  # both in one process: DeepSpeed's start-up is most of the time
    config = {"train_batch_size": 1, "zero_optimization": {"stage": stage}, "zero_allow_untested_optimizer": True}
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                      config=config)
    for step in range(1, 3):
        loss = engine(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss
        engine.backward(loss)
        engine.step()
        engine.save_checkpoint(os.path.join(sys.argv[1], f"zero{stage}"))
        if stage == 0:
            engine.module.save_pretrained(os.path.join(sys.argv[1], "hf", f"checkpoint-{step}"))
    if stage == 0:
        model = tf.LlamaForCausalLM(model.config)  # a fresh module for the ZeRO-3 engine
"""


@pytest.fixture(scope="module")
def deepspeed_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """zero0/ and zero3/ (global_step1/, global_step2/ each) written by a real DeepSpeed engine, and hf/: the same
    weights as ZeRO 0's saved by save_pretrained."""
    pytest.importorskip("deepspeed")
    out = tmp_path_factory.mktemp("deepspeed")
    done = subprocess.run([sys.executable, "-c", _DEEPSPEED_SAVE, str(out), "", str(_free_port())],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_deepspeed_run_equals_safetensors(deepspeed_runs: Path, tmp_path: Path) -> None:
    """A real DeepSpeed engine (ZeRO stage 0, gloo, one process) saves global_step1/ and global_step2/; the same
    weights are saved by save_pretrained: analyze --per-head of each gives the same rows."""
    shutil.copytree(deepspeed_runs / "zero0", tmp_path / "ds")
    shutil.copytree(deepspeed_runs / "hf", tmp_path / "ds-hf")
    (tmp_path / "ds" / "config.json").write_bytes((tmp_path / "ds-hf" / "checkpoint-1" / "config.json").read_bytes())
    for name in ("ds", "ds-hf"):
        assert main(["analyze", str(tmp_path / name), "--out", str(tmp_path / f"out-{name}"), "--per-head"]) == 0
    _same_rows(tmp_path / "out-ds-hf", tmp_path / "out-ds", 2 * 2 * (4 + 2 + 2 + 4 + 3))
    assert {r["format"] for r in describe([tmp_path / "ds"])} == {"deepspeed"}
    # A model-states file cut short: named, and the other step still measured.
    cut = tmp_path / "ds" / "global_step2" / "mp_rank_00_model_states.pt"
    cut.write_bytes(cut.read_bytes()[:1000])
    assert main(["analyze", str(tmp_path / "ds"), "--out", str(tmp_path / "out-cut")]) == 0
    assert set(pd.read_csv(tmp_path / "out-cut" / "results.csv")["step"]) == {1}
    assert any(str(cut) in p.message for p in plan_units([tmp_path / "ds"]).problems)


def test_a_zero3_checkpoint_says_how_to_consolidate_it(deepspeed_runs: Path, tmp_path: Path) -> None:
    problems = [p.message for p in plan_units([deepspeed_runs / "zero3"]).problems]
    assert problems and all("ZeRO stage 3" in m and "zero_to_fp32" in m for m in problems)
    code = main(["analyze", str(deepspeed_runs / "zero3"), "--out", str(tmp_path / "out")])
    assert code != 0  # nothing could be measured: the command fails, after saying why
