"""Helpers shared by CLI commands."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..constants import FISHER_METHODS, MAX_INPUT_SIZE
from ..errors import OutputError


def autocast_dtype(name: str, device: str | None = None) -> Any:
    """--mixed-precision value -> torch dtype (torch imported late: `--help` stays fast).

    ``auto`` follows the device the passes run on (--device): bf16 on CUDA, full precision
    elsewhere, so `--device cpu` on a GPU machine does not autocast the CPU to bf16.
    """
    import torch

    if name == "auto":
        from ..devices import pick_device

        return torch.bfloat16 if pick_device(device, param="--device").type == "cuda" else None
    return {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


FORMATS = ("table", "json", "csv")
# t2v_hub.fisher._variational_run.OPTIMIZERS, spelled out so --help does not import torch (a test keeps them equal)
VARIATIONAL_OPTIMIZERS = ("adam", "fixed_point", "gauss_newton")


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """argparse type: a whole number in [lo, hi] (the message names the value, argparse names the flag)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}, got {value}")
        if value > hi:
            raise argparse.ArgumentTypeError(f"is too large ({value}); use at most {hi}")
        return value

    parse.__name__ = "whole number"
    return parse


positive_int = int_in(1, 2**31 - 1)  # counts and sizes
nonneg_int = int_in(0, 2**31 - 1)
input_side = int_in(1, MAX_INPUT_SIZE)  # pixels: past this one decoded batch no longer fits in memory
# Work multipliers: every unit is a backward pass over the data (label draws, optimiser steps) or
# a head step, so a typo of a few zeros is days of CPU. The bounds are 100-1000x the defaults.
mc_draws = int_in(1, 1000)  # labels per image; the exact expectation of a 1000-class head is 1000
optimiser_steps = int_in(1, 100_000)
head_draws = int_in(1, 10_000_000)
seed_int = int_in(0, 2**63 - 1)  # what torch.Generator.manual_seed accepts


