"""Decode + transform throughput of the data layer.

    python -m benchmarks.data_throughput --config cpu
    python -m benchmarks.data_throughput --config gpu

Generates synthetic JPEGs (smooth gradients plus noise, so they compress like
photos) in a class-per-folder tree, then times ``TaskData.tensors`` (PIL decode +
the probe's timm eval transform, with 0/1/2 DataLoader workers), and the
``torchvision.io.decode_jpeg`` path (CPU; on the gpu config also nvjpeg on the
GPU) with the same resize/crop/normalise done in torch. Writes
``benchmarks/results/data_throughput_<config>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch
from PIL import Image

from t2v_hub.constants import DEFAULT_PROBE
from t2v_hub.data import load_task

RESULTS = Path(__file__).resolve().parent / "results"


def make_jpegs(root: Path, n: int, lo: int, hi: int, classes: int = 4, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], axis=-1) * 255 * rng.uniform(0.3, 1.0, size=3)
        img = np.clip(base + rng.normal(0, 12, size=(h, w, 3)), 0, 255).astype(np.uint8)
        d = root / f"class{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"{i:05d}.jpg"
        Image.fromarray(img).save(p, quality=90)
        paths.append(p)
    return paths


def probe_cfg() -> dict[str, Any]:
    import timm

    model = timm.create_model(DEFAULT_PROBE, pretrained=False)
    return dict(timm.data.resolve_model_data_config(model))


def time_pil(root: Path, cfg: dict[str, Any], workers: int, repeats: int) -> tuple[list[float], torch.Tensor]:
    times, x = [], torch.empty(0)
    for _ in range(repeats):
        td = load_task(str(root))  # fresh task: nothing cached
        t = time.perf_counter()
        x, _ = td.tensors(cfg, num_workers=workers, progress=False)
        times.append(time.perf_counter() - t)
    return times, x


def time_torchvision(
    paths: list[Path], cfg: dict[str, Any], device: str, repeats: int, batch: int = 64
) -> tuple[list[float], torch.Tensor]:
    import math

    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    _, h, w = cfg["input_size"]
    scale = math.floor(h / cfg.get("crop_pct", 0.875))
    interp = InterpolationMode(cfg.get("interpolation", "bilinear"))
    mean = torch.tensor(cfg["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], device=device).view(1, 3, 1, 1)
    times, out = [], torch.empty(0)
    for _ in range(repeats):
        t = time.perf_counter()
        chunks = []
        for s in range(0, len(paths), batch):
            data = [
                torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths[s : s + batch]
            ]
            imgs = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
            crops = [
                F.center_crop(F.resize(im, [scale], interpolation=interp, antialias=True), [h, w])
                for im in imgs
            ]
            x = torch.stack(crops).float().div_(255.0).sub_(mean).div_(std)
            chunks.append(x.cpu())
        if device != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        out = torch.cat(chunks)
    return times, out


def time_large(root: Path, cfg: dict[str, Any], repeats: int) -> list[dict[str, Any]]:
    """Big JPEGs: our drafted decode vs a full-resolution PIL decode + the same transform."""
    from t2v_hub.data import Preprocessor

    paths = sorted(root.rglob("*.jpg"))
    pre = Preprocessor(cfg)
    out = []
    for name, fn in (
        ("PIL draft (Preprocessor)", lambda p: pre(p.read_bytes())),
        ("PIL full decode, no draft", lambda p: pre._tf(Image.open(p).convert("RGB"))),
    ):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            for p in paths:
                fn(p)
            times.append(time.perf_counter() - t)
        out.append(
            {
                "method": f"{name}, large images",
                "device": "cpu",
                "workers": 0,
                "times_s": times,
                "n": len(paths),
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--num-images", type=int, default=400)
    ap.add_argument("--min-size", type=int, default=256)
    ap.add_argument("--max-size", type=int, default=500)
    ap.add_argument("--workers", default="0,1,2", help="comma-separated DataLoader worker counts")
    ap.add_argument(
        "--large", type=int, default=24, help="extra 2000-3000 px JPEGs to time drafting on (0: skip)"
    )
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per variant; the best is reported")
    args = ap.parse_args(argv)
    if args.config == "gpu" and not torch.cuda.is_available():
        raise SystemExit("--config gpu needs a CUDA device")

    cfg = probe_cfg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "jpegs"
        t = time.perf_counter()
        paths = sorted(make_jpegs(root, args.num_images, args.min_size, args.max_size))
        gen_s = time.perf_counter() - t
        mb = sum(p.stat().st_size for p in paths) / 1e6
        ref = None
        for w in (int(v) for v in args.workers.split(",")):
            times, ref = time_pil(root, cfg, w, args.repeats)
            rows.append(
                {
                    "method": "PIL + timm transform (TaskData.tensors)",
                    "device": "cpu",
                    "workers": w,
                    "times_s": times,
                }
            )
        devices = ["cpu"] + (["cuda"] if args.config == "gpu" else [])
        for dev in devices:
            try:
                times, x = time_torchvision(paths, cfg, dev, args.repeats)
            except Exception as e:  # noqa: BLE001 - report, do not fail the whole benchmark
                rows.append(
                    {"method": "torchvision.io.decode_jpeg", "device": dev, "workers": 0, "error": str(e)}
                )
                continue
            diff = float((x - ref).abs().mean()) if ref is not None and x.shape == ref.shape else None
            rows.append(
                {"method": "torchvision.io.decode_jpeg + v2 resize", "device": dev, "workers": 0, "times_s": times,
                 "mean_abs_diff_vs_pil": diff}
            )  # fmt: skip
        if args.large:
            big = Path(tmp) / "large"
            make_jpegs(big, args.large, 2000, 3000, seed=1)
            rows += time_large(big, cfg, args.repeats)
    for r in rows:
        if "times_s" in r:
            r["best_s"] = min(r["times_s"])
            r["images_per_s"] = round(r.pop("n", args.num_images) / r["best_s"], 1)
    import torchvision

    report = {
        "config": args.config,
        "num_images": args.num_images,
        "image_sizes": [args.min_size, args.max_size],
        "jpeg_megabytes": round(mb, 2),
        "generation_s": round(gen_s, 2),
        "transform_cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "cpu_count": os.cpu_count(),
        # Other jobs share these CPUs: the load average says how contended the timings were.
        "load_average_1m": round(os.getloadavg()[0], 2),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "pillow": PIL.__version__},
        "results": rows,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"data_throughput_{args.config}"
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Data throughput ({args.config})",
        "",
        f"{args.num_images} synthetic JPEGs, {args.min_size}-{args.max_size} px ({mb:.1f} MB), to"
        f" {cfg['input_size']} with {DEFAULT_PROBE}'s eval transform; {os.cpu_count()} CPUs"
        + (f", {report['gpu']}" if report["gpu"] else "")
        + f"; best of {args.repeats}; 1-min load average at the end {report['load_average_1m']}"
        + (f"; {args.large} extra 2000-3000 px JPEGs for the draft rows." if args.large else "."),
        "",
        "| method | device | workers | images/s | best s |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['device']} | {r['workers']} | error: {r['error']} | |")
        else:
            lines.append(
                f"| {r['method']} | {r['device']} | {r['workers']} | {r['images_per_s']} | {r['best_s']:.2f} |"
            )
    diffs = [r for r in rows if r.get("mean_abs_diff_vs_pil") is not None]
    if diffs:
        lines += ["", "Mean |difference| of the torchvision tensors from the PIL path (normalised units): "
                  + ", ".join(f"{r['device']} {r['mean_abs_diff_vs_pil']:.2e}" for r in diffs)
                  + " (different resize kernels; the PIL path is the reference)."]  # fmt: skip
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
