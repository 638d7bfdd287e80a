"""Frozen configuration dataclasses; each is recorded into every embedding's metadata.

An embedding carries the :class:`EmbedConfig` that made it as one JSON entry
(``embed_config``) of its safetensors metadata, beside the flat fields that cards
and older files use; :meth:`EmbedConfig.from_metadata` is the one place that reads
it back (``EmbedConfig.from_metadata(config.to_metadata()) == config``), and falls
back to the flat fields for files written before the entry existed.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from . import constants as C
from .errors import T2VError

CONFIG_KEY = "embed_config"


@dataclass(frozen=True)
class HeadConfig:
    """Head fitting on cached features (supplement 4.1/4.2).

    The supplement gives Adam and 2 epochs for the head before the Fisher pass, with
    epochs of ``draws_per_epoch`` class-balanced draws with replacement. It does not
    give the head-only learning rate: we use Adam's customary 1e-3 (1e-4, the
    joint-phase rate, barely moves a zero-initialised head in 2 short epochs).
    """

    epochs: int = C.HEAD_EPOCHS
    lr: float = C.HEAD_LR
    weight_decay: float = C.HEAD_WEIGHT_DECAY
    draws_per_epoch: int = C.HEAD_DRAWS_PER_EPOCH
    batch_size: int = C.HEAD_BATCH_SIZE
    balanced: bool = True
    # Pixel-wise tasks (supplement 1.1): every draw carries H x W labels and costs a decoder
    # pass at the target resolution, so an epoch is far fewer draws.
    dense_draws_per_epoch: int = C.DENSE_HEAD_DRAWS_PER_EPOCH

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeadConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class FisherConfig:
    method: str = C.DEFAULT_FISHER_METHOD
    mc_samples: int = 1
    batch_size: int = C.DEFAULT_BATCH_SIZE
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FisherConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class EmbedConfig:
    probe: str = C.DEFAULT_PROBE
    max_samples: int | None = None
    seed: int = 0
    include_norm: bool = False
    input_size: int | None = None
    head: HeadConfig = field(default_factory=HeadConfig)
    fisher: FisherConfig = field(default_factory=FisherConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmbedConfig:
        known = {f.name for f in fields(cls)} - {"head", "fisher"}
        return cls(
            **{k: v for k, v in data.items() if k in known},
            head=HeadConfig.from_dict(data.get("head") or {}),
            fisher=FisherConfig.from_dict(data.get("fisher") or {}),
        )

    def to_metadata(self) -> dict[str, str]:
        """The metadata entry an embedding carries (sorted JSON: stable bytes and hashes)."""
        return {CONFIG_KEY: json.dumps(self.to_dict(), sort_keys=True, default=str)}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> EmbedConfig:
        """The config recorded in an embedding's metadata (flat legacy fields when older)."""
        if meta.get(CONFIG_KEY):
            return cls.from_dict(json.loads(meta[CONFIG_KEY]))

        def value(key: str, default: Any) -> Any:
            raw = meta.get(key)
            if raw in (None, ""):
                return default
            try:
                return json.loads(raw)
            except (TypeError, ValueError):
                return raw

        size = value("input_size", None)
        return cls(
            probe=str(meta.get("probe", C.DEFAULT_PROBE)),
            max_samples=value("max_samples", None),
            seed=int(value("seed", 0)),
            include_norm=bool(value("include_norm", False)),
            input_size=int(size[-1]) if isinstance(size, list) and size else None,
            head=HeadConfig.from_dict(value("head_config", {}) or {}),
            fisher=FisherConfig(
                method=str(meta.get("method") or C.DEFAULT_FISHER_METHOD),
                mc_samples=int(value("mc_samples", 1)),
                options=dict(value("fisher_options", {}) or {}),
            ),
        )