def float_in(lo: float, hi: float, *, lo_open: bool = False) -> Any:
    """argparse type: a finite float in [lo, hi] (or (lo, hi] with ``lo_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value > hi or value < lo or (lo_open and value == lo):
            span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
            raise argparse.ArgumentTypeError(f"must be a finite number in {span}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def device_name(text: str) -> str:
    """argparse type: cpu, cuda, cuda:N, mps or auto (checked before any data is read)."""
    if re.fullmatch(r"cpu|auto|mps|cuda(:\d+)?", text) is None:
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N, mps or auto, got {text!r}")
    return text


def add_format_arg(p: argparse.ArgumentParser, default: str = "table", what: str = "output") -> None:
    """The one ``--format`` vocabulary of every command that prints data."""
    p.add_argument("--format", choices=FORMATS, default=default,
                   help=f"{what} on stdout: aligned table, JSON or CSV (default %(default)s)")


def emit(fmt: str, head: Sequence[str], rows: Sequence[Sequence[Any]], obj: Any = None) -> None:
    """Print ``rows`` under ``head`` as an aligned table or CSV, or ``obj`` (default: the rows) as JSON."""
    if fmt == "json":
        print_json(obj if obj is not None else [dict(zip(head, r, strict=True)) for r in rows])
        return
    cells = [[str(c) for c in r] for r in rows]
    if fmt == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(head)
        w.writerows(cells)
        return
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(head)]
    out = sys.stdout
    out.write("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip() + "\n")
    for r in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


def emit_summary(fmt: str, summary: dict[str, Any], line: str) -> None:
    """A one-record result: ``line`` for a person (table), the dict as JSON, or a one-row CSV."""
    if fmt == "json":
        print_json(summary)
    elif fmt == "csv":
        emit("csv", list(summary), [list(summary.values())])
    else:
        print(line)


def add_hub_args(p: argparse.ArgumentParser, hub_default: str | None = "hf") -> None:
    g = p.add_argument_group("hub")
    g.add_argument("--hub", default=hub_default,
                   help="'hf' (Hugging Face Hub, the default), an http(s):// URL, or a local hub folder")
    g.add_argument("--endpoint", default=None, help="Hub endpoint URL (default: HF_ENDPOINT or huggingface.co)")
    g.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or `hf auth login`; prefer those)")


def add_data_args(p: argparse.ArgumentParser, *, required: bool = True,
                  dataset_help: str = "hub dataset id, local folder/file (imagefolder, save_to_disk, parquet, csv)") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", required=required, help=dataset_help)
    g.add_argument("--split", default=None, help="split to use (default: train, else the only split)")
    g.add_argument("--config", dest="config_name", default=None, help="dataset configuration name")
    g.add_argument("--revision", default=None, help="dataset revision (hub datasets)")
    g.add_argument("--streaming", action="store_true", help="stream the dataset; only --max-samples rows are read")
    g.add_argument("--image-column", default=None, help="override the detected image column")
    g.add_argument("--label-column", default=None,
                   help="override the detected label column; a mask or map column (Image or 2-D array of the"
                        " image's size) makes a pixel-wise task: per-pixel softmax for integer masks, Gaussian"
                        " for float maps, with the decoder head of the TASK2VEC supplement (section 1.1)")
    g.add_argument("--on-bad-image", choices=("fail", "skip"), default="fail", help="undecodable images: stop or skip")


def add_probe_args(p: argparse.ArgumentParser, default_probe: str | None) -> None:
    g = p.add_argument_group("probe and estimator")
    default_text = default_probe or "the probe most experts share"
    g.add_argument("--probe", type=probe_name, default=default_probe, help=f"timm model name, hf-hub:/local-dir: name (default: {default_text})")
    g.add_argument("--method", default="montecarlo", choices=FISHER_METHODS,
                   help="Fisher estimator (default: montecarlo, the exact true Fisher)")
    g.add_argument("--max-samples", type=positive_int, default=None, help="use at most N samples (shuffled first)")
    g.add_argument("--seed", type=seed_int, default=0,
                   help="seed of the sample selection, head fit and label draws (same seed, same vector)")
    g.add_argument("--mc-samples", type=mc_draws, default=None,
                   help="labels drawn per input (montecarlo and batch; default 1)")
    g.add_argument("--fisher-steps", type=optimiser_steps, default=None, metavar="N",
                   help="variational: optimisation steps (default: 2 passes over the data; a warning says "
                        "when that was not enough)")
    g.add_argument("--variational-init", choices=("reference", "laplace"), default=None,
                   help="variational: start from the reference's variances, or warm-start at 2F/beta + prior "
                        "from a montecarlo pass (converges in far fewer steps)")
    g.add_argument("--variational-optimizer", choices=VARIATIONAL_OPTIMIZERS, default=None,
                   help="variational: a closed-form step per filter under Gauss-Newton slopes (gauss_newton, "
                        "the default: converges in 2 passes), the supplement's Adam recipe (adam), or the "
                        "closed-form step under pathwise slopes with antithetic noise (fixed_point); see "
                        "BENCHMARKS.md, 'Variational convergence'")
    g.add_argument("--batch-size", type=positive_int, default=32, help="images per forward/backward pass")
    g.add_argument("--head-draws", type=head_draws, default=None, metavar="N",
                   help="samples drawn per epoch of the head fit (default 10000; 2000 for the decoder of a"
                        " pixel-wise task, whose draws each carry a whole mask)")
    g.add_argument("--input-size", type=input_side, default=None, help="override the probe's input resolution")
    g.add_argument("--include-norm", action="store_true", help="add norm-layer scales to the layout (not with --method variational)")
    g.add_argument("--no-pretrained", action="store_true", help="random-init probe (tests only)")
    g.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="load the probe's weights from a local .safetensors/.pth file (its sha256 is recorded)")
    g.add_argument("--device", type=device_name, default=None, help="torch device: auto, cpu, cuda, cuda:N, mps (default auto: CUDA when present, else the CPU)")
    g.add_argument(
        "--mixed-precision", choices=("auto", "no", "bf16", "fp16"), default="auto",
        help="autocast the forward passes (default auto: bf16 on CUDA, none on the CPU); squares are always "
             "accumulated in fp32",
    )
    g.add_argument("--no-cache", action="store_true", help="recompute even if a cached embedding exists")


# Flags that shape an embedding computed from a dataset (--probe and --method are checked against a
# file's own instead): with an embedding file they would be ignored, so they are refused.
DATA_DESTS = ("split", "config_name", "revision", "streaming", "image_column", "label_column", "on_bad_image")
COMPUTE_DESTS = ("max_samples", "seed", "mc_samples", "fisher_steps", "variational_init", "variational_optimizer",
                 "batch_size", "head_draws", "input_size", "include_norm", "no_pretrained", "checkpoint", "device",
                 "mixed_precision", "no_cache")


def pretrained_flag(args: argparse.Namespace) -> bool | None:
    """``pretrained=`` for --no-pretrained, refused beside --checkpoint (whose weights would silently win)."""
    from ..errors import T2VError

    if getattr(args, "no_pretrained", False) and getattr(args, "checkpoint", None):
        raise T2VError("--no-pretrained asks for a random init and --checkpoint for weights from a file; pass one")
    return False if getattr(args, "no_pretrained", False) else None


def given_flags(args: argparse.Namespace, dests: Sequence[str]) -> list[str]:
    """The flags among ``dests`` that the command line set to something other than their default."""
    from .flags import flag_map

    parser = getattr(args, "_parser", None)
    if parser is None:
        return []
    flags = flag_map(parser)
    return [flags[d] for d in dests if d in flags and hasattr(args, d) and getattr(args, d) != parser.get_default(d)]


def refuse_compute_flags(args: argparse.Namespace, what: str) -> None:
    """With an embedding file, flags that only shape a computed embedding are an error, not a no-op."""
    from ..errors import T2VError

    extra = given_flags(args, DATA_DESTS + COMPUTE_DESTS)
    if extra:
        one = len(extra) == 1
        raise T2VError(f"{', '.join(extra)} {'shapes' if one else 'shape'} an embedding computed from a dataset; "
                       f"{what} is an embedding file, computed already: drop {'it' if one else 'them'}")


def data_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "split": args.split,
        "config": args.config_name,
        "revision": args.revision,
        "streaming": args.streaming,
        "image_column": args.image_column,
        "label_column": args.label_column,
        "on_bad_image": args.on_bad_image,
    }


def head_from_args(args: argparse.Namespace) -> Any:
    """The HeadConfig ``--head-draws`` asks for (None: the defaults)."""
    if getattr(args, "head_draws", None) is None:
        return None
    from ..config import HeadConfig

    return HeadConfig(draws_per_epoch=args.head_draws, dense_draws_per_epoch=args.head_draws)


def embed_from_args(args: argparse.Namespace, quiet: bool, stats: dict[str, Any]):
    from ..errors import FisherError
    from ..task2vec import embed

    if getattr(args, "fisher_steps", None) is not None and (args.method != "variational" or args.fisher_steps < 1):
        raise FisherError("--fisher-steps takes a positive step count and applies to --method variational only")
    if getattr(args, "mc_samples", None) is not None and args.method in ("empirical", "variational"):
        raise FisherError(f"--mc-samples sets how many labels are drawn from the model, which --method {args.method} "
                          "does not do: drop it, or use --method montecarlo")
    for flag in ("variational_init", "variational_optimizer"):
        if getattr(args, flag, None) is not None and args.method != "variational":
            raise FisherError(f"--{flag.replace('_', '-')} applies to --method variational only")
    fisher_options = {k: v for k, v in (("steps", getattr(args, "fisher_steps", None)),
                                        ("init", getattr(args, "variational_init", None)),
                                        ("optimizer", getattr(args, "variational_optimizer", None)))
                      if v is not None}

    return embed(
        args.dataset,
        args.probe,
        args.method,
        max_samples=args.max_samples,
        seed=args.seed,
        mc_samples=args.mc_samples or 1,
        batch_size=args.batch_size,
        head=head_from_args(args),
        include_norm=args.include_norm,
        input_size=args.input_size,
        pretrained=pretrained_flag(args),
        checkpoint=getattr(args, "checkpoint", None),
        device=args.device,
        autocast_dtype=autocast_dtype(args.mixed_precision, args.device),
        cache=not args.no_cache,
        fisher_options=fisher_options or None,
        quiet=quiet,
        stats=stats,
        **{k: v for k, v in data_options(args).items() if v not in (None, False)},
    )


# Figure formats the plots are written in (matplotlib picks the format from the name).
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".eps", ".tif", ".tiff", ".webp")


def probe_name(value: str) -> str:
    """--probe: a model name, never the empty string (which would match no embedding, silently)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must be a probe name such as tf_efficientnet_lite0, got an empty string")
    return value


