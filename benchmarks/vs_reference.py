"""t2v-hub against the public reference code (awslabs/aws-cv-task2vec), same weights, same images.

    python -m benchmarks.vs_reference            # writes benchmarks/results/vs_reference.{json,md}
    python -m benchmarks.vs_reference --reps 3 --reference PATH   # a checkout or a git dir of the reference
    python -m benchmarks.vs_reference --reference PATH --tta-seeds 3   # time to accuracy over seeds (vs_reference_tta)

Setting (the one the issue measured): resnet18 with one fixed random initialisation (no
pretrained ResNet weights can be fetched here; both sides load the same state dict),
N = 640 Fashion-MNIST training images (64 per class, 10 classes) resized to
64 px, three channels, ImageNet normalisation, batch 64, CPU, 2 threads, BatchNorm in eval
mode on both sides (the reference's ``model.train()`` would let BatchNorm use batch
statistics). The reference runs with ``loader_opts = {num_samples: N, num_workers: 0}``, so
its Fisher pass and each head epoch see N (weighted-random) samples instead of its default
10,000: equal images.

Each run is its own process, so startup (interpreter, imports, model construction) is
measured; runs of the reference and of t2v-hub (``montecarlo`` and ``batch``) are
interleaved, ``--reps`` times. Per stage: process CPU time (user + system, all threads).

Agreement: cosine between the embeddings (conv filters only: the reference adds BatchNorm
gammas, dropped here), across implementations and seed to seed. Time to accuracy (first rep,
montecarlo): on each implementation's own fitted model, the Fisher pass alone at 40 ..
10,240 samples (t2v-hub: a subset of the images, beyond N more label draws per image; the
reference: its sampler's ``num_samples``, beyond N more epochs), CPU seconds and cosine to a
low-noise "truth" for that same model and head: t2v-hub's exact per-sample estimator with 8
label draws per image over all N images (the reference's model is a torchvision ResNet; the
estimator takes any module).

The reference's code is read from a git-ignored cache (``benchmarks/.reference/``, filled by
``git clone`` of its public repository, Apache-2.0, or from ``--reference``); nothing of it is
committed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".reference"
REF_DIR = CACHE / "aws-cv-task2vec"
REF_URL = "https://github.com/awslabs/aws-cv-task2vec"
SIZE, N_IMAGES, BATCH, THREADS = 64, 640, 64, 2
TTA_SAMPLES = (40, 160, 200, 240, 320, 640, 2560, 3200, 3840, 4480, 5120, 10240)  # beyond N: more label draws
# (t2v-hub) or epochs (reference); the points between 160-320 and 2560-5120 resolve when each side reaches 0.99


def ensure_reference(source: str | None) -> Path:
    """A plain checkout of the reference under the git-ignored cache."""
    if (REF_DIR / "task2vec.py").is_file():
        return REF_DIR
    REF_DIR.parent.mkdir(parents=True, exist_ok=True)
    if source and (Path(source) / "task2vec.py").is_file():
        return Path(source)
    if source:  # a git directory (e.g. a bare mirror): export its HEAD
        REF_DIR.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "--git-dir", source, "archive", "HEAD"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(REF_DIR)], input=archive.stdout, check=True)
    else:
        subprocess.run(["git", "clone", "--depth", "1", REF_URL, str(REF_DIR)], check=True)
    return REF_DIR


def prepare() -> Path:
    """Images, labels and one resnet18 initialisation, shared by every run."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    import torchvision

    from benchmarks.zoo.data import FASHION_DIR, _read_idx, fashion_available

    path = CACHE / "inputs.pt"
    if path.is_file():
        return path
    if not fashion_available():
        raise SystemExit(f"Fashion-MNIST not found under {FASHION_DIR}: apt-get install dataset-fashion-mnist")
    x = _read_idx(os.path.join(FASHION_DIR, "train-images-idx3-ubyte.gz"))
    y = _read_idx(os.path.join(FASHION_DIR, "train-labels-idx1-ubyte.gz")).astype(np.int64)
    rng = np.random.default_rng(0)
    idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), N_IMAGES // 10, replace=False)
                                  for c in range(10)]))
    img = torch.as_tensor(x[idx]).float().div(255).unsqueeze(1)
    img = F.interpolate(img, size=(SIZE, SIZE), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.manual_seed(0)
    state = torchvision.models.resnet18(num_classes=10).state_dict()
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save({"images": (img - mean) / std, "labels": torch.as_tensor(y[idx]), "state": state}, path)
    torch.save(state, CACHE / "resnet18_init.pth")
    return path


# ----------------------------------------------------------------------------------- children


def _rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _conv_names(model: Any) -> list[str]:
    import torch.nn as nn

    return [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _truth(model: Any, images: Any, seed: int) -> Any:
    """Low-noise true Fisher of ``model`` (8 label draws per image), per filter."""
    import torch

    from t2v_hub.fisher import estimate

    names = _conv_names(model)
    loader = [(images[i:i + BATCH], torch.zeros(len(images[i:i + BATCH]), dtype=torch.long))
              for i in range(0, len(images), BATCH)]
    res = estimate(model.eval(), loader, "montecarlo", params=names, mc_samples=8,
                   generator=torch.Generator().manual_seed(seed))
    return torch.cat([res.per_param[n].flatten(1).mean(1) for n in names])


def child_reference(ref: Path, inputs: Path, method: str, samples: int, seed: int, tta: bool,
                    grid: tuple[int, ...] = TTA_SAMPLES) -> dict[str, Any]:
    c0 = time.process_time()
    sys.path.insert(0, str(ref))
    import torch

    torch.set_num_threads(THREADS)
    import models as ref_models  # the reference's modules
    import task2vec as ref_t2v

    data = torch.load(inputs)
    torch.manual_seed(seed)
    model = ref_models.resnet18(pretrained=False, num_classes=10)
    model.load_state_dict(data["state"])
    ds = torch.utils.data.TensorDataset(data["images"], data["labels"])
    t = ref_t2v.Task2Vec(model, method=method, loader_opts={"batch_size": BATCH, "num_workers": 0,
                                                            "num_samples": N_IMAGES})
    model.eval()  # see the module doc: BatchNorm in eval mode, as for t2v-hub
    stages: dict[str, float] = {"startup": time.process_time() - c0}
    peak = {"startup": _rss_mb()}
    c = time.process_time()
    t._cache_features(ds, max_samples=None, loader_opts=t.loader_opts)  # its default: 6 worker processes
    stages["features"] = time.process_time() - c
    peak["features"] = _rss_mb()
    c = time.process_time()
    t._fit_classifier(**t.classifier_opts)
    stages["head"] = time.process_time() - c
    peak["head"] = _rss_mb()
    c = time.process_time()
    epochs = max(samples // N_IMAGES, 1)
    t.loader_opts["num_samples"] = min(samples, N_IMAGES)
    t.compute_fisher(ds) if epochs == 1 else t.montecarlo_fisher(ds, epochs=epochs)
    stages["fisher"] = time.process_time() - c
    stages["total"] = time.process_time() - c0
    peak["fisher"] = _rss_mb()
    vec = torch.cat([m.weight.grad2_acc.flatten(1).mean(1) for _, m in model.named_modules()
                     if isinstance(m, torch.nn.Conv2d)])
    out: dict[str, Any] = {"impl": "reference", "method": method, "samples": samples, "stages": stages,
                           "peak_rss_mb": peak, "vector": vec.tolist()}
    if tta:  # the Fisher pass alone, at other sample counts, on this same fitted model
        sys.path.remove(str(ref))  # the reference's datasets.py would shadow HF datasets
        truth = _truth(model, data["images"], seed + 100)
        out["tta"] = []
        for n in grid:
            c = time.process_time()
            t.loader_opts["num_samples"] = min(n, N_IMAGES)
            t.loader_opts["batch_size"] = min(n, BATCH)  # its loader drops the last partial batch
            t.montecarlo_fisher(ds, epochs=max(n // N_IMAGES, 1))
            sec = time.process_time() - c
            v = torch.cat([m.weight.grad2_acc.flatten(1).mean(1) for _, m in model.named_modules()
                           if isinstance(m, torch.nn.Conv2d)])
            out["tta"].append({"samples": n, "fisher_cpu_s": sec, "cos_truth": _cos(v.tolist(), truth.tolist())})
    return out


def child_ours(inputs: Path, method: str, samples: int, seed: int, tta: bool, grid: tuple[int, ...] = TTA_SAMPLES,
               random_subset: bool = False) -> dict[str, Any]:
    c0 = time.process_time()
    import torch

    torch.set_num_threads(THREADS)
    import t2v_hub.task2vec as T
    from t2v_hub.data.tensors import TensorTask

    data = torch.load(inputs)
    stages: dict[str, float] = {}
    timed: dict[str, Any] = {"_batched_features": "features", "fit_head": "head", "_fisher": "fisher"}
    for attr, stage in timed.items():
        fn = getattr(T, attr)

        def wrapped(*a: Any, _fn: Any = fn, _stage: str = stage, **k: Any) -> Any:
            c = time.process_time()
            try:
                return _fn(*a, **k)
            finally:
                stages[_stage] = stages.get(_stage, 0.0) + time.process_time() - c
                peak[_stage] = _rss_mb()

        setattr(T, attr, wrapped)
    stages["startup"] = time.process_time() - c0
    peak: dict[str, float] = {"startup": _rss_mb()}
    mc = max(samples // N_IMAGES, 1)
    n = min(samples, N_IMAGES)
    captured: dict[str, Any] = {}
    orig = T._fisher

    def grab(run: Any, feats: Any) -> Any:
        captured["model"] = run.probe.model
        return orig(run, feats)

    T._fisher = grab
    # "montecarlo+bf16": the same estimator under `--mixed-precision bf16` (both forward passes autocast)
    method, _, precision = method.partition("+")
    e = T.embed(TensorTask(data["images"], data["labels"]), "resnet18", method, pretrained=False,
                checkpoint=str(CACHE / "resnet18_init.pth"), input_size=SIZE, batch_size=BATCH, seed=seed,
                max_samples=n, mc_samples=mc, cache=False, quiet=True,
                autocast_dtype=torch.bfloat16 if precision == "bf16" else None)
    stages["total"] = time.process_time() - c0
    out: dict[str, Any] = {"impl": "t2v-hub", "method": method + (f"+{precision}" if precision else ""), "samples": samples, "stages": stages,
                           "peak_rss_mb": peak, "vector": e.vector.tolist()}
    if tta:  # the Fisher pass alone (the library's estimator), on this same fitted model
        from t2v_hub.fisher import estimate

        model = captured["model"].eval()
        names = _conv_names(model)
        truth = _truth(model, data["images"], seed + 100)
        out["tta"] = []
        for n in grid:
            k = min(n, N_IMAGES)
            # random_subset: k images drawn per seed, as the reference's sampler does; else the first k
            keep = torch.randperm(N_IMAGES, generator=torch.Generator().manual_seed(seed))[:k] if random_subset \
                else torch.arange(k)
            images, labels = data["images"][keep], data["labels"][keep]
            loader = [(images[i:i + BATCH], labels[i:i + BATCH]) for i in range(0, k, BATCH)]
            c = time.process_time()
            res = estimate(model, loader, method, params=names, mc_samples=max(n // N_IMAGES, 1), filter_means=True,
                           generator=torch.Generator().manual_seed(seed))
            sec = time.process_time() - c
            v = torch.cat([res.per_param[nm].flatten(1).mean(1) for nm in names])
            out["tta"].append({"samples": n, "fisher_cpu_s": sec, "cos_truth": _cos(v.tolist(), truth.tolist())})
    return out


def run_child(args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(THREADS)}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.vs_reference", "--child", *args], env=env,
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cos(a: list[float], b: list[float]) -> float:
    import torch

    return float(torch.nn.functional.cosine_similarity(torch.tensor(a), torch.tensor(b), dim=0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--reference", default=None, help="a checkout or git dir of awslabs/aws-cv-task2vec")
    ap.add_argument("--out", type=Path, default=RESULTS / "vs_reference.json")
    ap.add_argument("--tta-seeds", type=int, default=0, metavar="S",
                    help="only the time to accuracy around each side's 0.99 crossing, over S seeds (vs_reference_tta) "
                         "-> vs_reference_tta_seeds.json")
    ap.add_argument("--bf16", action="store_true",
                    help="end to end only: the reference, montecarlo, and montecarlo under bf16 autocast "
                         "(on a CPU with native bf16) -> vs_reference_bf16.json")
    ap.add_argument("--tta-keep-reference", action="store_true",
                    help="with --tta-seeds: reuse the reference's runs from the committed file, rerun t2v-hub only")
    args = ap.parse_args(argv)
    if args.child:
        impl, method, samples, seed, want = args.child[0], args.child[1], int(args.child[2]), int(args.child[3]), \
            args.child[4] == "tta"
        grid = tuple(int(x) for x in args.child[5].split(",")) if len(args.child) > 5 else TTA_SAMPLES
        res = child_reference(REF_DIR, CACHE / "inputs.pt", method, samples, seed, want, grid) \
            if impl == "reference" else child_ours(CACHE / "inputs.pt", method, samples, seed, want, grid,
                                                    random_subset=len(args.child) > 5)
        print(json.dumps(res))
        return 0
    ensure_reference(args.reference)
    prepare()
    if args.tta_seeds:
        from benchmarks.vs_reference_tta import tta_seeds

        return tta_seeds(args.tta_seeds, keep_reference=args.tta_keep_reference)
    if args.bf16:
        return bf16_run(args.reps)
    end_to_end: list[dict[str, Any]] = []
    tta: list[dict[str, Any]] = []
    for rep in range(args.reps):  # interleaved: ref, ours montecarlo, ours batch
        for impl, method in (("reference", "montecarlo"), ("t2v-hub", "montecarlo"), ("t2v-hub", "batch")):
            want_tta = rep == 0 and method == "montecarlo"
            r = run_child([impl, method, str(N_IMAGES), str(rep), "tta" if want_tta else "-"])
            for row in r.pop("tta", []):
                tta.append({"impl": impl, "method": method, **row})
                print(json.dumps(tta[-1]), flush=True)
            end_to_end.append({k: v for k, v in r.items() if k != "vector"} | {"rep": rep, "_v": r["vector"]})
            print(json.dumps({k: v for k, v in end_to_end[-1].items() if k != "_v"}), flush=True)
    out = summarise(end_to_end, tta)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(render(out))
    print(render(out))
    return 0


def bf16_run(reps: int) -> int:
    """Interleaved end-to-end runs of the reference, montecarlo and montecarlo under bf16 autocast."""
    import statistics

    variants = (("reference", "montecarlo"), ("t2v-hub", "montecarlo"), ("t2v-hub", "montecarlo+bf16"))
    rows = []
    for rep in range(reps):
        for impl, method in variants:
            r = run_child([impl, method, str(N_IMAGES), str(rep), "-"])
            rows.append({**r, "rep": rep})
            print(json.dumps({k: v for k, v in r.items() if k != "vector"}), flush=True)

    def of(impl: str, method: str) -> list[dict[str, Any]]:
        return [r for r in rows if r["impl"] == impl and r["method"] == method]

    stages = ("startup", "features", "head", "fisher", "total")
    table = {f"{i}/{m}": {s: round(statistics.median(r["stages"][s] for r in of(i, m)), 2) for s in stages}
             for i, m in variants}
    ref = table["reference/montecarlo"]
    out = {"setting": {"model": "resnet18 (fixed random init)", "images": N_IMAGES, "size": SIZE, "batch": BATCH,
                       "threads": THREADS, "reps": reps, "cpu_bf16": _cpu_bf16()},
           "cpu_seconds": table,
           "ratio_to_reference": {k: {s: round(v[s] / ref[s], 3) for s in stages} for k, v in table.items()},
           "cos_bf16_vs_fp32_same_seed": [round(_cos(a["vector"], b["vector"]), 5) for a, b in
                                          zip(of("t2v-hub", "montecarlo"), of("t2v-hub", "montecarlo+bf16"),
                                              strict=True)],
           "runs": [{k: v for k, v in r.items() if k != "vector"} for r in rows]}
    (RESULTS / "vs_reference_bf16.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("cpu_seconds", "ratio_to_reference", "cos_bf16_vs_fp32_same_seed")},
                     indent=1))
    return 0


def _cpu_bf16() -> list[str]:
    """The CPU's native bf16 instruction sets (Linux), which decide whether bf16 autocast pays on the CPU."""
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return sorted({f for f in flags if f in ("avx512_bf16", "amx_bf16")})


def summarise(rows: list[dict[str, Any]], tta: list[dict[str, Any]]) -> dict[str, Any]:
    import statistics

    def med(impl: str, method: str, stage: str) -> float:
        return statistics.median(r["stages"][stage] for r in rows if r["impl"] == impl and r["method"] == method)

    stages = ("startup", "features", "head", "fisher", "total")
    table = {f"{i}/{m}": {s: round(med(i, m, s), 2) for s in stages}
             for i, m in (("reference", "montecarlo"), ("t2v-hub", "montecarlo"), ("t2v-hub", "batch"))}
    ratios = {m: {s: round(table[f"t2v-hub/{m}"][s] / table["reference/montecarlo"][s], 3) for s in stages}
              for m in ("montecarlo", "batch")}
    peaks = {f"{i}/{m}": {s: max(r["peak_rss_mb"][s] for r in rows if r["impl"] == i and r["method"] == m)
                          for s in ("startup", "features", "head", "fisher")}
             for i, m in (("reference", "montecarlo"), ("t2v-hub", "montecarlo"), ("t2v-hub", "batch"))}
    vec = {(r["impl"], r["method"], r["rep"]): r["_v"] for r in rows}
    agree = {}
    if len({r["rep"] for r in rows}) >= 2:
        agree = {"reference seed-to-seed": _cos(vec[("reference", "montecarlo", 0)], vec[("reference", "montecarlo", 1)]),
                 "t2v-hub montecarlo seed-to-seed": _cos(vec[("t2v-hub", "montecarlo", 0)],
                                                         vec[("t2v-hub", "montecarlo", 1)])}
    cross = [_cos(vec[("reference", "montecarlo", rep)], vec[("t2v-hub", m, rep)])
             for rep in {r["rep"] for r in rows} for m in ("montecarlo", "batch")]
    agree["t2v-hub vs reference (min over runs)"] = min(cross)
    agree["t2v-hub vs reference (max over runs)"] = max(cross)

    def reach(impl: str, level: float) -> float | None:
        ok = [r["fisher_cpu_s"] for r in tta if r["impl"] == impl and r["cos_truth"] >= level]
        return round(min(ok), 2) if ok else None

    return {"setting": {"model": "resnet18 (fixed random init)", "images": N_IMAGES, "size": SIZE, "batch": BATCH,
                        "threads": THREADS, "reps": len({r["rep"] for r in rows})},
            "cpu_seconds": table, "ratio_to_reference": ratios, "peak_rss_mb_after_stage": peaks,
            "agreement": {k: round(v, 4) for k, v in agree.items()},
            "time_to_accuracy": {"runs": tta, "cos_0.99_s": {i: reach(i, 0.99) for i in ("reference", "t2v-hub")},
                                 "cos_0.999_s": {i: reach(i, 0.999) for i in ("reference", "t2v-hub")}},
            "runs": [{k: v for k, v in r.items() if k != "_v"} for r in rows]}


def render(out: dict[str, Any]) -> str:
    lines = ["| CPU seconds (median) | startup | features | head | Fisher | total |", "|---|---:|---:|---:|---:|---:|"]
    for k, v in out["cpu_seconds"].items():
        lines.append(f"| {k} | " + " | ".join(f"{v[s]:.1f}" for s in ("startup", "features", "head", "fisher", "total"))
                     + " |")
    for m, r in out["ratio_to_reference"].items():
        lines.append(f"| ratio t2v-hub {m} / reference | " + " | ".join(f"{r[s]:.2f}x" for s in
                     ("startup", "features", "head", "fisher", "total")) + " |")
    lines += ["", "| peak RSS (MiB) after | startup | features | head | Fisher |", "|---|---:|---:|---:|---:|"]
    for k, v in out["peak_rss_mb_after_stage"].items():
        lines.append(f"| {k} | " + " | ".join(f"{v[s]:.0f}" for s in ("startup", "features", "head", "fisher")) + " |")
    lines += ["", "| Fisher pass | samples | CPU s | cos to truth |", "|---|---:|---:|---:|"]
    for r in out["time_to_accuracy"]["runs"]:
        lines.append(f"| {r['impl']} {r['method']} | {r['samples']} | {r['fisher_cpu_s']:.1f} | {r['cos_truth']:.4f} |")
    t = out["time_to_accuracy"]
    lines += ["", f"CPU seconds of the Fisher pass to cosine 0.99: {t['cos_0.99_s']}; to 0.999: {t['cos_0.999_s']} "
              "(None: not reached at the largest sample count run)."]
    if out["agreement"]:
        lines.append(f"Cosine between embeddings: {out['agreement']}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
