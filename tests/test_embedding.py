"""The embedding artifact: round trip, provenance, compatibility, atomic writes."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save as st_save

from t2v_hub.embedding import Task2VecEmbedding
from t2v_hub.errors import EmbeddingError, IncompatibleEmbeddingError, OutputError


def make(**over) -> Task2VecEmbedding:
    fields = dict(probe="p", weights_sha256="w", layout_hash="l", method="montecarlo", dataset_id="d", num_samples=10)
    fields.update(over)
    return Task2VecEmbedding.create(torch.rand(7, generator=torch.Generator().manual_seed(0)), **fields)


def test_round_trip_is_exact(tmp_path) -> None:
    e = make(method_config={"mc_samples": 2})
    path = e.save(tmp_path / "e.safetensors")
    f = Task2VecEmbedding.load(path)
    assert torch.equal(e.vector, f.vector) and e.metadata == f.metadata
    assert f.config("method_config") == {"mc_samples": 2}
    assert f.metadata["dim"] == "7" and "torch_version" in f.metadata and "created_at" in f.metadata


@pytest.mark.parametrize("field", ["probe", "weights_sha256", "layout_hash", "method"])
def test_incompatible_names_the_field(field: str) -> None:
    with pytest.raises(IncompatibleEmbeddingError, match=field):
        make().check_compatible(make(**{field: "other"}))


def test_dimension_mismatch_is_incompatible() -> None:
    a = make()
    b = Task2VecEmbedding.create(torch.rand(8), probe="p", weights_sha256="w", layout_hash="l", method="montecarlo")
    with pytest.raises(IncompatibleEmbeddingError, match="dim"):
        a.check_compatible(b)


def test_truncated_and_foreign_files_are_refused(tmp_path) -> None:
    data = make().to_bytes()
    with pytest.raises(EmbeddingError, match="not a valid safetensors"):
        Task2VecEmbedding.from_bytes(data[: len(data) // 2])
    extra = st_save({"embedding": torch.zeros(3), "other": torch.zeros(1)}, metadata={"dim": "3"})
    with pytest.raises(EmbeddingError, match="exactly one tensor"):
        Task2VecEmbedding.from_bytes(extra)
    nometa = st_save({"embedding": torch.zeros(3)})
    with pytest.raises(EmbeddingError, match="metadata lacks"):
        Task2VecEmbedding.from_bytes(nometa)
    with pytest.raises(EmbeddingError, match="not found"):
        Task2VecEmbedding.load(tmp_path / "missing.safetensors")


def test_nan_vectors_are_refused() -> None:
    with pytest.raises(EmbeddingError, match="NaN"):
        Task2VecEmbedding(torch.tensor([1.0, float("nan")]))


def test_unwritable_output_leaves_nothing(tmp_path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        make().save(tmp_path / "nope" / "e.safetensors")
    if os.geteuid() != 0:  # root ignores directory permissions
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(OutputError):
            make().save(ro / "e.safetensors")


def test_failed_write_keeps_old_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "e.safetensors"
    old = make()
    old.save(path)

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OutputError, match="No space"):
        make(probe="new").save(path)
    assert Task2VecEmbedding.load(path).probe == "p"
    assert [p.name for p in tmp_path.iterdir()] == ["e.safetensors"]  # no temp file left
