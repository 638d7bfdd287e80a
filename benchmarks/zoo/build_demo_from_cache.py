"""Build examples/zoo and examples/data from a finished small run's cache (benchmarks/zoo/out/small).

Used for the committed demo when the full `python -m benchmarks.reproduce --config small`
(whose demo step also trains a MODEL2VEC selector) could not be rerun in time:
    python -m benchmarks.zoo.build_demo_from_cache
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.zoo.demo import write_sample
from t2v_hub.embedding import Task2VecEmbedding
from t2v_hub.hub import get_hub, push_embedding

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    examples = ROOT / "examples"
    zoo = examples / "zoo"
    zoo.mkdir(parents=True, exist_ok=True)
    (examples / "data").mkdir(exist_ok=True)
    result = json.loads((ROOT / "benchmarks/results/reproduce_small.json").read_text())
    emb_dir = ROOT / "benchmarks/zoo/out/small/embeddings/montecarlo"
    hub = get_hub(str(zoo))
    for name, info in result["experts"].items():
        if name == "generic_imagenet":  # no task of its own: nothing to attach
            continue
        emb = Task2VecEmbedding.load(emb_dir / f"{info['task']}.safetensors")
        repo = f"t2v-zoo/{name.replace('_', '-')}"
        (zoo / repo).mkdir(parents=True, exist_ok=True)
        res = push_embedding(hub, repo, emb)
        print(repo, res.path, emb.metadata.get("input_size"), emb.metadata.get("num_samples"))
    print(write_sample(examples / "data"))


if __name__ == "__main__":
    main()
