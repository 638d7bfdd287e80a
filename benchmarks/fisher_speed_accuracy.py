"""Speed and accuracy of the Fisher estimators.

    python -m benchmarks.fisher_speed_accuracy --config cpu   # ~2 min on 2 cores
    python -m benchmarks.fisher_speed_accuracy --config gpu   # one H100: 224 px, batch 128, bf16, channels_last

For each probe and estimator it reports

* accuracy: relative L2 error (and cosine similarity) of the per-filter embedding
  ``build_layout(model).reduce(per_param)`` against a long per-sample reference, as a
  function of the number of images processed and of the seconds spent. The reference
  for ``montecarlo``, ``batch`` and ``variational`` is the true Fisher (``montecarlo``
  over all reference images with several label draws each, drawn independently of the
  curves); for ``empirical`` it is the empirical Fisher over the same images (its own
  target; its distance to the true Fisher is reported as ``rel_err_vs_true``). The
  curves use the first images of the reference stream, so reference and estimate share
  inputs but not label draws.
* cost: seconds for one Fisher pass over one batch relative to a plain training step
  (forward, mean cross-entropy, ``loss.backward()``, no optimizer) of the same probe,
  batch and precision.

Data are random images and labels through a randomly initialised probe (no weights can be
downloaded here): the numbers measure the estimators' speed and statistical behaviour, not
a real task. Results go to ``benchmarks/results/fisher_speed_accuracy_<config>.{json,md}``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from t2v_hub.fisher import FisherResult, estimate
from t2v_hub.probes.layout import build_layout

RESULTS = Path(__file__).resolve().parent / "results"

CONFIGS: dict[str, dict[str, Any]] = {
    "cpu": {
        "device": "cpu",
        "models": [("resnet18", 64)],
        "num_classes": 10,
        "batch": 32,
        "ref_images": 256,
        "ref_mc": 2,
        "curve": [32, 64, 128],
        "autocast": None,
        "channels_last": False,
        "timing_reps": 5,
        "timing_threads": 1,
        "backends": ["auto", "unfold", "grouped"],
        "variational_steps": 4,
    },
    "gpu": {
        "device": "cuda",
        "models": [("resnet34", 224), ("tf_efficientnet_lite0", 224)],
        "num_classes": 10,
        "batch": 128,
        "ref_images": 4096,
        "ref_mc": 2,
        "curve": [128, 256, 512, 1024, 2048],
        "autocast": "bf16",
        "channels_last": True,
        "timing_reps": 5,
        "timing_threads": None,
        "backends": ["auto", "unfold"],  # auto = grouped on CUDA
        "variational_steps": 16,
    },
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batches(
    cfg: dict[str, Any], px: int, device: torch.device, start: int, count: int
) -> Iterator[tuple]:
    """Deterministic synthetic batches ``start .. start+count-1`` (generated on the fly, per index)."""
    for i in range(start, start + count):
        g = torch.Generator(device=device).manual_seed(10_000 + i)
        x = torch.randn(cfg["batch"], 3, px, px, generator=g, device=device)
        y = torch.randint(0, cfg["num_classes"], (cfg["batch"],), generator=g, device=device)
        if cfg["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, y


def embedding(model: nn.Module, result: FisherResult) -> torch.Tensor:
    return build_layout(model).reduce(result.per_param).double()


def compare(e: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    return {
        "rel_err": float((e - ref).norm() / ref.norm()),
        "cosine": float(F.cosine_similarity(e, ref, dim=0)),
    }


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def interleaved_min(
    fns: dict[str, Callable[[], Any]], device: torch.device, reps: int
) -> dict[str, dict[str, float]]:
    """Min over ``reps`` round-robin runs of wall and process-CPU seconds per function.

    Round-robin + min is robust to the load of a shared machine (other jobs only ever
    add time); CPU time (all threads of this process) is reported too because on a
    contended CPU it is steadier than wall time. On CUDA only wall time is meaningful.
    """
    for fn in fns.values():
        fn()  # warm-up (cuDNN autotuning, allocator, oneDNN primitive cache)
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            c0 = time.process_time()
            wall[k].append(timed(fn, device)[1])
            cpu[k].append(time.process_time() - c0)
    return {k: {"wall": min(wall[k]), "cpu": min(cpu[k])} for k in fns}


def cost(model: nn.Module, cfg: dict[str, Any], px: int, device: torch.device) -> dict[str, Any]:
    """One batch: plain training step vs one pass of each estimator (and conv backend)."""
    x, y = next(make_batches(cfg, px, device, 0, 1))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg["autocast"] or "")
    train_model = copy.deepcopy(model)  # the step writes .grad: keep the probe clean

    def train_step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(train_model(x).float(), y)
        loss.backward()
        for p in train_model.parameters():
            p.grad = None

    def fisher(method: str, **kw: Any) -> Callable[[], Any]:
        gen = torch.Generator(device=device).manual_seed(0)
        return lambda: estimate(model, [(x, y)], method, generator=gen, autocast_dtype=dtype, **kw)

    fns: dict[str, Callable[[], Any]] = {"train_step": train_step}
    for be in cfg["backends"]:
        fns[f"montecarlo[{be}]"] = fisher("montecarlo", conv_backend=be)
    fns["montecarlo[auto,no-pairwise]"] = fisher("montecarlo", pairwise_max_positions=0)
    fns["montecarlo[auto,mc=2]"] = fisher("montecarlo", mc_samples=2)
    fns["empirical[auto]"] = fisher("empirical")
    fns["batch"] = fisher("batch")
    # On a shared CPU, spinning intra-op threads make wall times of 2-thread runs swing by 2x;
    # one thread with min-of-interleaved repetitions gives reproducible *ratios*.
    threads = torch.get_num_threads()
    if cfg["timing_threads"]:
        torch.set_num_threads(cfg["timing_threads"])
    try:
        times = interleaved_min(fns, device, cfg["timing_reps"])
    finally:
        torch.set_num_threads(threads)
    base = times["train_step"]
    return {
        "seconds": times,
        "ratio_to_train_step": {k: {m: v[m] / base[m] for m in v} for k, v in times.items()},
    }


def curve(
    model: nn.Module, cfg: dict[str, Any], px: int, device: torch.device, method: str, ref: torch.Tensor
) -> list[dict[str, Any]]:
    """Error vs images/seconds, from one pass: per-batch results merge exactly (sums add)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg["autocast"] or "")
    gen = torch.Generator(device=device).manual_seed(1)  # one stream across batches
    total: FisherResult | None = None
    seconds = 0.0
    points = []
    for x, y in make_batches(cfg, px, device, 0, max(cfg["curve"]) // cfg["batch"]):
        part, dt = timed(
            lambda x=x, y=y: estimate(model, [(x, y)], method, generator=gen, autocast_dtype=dtype), device
        )
        seconds += dt
        total = part if total is None else total.merge(part)
        if total.num_samples in cfg["curve"]:
            points.append(
                {"images": total.num_samples, "seconds": seconds, **compare(embedding(model, total), ref)}
            )
    return points


def variational_point(
    model: nn.Module, cfg: dict[str, Any], px: int, device: torch.device, ref: torch.Tensor
) -> dict[str, Any]:
    try:
        from t2v_hub.fisher.variational import estimate_variational  # noqa: F401
    except ImportError as exc:  # pragma: no cover - optional module
        return {"skipped": f"not importable: {exc}"}
    steps = cfg["variational_steps"]
    batches = list(make_batches(cfg, px, device, 0, steps))
    probe = copy.deepcopy(model)  # it may train the head
    try:
        res, dt = timed(
            lambda: estimate(
                probe,
                batches,
                "variational",
                generator=torch.Generator(device=device).manual_seed(2),
                steps=steps,
                optimizer="adam",  # the committed figures are Adam's (the default before gauss_newton)
            ),
            device,
        )
    except Exception as exc:  # report, do not abort the benchmark
        return {"skipped": f"{type(exc).__name__}: {exc}"}
    return {"images": steps * cfg["batch"], "seconds": dt, **compare(embedding(model, res), ref)}


def run_model(name: str, px: int, cfg: dict[str, Any], device: torch.device) -> dict[str, Any]:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=cfg["num_classes"]).eval().to(device)
    if cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg["autocast"] or "")
    n_ref = cfg["ref_images"] // cfg["batch"]
    out: dict[str, Any] = {"image_size": px, "embedding_dim": build_layout(model).dim}
    print(f"[{name}] cost of one batch ...", flush=True)
    out["cost"] = cost(model, cfg, px, device)
    print(f"[{name}] references on {n_ref * cfg['batch']} images ...", flush=True)
    gen = torch.Generator(device=device).manual_seed(12345)
    true_res, t_true = timed(
        lambda: estimate(
            model,
            make_batches(cfg, px, device, 0, n_ref),
            mc_samples=cfg["ref_mc"],
            generator=gen,
            autocast_dtype=dtype,
        ),
        device,
    )
    emp_res, t_emp = timed(
        lambda: estimate(model, make_batches(cfg, px, device, 0, n_ref), "empirical", autocast_dtype=dtype),
        device,
    )
    ref_true, ref_emp = embedding(model, true_res), embedding(model, emp_res)
    out["reference"] = {
        "images": true_res.num_samples,
        "mc_samples": cfg["ref_mc"],
        "seconds_true": t_true,
        "seconds_empirical": t_emp,
        "empirical_vs_true": compare(ref_emp, ref_true),
    }
    out["curves"] = {}
    for method in ("montecarlo", "empirical", "batch"):
        print(f"[{name}] curve {method} ...", flush=True)
        points = curve(model, cfg, px, device, method, ref_emp if method == "empirical" else ref_true)
        out["curves"][method] = points
    print(f"[{name}] variational ...", flush=True)
    out["variational"] = variational_point(model, cfg, px, device, ref_true)
    return out


def markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [
        f"# Fisher estimators: speed and accuracy ({report['config_name']})",
        "",
        f"Device: {report['environment']['device']}; torch {report['environment']['torch']}; "
        f"batch {cfg['batch']}; autocast {cfg['autocast']}; channels_last {cfg['channels_last']}. "
        "Random images/labels through randomly initialised probes (speed and estimator statistics only). "
        f"Cost table: min over {cfg['timing_reps']} interleaved repetitions"
        + (f", {cfg['timing_threads']} thread(s)" if cfg.get("timing_threads") else "")
        + "; CPU time = all threads of the process.",
        "",
    ]
    for name, res in report["models"].items():
        lines += [f"## {name} ({res['image_size']} px, {res['embedding_dim']} filters)", ""]
        lines += [
            "| pass over one batch | wall ms | x train step (wall) | x train step (CPU time) |",
            "|---|---:|---:|---:|",
        ]
        for k, v in res["cost"]["seconds"].items():
            r = res["cost"]["ratio_to_train_step"][k]
            lines.append(f"| {k} | {v['wall'] * 1000:.1f} | {r['wall']:.2f} | {r['cpu']:.2f} |")
        ref = res["reference"]
        lines += [
            "",
            f"Reference: {ref['images']} images, {ref['mc_samples']} draws each "
            f"({ref['seconds_true']:.1f} s). Empirical vs true Fisher on the same images: "
            f"rel. error {ref['empirical_vs_true']['rel_err']:.3f}, cosine {ref['empirical_vs_true']['cosine']:.4f}.",
            "",
            "| estimator | images | seconds | rel. L2 error | cosine |",
            "|---|---:|---:|---:|---:|",
        ]
        for method, points in res["curves"].items():
            target = " (vs empirical ref.)" if method == "empirical" else ""
            for p in points:
                lines.append(
                    f"| {method}{target} | {p['images']} | {p['seconds']:.2f} | {p['rel_err']:.3f} | {p['cosine']:.4f} |"
                )
        var = res["variational"]
        if "skipped" in var:
            lines.append(f"| variational | - | - | skipped: {var['skipped']} | |")
        else:
            lines.append(
                f"| variational | {var['images']} | {var['seconds']:.2f} | {var['rel_err']:.3f} | {var['cosine']:.4f} |"
            )
            lines += [
                "",
                f"variational: {var['images'] // cfg['batch']} optimisation steps with the module's defaults; it "
                "estimates the robust (variational) Fisher, a different quantity with its own scale, so its "
                "L2 error against the true Fisher is not an accuracy figure -- read its cosine.",
            ]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    parser.add_argument("--models", nargs="*", help="override the config's probes, e.g. resnet18:64")
    args = parser.parse_args(argv)
    cfg = dict(CONFIGS[args.config])
    if args.models:
        cfg["models"] = [(m.split(":")[0], int(m.split(":")[1])) for m in args.models]
    device = torch.device(cfg["device"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    env = {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads",
    }
    report: dict[str, Any] = {"config_name": args.config, "config": cfg, "environment": env, "models": {}}
    t0 = time.perf_counter()
    for name, px in cfg["models"]:
        report["models"][name] = run_model(name, px, cfg, device)
    report["total_seconds"] = time.perf_counter() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"fisher_speed_accuracy_{args.config}.json").write_text(json.dumps(report, indent=2))
    md = markdown(report)
    (RESULTS / f"fisher_speed_accuracy_{args.config}.md").write_text(md + "\n")
    print(md)
    print(f"total {report['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
