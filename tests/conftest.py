"""Shared fixtures.

Hub fixtures: a LocalHub in a temporary folder, the test HTTP hub server
(``tests/hub_server.py``) with an isolated Hugging Face cache and no ambient token,
an ``HfHub`` client pointed at it, and a factory for small embeddings.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Tiny models on a 2-core machine: one intra-op thread avoids OpenMP spin-waiting,
# which costs 10x when the cores are shared. Set before torch is imported anywhere.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Keep the embedding cache of one test run away from the user's, and remove it afterwards (a folder
# made only when none is set: worker processes inherit the variable).
if "T2V_HUB_CACHE" not in os.environ:
    _TEST_CACHE = tempfile.mkdtemp(prefix="t2v_hub_test_cache_")
    os.environ["T2V_HUB_CACHE"] = _TEST_CACHE
    atexit.register(shutil.rmtree, _TEST_CACHE, ignore_errors=True)

# `import hub_server` from test modules and from their worker processes.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def make_embedding() -> Callable[..., Any]:
    """``make_embedding(seed=0, dim=16, **metadata)``: a small, valid embedding."""

    import torch

    from t2v_hub.embedding import Task2VecEmbedding

    def make(seed: int = 0, dim: int = 16, **over: Any) -> Task2VecEmbedding:
        fields: dict[str, Any] = dict(
            probe="test_efficientnet",
            weights_sha256="w" * 8,
            layout_hash="l" * 8,
            method="montecarlo",
            dataset_id=f"dataset-{seed}",
            num_samples=100 + seed,
        )
        fields.update(over)
        vec = torch.rand(dim, generator=torch.Generator().manual_seed(seed))
        return Task2VecEmbedding.create(vec, **fields)

    return make


@pytest.fixture
def local_hub(tmp_path: Path) -> Any:
    from t2v_hub.hub import LocalHub

    root = tmp_path / "localhub"
    root.mkdir()
    return LocalHub(root)


@pytest.fixture
def hf_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HF cache and home, no token from the environment, no progress bars."""
    import huggingface_hub.constants as hfc
    from huggingface_hub.utils import disable_progress_bars

    home = tmp_path / "hf-home"
    cache = home / "hub"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    # huggingface_hub reads these at import time: patch the module values too.
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hfc, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(hfc, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"), raising=False)
    disable_progress_bars()
    # HfHub caps huggingface_hub's timeouts process-wide; restore the cap after each test.
    import t2v_hub.hub.hf as hf

    monkeypatch.setattr(hf, "_timeout_cap", hf._timeout_cap)
    return cache


@pytest.fixture
def hub_server(tmp_path: Path, hf_isolated: Path) -> Iterator[Any]:
    """The test hub server on a fresh folder; fails the test if the server itself erred."""
    from hub_server import HubServer

    root = tmp_path / "serverhub"
    root.mkdir()
    server = HubServer(root, page_size=2).start()  # small pages: listings exercise pagination
    try:
        yield server
    finally:
        server.stop()
    assert server.errors == [], server.errors


@pytest.fixture
def hf_hub(hub_server: Any, hf_isolated: Path) -> Any:
    """An HfHub client of the test server: short timeout, quick retries."""
    from hub_server import TOKEN

    from t2v_hub.hub.hf import HfHub

    return HfHub(endpoint=hub_server.url, token=TOKEN, timeout=2.0, retries=2, backoff=0.0, cache_dir=hf_isolated)


@pytest.fixture
def fast_hf_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub's own retries sleep 1+2+4+8+8 s; keep the retries, skip the waits."""
    import huggingface_hub.utils._http as http

    monkeypatch.setattr(http, "time", types.SimpleNamespace(sleep=lambda s: None))


def write_imagefolder(root: Path, names: list[str], per_class: int, shape: tuple[int, int]) -> Path:
    """A class-per-folder PNG tree: noise images with each class's own channel brightened."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(names):
        (root / name).mkdir()
        for i in range(per_class):
            a = (rng.random((*shape, 3)) * 120).astype("uint8")
            a[..., c] += 120
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root
