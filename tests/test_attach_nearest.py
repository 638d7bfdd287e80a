"""`attach` lists the nearest known tasks (other experts of the same probe) in the card."""

from __future__ import annotations

import torch
import yaml

from t2v_hub.cli.main import main
from t2v_hub.embedding import Task2VecEmbedding


def emb(vec: list[float], dataset: str) -> Task2VecEmbedding:
    return Task2VecEmbedding.create(
        torch.tensor(vec), probe="p", weights_sha256="w", layout_hash="l", method="montecarlo", dataset_id=dataset
    )


def front_matter(path) -> dict:
    text = path.read_text()
    return yaml.safe_load(text.split("---")[1])


def test_attach_records_nearest_tasks(tmp_path) -> None:
    hub = tmp_path / "hub"
    for name in ("near", "far", "new"):
        (hub / "org" / name).mkdir(parents=True)
    files = {
        "near": emb([1.0, 1.0, 0.1], "data/near"),
        "far": emb([0.01, 0.02, 5.0], "data/far"),
        "new": emb([1.0, 0.9, 0.12], "data/new"),
    }
    for name, e in files.items():
        e.save(tmp_path / f"{name}.safetensors")
    for name in ("near", "far"):
        assert main(["attach", "--model", f"org/{name}", "--embedding", str(tmp_path / f"{name}.safetensors"),
                     "--hub", str(hub), "--quiet"]) == 0
    assert main(["attach", "--model", "org/new", "--embedding", str(tmp_path / "new.safetensors"),
                 "--hub", str(hub), "--quiet"]) == 0
    nearest = front_matter(hub / "org" / "new" / "README.md")["task2vec"][0]["nearest"]
    assert [n["task"] for n in nearest] == ["data/near (org/near)", "data/far (org/far)"]
    assert nearest[0]["distance"] < nearest[1]["distance"]
    assert "Nearest known tasks" in (hub / "org" / "new" / "README.md").read_text()
    (hub / "org" / "solo").mkdir()
    assert main(["attach", "--model", "org/solo", "--embedding", str(tmp_path / "new.safetensors"),
                 "--hub", str(hub), "--quiet", "--no-nearest"]) == 0
    assert "nearest" not in front_matter(hub / "org" / "solo" / "README.md")["task2vec"][0]