def check_writable(path: str, suffix: str | tuple[str, ...] | None = ".safetensors",
                   example: str = "task.safetensors") -> None:
    """Fail before hours of compute if the output cannot be written (or would be misnamed).

    ``suffix``: what the file holds; a ``.json`` or ``.txt`` name for a safetensors file is a
    mistake the user finds only when another tool refuses it, so it is refused here.
    """
    try:
        _check_writable(path, suffix, example)
    except OSError as exc:  # the name itself is unusable: too long, a component is a file, ...
        raise OutputError(f"cannot write {short_path(path)!r}: {exc.strerror or exc}; pass a shorter or valid "
                          "path") from None


def short_path(path: str, limit: int = 120) -> str:
    """``path`` for a one-line message: a 5,000-character name is shown by its ends and its length."""
    return path if len(path) <= limit else f"{path[:60]}...{path[-40:]} ({len(path)} characters)"


def _check_writable(path: str, suffix: str | tuple[str, ...] | None, example: str) -> None:
    if Path(path).is_dir():
        raise OutputError(f"cannot write {path!r}: it is a folder; pass a file name like {example}")
    suffixes = (suffix,) if isinstance(suffix, str) else suffix
    special = Path(path).exists() and not Path(path).is_file()  # /dev/null, a FIFO: written as they are
    if suffixes and not special and Path(path).suffix.lower() not in suffixes:
        what = f"the file is {suffixes[0][1:]}, so its name must end in {suffixes[0]}" if len(suffixes) == 1 else \
            f"the format follows the name, which must end in one of {', '.join(suffixes)}"
        raise OutputError(f"cannot write {path!r}: {what}; pass a name like {example}")
    parent = Path(path).resolve().parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"cannot write {path!r}: {str(parent)!r} is a file, not a folder; choose another path")
    if not parent.is_dir():
        raise OutputError(f"cannot write {path!r}: folder {str(parent)!r} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write {path!r}: folder {str(parent)!r} is not writable; choose another --out")


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def hint(msg: str) -> None:
    print(msg, file=sys.stderr)
