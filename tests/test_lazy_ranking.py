"""Ranking against a saved embedding needs torch, not timm, torchvision, datasets or numba.

``recommend --dataset task.safetensors`` (and ``distance``, an AutoML loop over saved
embeddings) used to import timm (which pulls in torchvision and torch._dynamo) through the
Fisher modules and to build the probe only to find the cached t0, and to load numba for a
12-expert matrix: 6.7 s to rank the demo zoo, 2.4 s now. These tests keep it that way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from t2v_hub.selection.kernels import ranking
from t2v_hub.trivial import trivial_for

ROOT = Path(__file__).resolve().parent.parent
ZOO_EMB = next((ROOT / "examples/zoo/t2v-zoo/mnist10/task2vec").glob("*.safetensors"))


def test_a_cached_t0_is_found_without_building_the_probe(tmp_path, monkeypatch) -> None:
    import t2v_hub.trivial as trivial

    monkeypatch.setenv("T2V_HUB_CACHE", str(tmp_path))
    from t2v_hub.task2vec import TensorTask, embed

    g = torch.Generator().manual_seed(0)
    task = TensorTask(torch.randn(8, 3, 16, 16, generator=g), torch.tensor([0, 1] * 4))
    emb = embed(task, "test_efficientnet", input_size=16)
    slow = trivial_for(emb, quiet=True)  # computes and caches t0 (builds the probe)
    class ProbeBuilt(Exception):
        pass

    def no_probe(*_a, **_k):
        raise ProbeBuilt

    monkeypatch.setattr(trivial, "create_probe", no_probe)
    fast = trivial_for(emb)
    assert torch.equal(fast.vector, slow.vector)
    with pytest.raises(ProbeBuilt):  # other settings are another entry: the probe is needed
        trivial_for(emb, num_samples=8)


def test_ranking_a_saved_embedding_imports_no_timm_torchvision_datasets_or_numba(tmp_path) -> None:
    env = {**os.environ, "T2V_HUB_CACHE": str(tmp_path)}
    argv = ["recommend", "--dataset", str(ZOO_EMB), "--hub", str(ROOT / "examples/zoo"), "--quiet"]
    code = ("import sys; from t2v_hub.cli.main import main; rc = main(sys.argv[1:]); "
            "print('IMPORTED', sorted(k for k in ('timm', 'torchvision', 'datasets', 'numba') if k in sys.modules), rc)")
    first = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-2000:]  # computes t0 once (imports timm: it builds the probe)
    again = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, cwd=ROOT)
    line = next(x for x in again.stdout.splitlines() if x.startswith("IMPORTED"))
    assert line == "IMPORTED [] 0", line
    assert again.stdout.split("IMPORTED")[0] == first.stdout.split("IMPORTED")[0]  # the same ranking


def test_auto_backend_is_torch_below_hub_scale(monkeypatch) -> None:
    monkeypatch.delenv("T2V_HUB_RANK_BACKEND", raising=False)
    assert ranking.backend(elements=12 * 20_000) == "torch"
    big = ranking.backend(elements=ranking.AUTO_NUMBA_MIN_ELEMENTS)
    assert big == ("numba" if ranking._numba_kernels() is not None else "torch")
    assert ranking.backend("numba" if ranking._numba_kernels() is not None else "torch", elements=1) != "auto"


@pytest.mark.parametrize("size", ['[3, "x", 16]', "{", "[3, true, 16]", "[16, 16]", ""])
def test_a_damaged_input_size_record_skips_the_fast_path(size) -> None:
    from t2v_hub.trivial import _cached_for

    assert _cached_for({"weights_sha256": "a", "layout_hash": "b", "input_size": size}, "montecarlo") is None
