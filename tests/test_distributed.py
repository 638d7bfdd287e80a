"""Data-parallel embedding: two CPU processes (gloo) reduce to the single-process result."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from t2v_hub.embedding import Task2VecEmbedding

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dist")
    rng = np.random.default_rng(1)
    for c in range(3):
        (root / f"c{c}").mkdir()
        for i in range(7):  # 21 samples: shards of unequal size (10 + 11)
            a = (rng.random((20, 20, 3)) * 150).astype("uint8")
            a[..., c] += 100
            Image.fromarray(a).save(root / f"c{c}" / f"{i}.png")
    return root


@pytest.mark.parametrize("method", ["montecarlo", "empirical"])
def test_two_processes_equal_one(folder: Path, tmp_path: Path, method: str) -> None:
    if shutil.which("accelerate") is None and not Path(sys.executable).with_name("accelerate").exists():
        pytest.skip("accelerate CLI not installed")
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    args = ["embed", "--dataset", str(folder), "--probe", "test_efficientnet", "--input-size", "32",
            "--method", method, "--no-cache", "--quiet", *(["--mc-samples", "2"] if method == "montecarlo" else [])]
    env = {**os.environ, "T2V_HUB_CACHE": str(tmp_path / "cache")}
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    subprocess.run([sys.executable, "-m", "t2v_hub.cli", *args, "--out", str(one)], check=True, env=env)
    # On a machine without GPUs, --multi_gpu makes accelerate spawn the processes (torchrun) and
    # PartialState falls back to the gloo backend on the CPU.
    # A free port of our own: the default 29500 may be taken by another job on the machine.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launch = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--main_process_port", str(port),
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "t2v_hub.cli"]
    proc = subprocess.run([*launch, *args, "--out", str(two)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = Task2VecEmbedding.load(one), Task2VecEmbedding.load(two)
    assert b.config("method_config")["world_size"] == 2
    assert a.metadata["num_samples"] == b.metadata["num_samples"] == "21"
    rel = (a.vector - b.vector).norm() / a.vector.norm()
    assert float(rel) < 1e-6
    assert torch.isfinite(b.vector).all()
