"""The configuration that made an embedding travels with it, typed, and is read back in one place."""

from __future__ import annotations

import torch

from t2v_hub.config import CONFIG_KEY, EmbedConfig, FisherConfig, HeadConfig, space_of
from t2v_hub.embedding import Task2VecEmbedding
from t2v_hub.task2vec import TensorTask, embed

PROBE = "test_efficientnet"


def test_round_trip_through_metadata_and_safetensors(tmp_path) -> None:
    cfg = EmbedConfig(probe="p", max_samples=7, seed=3, include_norm=True, input_size=48,
                      head=HeadConfig(epochs=1, lr=0.5, balanced=False),
                      fisher=FisherConfig(method="variational", mc_samples=2, batch_size=5,
                                          options={"steps": 10, "init": "laplace"}))
    assert EmbedConfig.from_metadata(cfg.to_metadata()) == cfg
    path = tmp_path / "e.safetensors"
    Task2VecEmbedding.create(torch.rand(4) + 0.1, probe="p", weights_sha256="w", layout_hash="l", method="variational",
                             **cfg.to_metadata()).save(path)
    assert EmbedConfig.from_metadata(Task2VecEmbedding.load(path).metadata) == cfg
    # The default differs from the example in every field, so the round trip is not vacuous.
    assert EmbedConfig.from_metadata(EmbedConfig().to_metadata()) == EmbedConfig() != cfg


def test_embed_records_the_config_it_ran_with() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 3, 32, 32, generator=g), torch.arange(12) % 2
    head = HeadConfig(epochs=1, draws_per_epoch=64)
    e = embed(TensorTask(x, y), PROBE, "empirical", seed=4, input_size=32, batch_size=6, head=head,
              max_samples=10)
    want = EmbedConfig(probe=PROBE, max_samples=10, seed=4, input_size=32, head=head,
                       fisher=FisherConfig(method="empirical", batch_size=6))
    assert EmbedConfig.from_metadata(e.metadata) == want
    s = space_of(e.metadata)
    assert (s.probe, s.method, s.input_size, s.include_norm) == (PROBE, "empirical", 32, False)


def test_files_without_the_entry_fall_back_to_the_flat_fields() -> None:
    meta = {"probe": "p", "method": "batch", "seed": "2", "max_samples": "null", "include_norm": "true",
            "input_size": "[3, 64, 64]", "mc_samples": "3", "fisher_options": '{"labels": "dataset"}',
            "head_config": '{"epochs": 5}'}
    assert CONFIG_KEY not in meta
    cfg = EmbedConfig.from_metadata(meta)
    assert cfg == EmbedConfig(probe="p", seed=2, include_norm=True, input_size=64, head=HeadConfig(epochs=5),
                              fisher=FisherConfig(method="batch", mc_samples=3, options={"labels": "dataset"}))
