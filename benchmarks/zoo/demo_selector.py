"""Retrain the demo hub's MODEL2VEC selector from what the demo hub itself holds (one commit).

    python -m benchmarks.zoo.demo_selector      # ~30 s; rewrites examples/zoo/t2v-zoo/model2vec-selector

The demo's experts carry their training tasks' embeddings and, as ``.eval_results``, the
ground truth of the run that built them (every zoo task's error on every expert). Those are
consistent with each other, unlike this repository's pack of the 36 tasks, whose glyph tasks
were rendered from another machine's fonts. So the selector is trained here with
``t2v-hub selector train --eval-results examples/zoo --tasks examples/zoo --exclude-self`` on the 12 expert
tasks (an expert's own task left out of its column), with the library's default
``bias="layer"``: the variant that beat d_asym under leave-one-domain-out on all three
ground-truth replicates (BENCHMARKS.md, "Selection quality"). The per-filter selector it
replaces pushed a digits expert to second place for Fashion-MNIST tops.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from t2v_hub.cli.main import main as cli
from t2v_hub.hub import LocalHub

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "examples" / "zoo"
REPO = "t2v-zoo/model2vec-selector"

CARD = """---
license: apache-2.0
tags:
- t2v-zoo
- model2vec-selector
---

# {repo}

A MODEL2VEC selector (TASK2VEC supplement 4.3) for the experts of this demo hub: one learned weight
per probe layer (`bias="layer"`, t2v-hub's default) and a temperature, trained on the {tasks} expert
tasks' `tf_efficientnet_lite0` montecarlo embeddings at 32 px against the experts' own evaluation
results (`.eval_results`; an expert's own task left out of its column), by
`python -m benchmarks.zoo.demo_selector`. Use it with
`t2v-hub recommend --hub examples/zoo --selector {repo}`.
"""


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "selector.safetensors"
        code = cli(["selector", "train", "--eval-results", str(ZOO), "--tasks", str(ZOO), "--bias", "layer",
                    "--exclude-self", "--out", str(out), "--format", "json"])
        if code != 0:
            return code
        data = out.read_bytes()
    from t2v_hub.selection.model2vec import Model2Vec

    sel = Model2Vec.from_bytes(data)
    tasks = int(sel.info["num_tasks"])
    hub = LocalHub(ZOO)
    hub.commit(REPO, {"selector.safetensors": data, "README.md": CARD.format(repo=REPO, tasks=tasks).encode()},
               "MODEL2VEC selector: bias=layer, trained on the demo hub's own embeddings and eval results",
               parent_commit=None)
    shutil.rmtree(ZOO / REPO / ".t2v", ignore_errors=True)  # this commit's journal and lock: not part of the demo
    print(f"{REPO}: bias=layer selector over {len(sel.expert_ids)} experts, {tasks} training tasks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
