"""Build examples/zoo and examples/data from a finished small run's cache (benchmarks/zoo/out/small).

Used for the committed demo when the full `python -m benchmarks.reproduce --config small`
(which also trains a MODEL2VEC selector for the demo) could not be rerun in time.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from benchmarks.zoo.demo import write_sample
from t2v_hub.embedding import Task2VecEmbedding
from t2v_hub.hub import get_hub, push_embedding

root = ROOT / "examples"
zoo = root / "zoo"
r = json.load(open(ROOT / "benchmarks/results/reproduce_small.json"))
emb_dir = ROOT / "benchmarks/zoo/out/small/embeddings/montecarlo"
hub = get_hub(str(zoo))
for name, info in r["experts"].items():
    if name == "generic_imagenet":
        continue
    e = Task2VecEmbedding.load(emb_dir / f"{info['task']}.safetensors")
    repo = f"t2v-zoo/{name.replace('_', '-')}"
    (zoo / repo).mkdir(parents=True, exist_ok=True)
    res = push_embedding(hub, repo, e)
    print(repo, res.path, e.metadata.get("input_size"), e.metadata.get("num_samples"))
print(write_sample(root / "data"))