@dataclass(frozen=True)
class EmbeddingSpace:
    """The settings that decide which space an embedding lives in, typed (see ``space_of``)."""

    probe: str
    method: str
    input_size: int | None  # the side of the probe's input as run (metadata ``input_size`` [3, h, w])
    include_norm: bool


def space_of(meta: Mapping[str, str]) -> EmbeddingSpace:
    """Typed embedding-space settings from metadata (what ``recommend`` must embed a target with)."""
    try:
        size = json.loads(meta["input_size"]) if meta.get("input_size") else None
    except ValueError:
        size = None
    try:
        norm = bool(json.loads(meta.get("include_norm") or "false"))
    except ValueError:
        norm = False
    return EmbeddingSpace(
        probe=str(meta.get("probe", "")),
        method=str(meta.get("method") or C.DEFAULT_FISHER_METHOD),
        input_size=int(size[-1]) if isinstance(size, list) and size else None,
        include_norm=norm,
    )


def is_finite_real(value: Any) -> bool:
    """A real number (numpy scalars too, never a bool or a string) that is finite."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def check_count(name: str, value: Any, lo: int, *, error: type[T2VError] = T2VError) -> int:
    """``value`` as an ``int`` if it is a whole number >= ``lo``, else ``error`` naming ``name=``.

    Checked where a config is built, so a float or a string fails with the parameter's name
    instead of a TypeError from deep inside torch; a numpy integer comes back as a plain int.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:  # numpy ints too
        raise error(f"{name}={value!r}: expected a whole number of at least {lo}")
    return int(value)


def check_flag(name: str, value: Any, *, error: type[T2VError] = T2VError, optional: bool = False) -> bool | None:
    """``value`` if it is True or False (None too with ``optional``), else ``error`` naming ``name=``.

    ``include_norm="no"`` is truthy: taken as it is, it would silently mean the opposite.
    """
    if optional and value is None:
        return None
    if type(value).__name__ == "bool_":  # numpy's
        value = bool(value)
    if not isinstance(value, bool):
        raise error(f"{name}={value!r}: expected True or False" + (" (or None)" if optional else ""))
    return value


def check_names(name: str, values: Any, what: str, *, error: type[T2VError] = T2VError) -> list[str]:
    """``values`` as a list of non-empty strings (repo ids, tags, model names), else ``error`` naming ``name``."""
    try:
        out = list(values)
    except TypeError:
        raise error(f"{name}={values!r}: expected {what} (a list of str)") from None
    bad = [v for v in out if not isinstance(v, str) or not v.strip()]
    if bad:
        raise error(f"{name} holds {bad[0]!r}: expected {what} as non-empty strings")
    return out


def check_real(name: str, value: Any, lo: float, hi: float = math.inf, *, lo_open: bool = False,
               error: type[T2VError] = T2VError) -> float:
    """``value`` as a float if it is a finite real in [lo, hi] ((lo, hi] with ``lo_open``), else ``error``."""
    ok = is_finite_real(value) and (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        span = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}]" if math.isfinite(hi) else \
            (f"above {lo:g}" if lo_open else f"at least {lo:g}")
        raise error(f"{name}={value!r}: expected a finite number {span}")
    return float(value)


def check_path(name: str, value: Any, *, expected: str = "the path of a file", optional: bool = True,
               error: type[T2VError] = T2VError) -> None:
    """``value`` is a ``str`` or an ``os.PathLike`` (or None with ``optional``), else ``error`` naming
    ``name=`` and what was ``expected`` (not Path()'s or os.stat's TypeError)."""
    if not isinstance(value, (str, os.PathLike)) and not (optional and value is None):
        raise error(f"{name}={value!r}: expected {expected}" + (", or None" if optional else ""))


def check_optional_count(name: str, value: Any, lo: int, *, error: type[T2VError] = T2VError) -> int | None:
    """:func:`check_count`, with None allowed (and returned)."""
    if value is None:
        return None
    try:
        return check_count(name, value, lo, error=error)
    except error as exc:
        raise error(f"{exc} (or None)") from None
