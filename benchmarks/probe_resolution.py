"""Does selection quality depend on the probe's input size? The zoo's 36 tasks embedded at 32, 64 (and 96) px.

    python -m benchmarks.probe_resolution --sizes 64 96   # ~20 min per 64 px on 2 CPUs
    # -> benchmarks/results/probe_resolution.{json,md}, zoo_embeddings_small_<size>px.safetensors

The ``small`` reproduction probes tf_efficientnet_lite0 at 32 px, far below the
224 px it was trained for. Here only the probe's input size changes: the same tasks
(same images, same labels, same 300-sample caps and seeds) are preprocessed for the
probe at each size and embedded with ``montecarlo``; the experts and the ground truth
(their linear-probe errors at 32 px) stay those of the reproduction, so any change in
selection quality is the embedding's. Each size's embeddings are packed like the
32 px ones and scored by :mod:`benchmarks.selection_quality` (d_sym, d_asym,
two-stage) on its three meta-tasks; ``--model2vec layer filter`` adds those MODEL2VEC
variants (72 trainings each per size; ``layer`` takes seconds, ``filter`` minutes).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmarks import selection_quality as SQ
from benchmarks.reproduce import DEFAULT_OUT, RESULTS, Cache, log, prepare

METHODS = ("d_sym", "d_asym", "complexity_cv", "static_prior", "two_stage[d_sym, K=1]", "two_stage[d_sym, K=3]",
           "logme_all")  # MODEL2VEC's trainings are left out: 288 per size


def embed_at(size: int, out: Path) -> Path:
    """Pack of the 36 tasks' montecarlo embeddings with the probe at ``size`` px (cached per task)."""
    from safetensors.torch import save_file

    from benchmarks.zoo import data as D
    from benchmarks.zoo.configs import get_config
    from t2v_hub.task2vec import TensorTask, embed
    from t2v_hub.trivial import trivial_for

    cfg = replace(get_config("small"), input_size=size)
    run_dir = DEFAULT_OUT / f"small_{size}px"  # its own cache: the 32 px pools stay untouched
    torch.set_num_threads(cfg.threads)
    zoo = prepare(cfg, Cache(run_dir))
    names = json.loads((RESULTS / "reproduce_small.json").read_text())["error_matrix"]["tasks"]
    vectors, seconds, first = [], [], None
    for name in names:
        t = zoo["tasks"][name]
        path = run_dir / "embeddings" / f"{name}.safetensors"
        if path.is_file():
            from t2v_hub.embedding import Task2VecEmbedding

            e = Task2VecEmbedding.load(path)
        else:
            log(f"embedding {name} at {size} px...")
            t1 = time.perf_counter()
            x = D.normalise(zoo["crops"][t.pool][torch.as_tensor(t.train_idx)], zoo["data_config"])
            tt = TensorTask(x, torch.as_tensor(t.train_y), {"dataset_id": f"zoo/{name}", "zoo_pool": t.pool})
            e = embed(tt, cfg.arch, "montecarlo", max_samples=cfg.embed.max_samples, seed=cfg.seed,
                      mc_samples=cfg.embed.mc_samples, batch_size=cfg.embed.batch_size, input_size=size)
            seconds.append(time.perf_counter() - t1)
            path.parent.mkdir(parents=True, exist_ok=True)
            e.save(path)
        first = first or e
        vectors.append(e.vector)
    assert first is not None
    from safetensors import safe_open

    with safe_open(str(SQ.PACK), "pt") as f:  # the ground truth is the 32 px run's: experts do not change
        base, truth = f.metadata(), {k: f.get_tensor(k) for k in ("errors", "logme")}
    if json.loads(base["names"]) != names:
        raise SystemExit(f"{SQ.PACK.name} lists other tasks; rebuild it (selection_quality.pack_embeddings)")
    meta = {"names": json.dumps(names), "experts": base["experts"], "probe": first.probe, "method": first.method,
            "input_size": json.dumps(first.config("input_size")),
            "seconds_per_task_mean": f"{sum(seconds) / len(seconds):.2f}" if seconds else ""}
    save_file({"vectors": torch.stack(vectors).contiguous(), "t0": trivial_for(first).vector.contiguous(), **truth},
              str(out), metadata=meta)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64])
    ap.add_argument("--model2vec", nargs="*", default=[], metavar="BIAS",
                    help="MODEL2VEC variants to train at every size (e.g. layer filter; default none)")
    args = ap.parse_args(argv)
    methods = [*METHODS, *(f"model2vec[bias={b}]" for b in args.model2vec)]
    res: dict[str, Any] = {"sizes": {}}
    for size in [32, *args.sizes]:
        pack = SQ.PACK if size == 32 else RESULTS / f"zoo_embeddings_small_{size}px.safetensors"
        if size != 32 and not pack.is_file():
            embed_at(size, pack)
        # this size's embeddings, the same protocol and ground truth
        r = SQ.run(pack, model2vec=bool(args.model2vec), only=tuple(args.model2vec) or None)
        res["sizes"][str(size)] = {m: {k: r["meta_tasks"][m]["methods"][k]["relative_error_increase"]
                                       for k in methods} for m in r["meta_tasks"]}
    (RESULTS / "probe_resolution.json").write_text(json.dumps(res, indent=1) + "\n")
    metas = list(next(iter(res["sizes"].values())))
    lines = ["# Selection quality vs the probe's input size (relative error increase; lower is better)", "",
             "| method | " + " | ".join(f"{m} {s} px" for m in metas for s in res["sizes"]) + " |",
             "|---|" + "---|" * (len(metas) * len(res["sizes"]))]
    for k in methods:
        cells = [f"{100 * res['sizes'][s][m][k]:+.1f}%" for m in metas for s in res["sizes"]]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    (RESULTS / "probe_resolution.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
