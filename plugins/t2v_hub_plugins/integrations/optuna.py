"""Optuna integration: start a hyper-parameter search from the backbones TASK2VEC ranks best.

``enqueue_backbones(study, "backbone", rank_backbones(dataset, hub=...), top_k=3)``
queues one trial per recommended backbone, best first, so the search evaluates
them before its sampler explores. The objective then reads the choice with
``trial.suggest_categorical("backbone", names)``; ``names`` must contain every
enqueued name (``backbone_choices`` gives them), otherwise Optuna rejects the
enqueued value.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any


def enqueue_backbones(study: Any, param_name: str, recommendations: Sequence[Any], top_k: int | None = None) -> list[str]:
    """``study.enqueue_trial({param_name: rec.name})`` for the first ``top_k`` recommendations.

    Returns the enqueued names. ``recommendations`` are in rank order (as
    ``rank_backbones`` returns them); ``top_k=None`` enqueues all of them.
    """
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1):
        raise ValueError(f"top_k={top_k!r}: expected a whole number of at least 1, or None for all")
    recs = _as_list(recommendations)[: top_k if top_k is not None else None]
    names = []
    for rec in recs:
        name = _name(rec)
        # skip_if_exists: re-running a script on a persistent study does not queue duplicates.
        study.enqueue_trial({param_name: name}, skip_if_exists=True)
        names.append(name)
    return names


def backbone_choices(recommendations: Sequence[Any], extra: Sequence[str] = ()) -> list[str]:
    """Choices for ``suggest_categorical``: every recommended name (in rank order), then ``extra``."""
    return list(dict.fromkeys([_name(r) for r in _as_list(recommendations)] + _as_list(extra)))


def _as_list(items: Any) -> list[Any]:
    # One name is one backbone, not its characters ("resnet50" -> ["r", "e", ...]).
    return [items] if isinstance(items, (str, bytes)) else list(items)


def _name(rec: Any) -> str:
    name = rec.name if hasattr(rec, "name") else rec
    if not isinstance(name, str) or not name:
        raise ValueError(f"recommendation {rec!r}: expected a Recommendation or a model name (str)")
    return name


class OptunaIntegration:
    """Registered as ``optuna`` in the ``t2v_hub.integrations`` entry-point group."""

    name = "optuna"
    description = "queue the best-ranked backbones as the first trials of an Optuna study"

    enqueue_backbones = staticmethod(enqueue_backbones)
    backbone_choices = staticmethod(backbone_choices)

    @staticmethod
    def available() -> bool:
        try:
            import optuna  # noqa: F401
        except ImportError:
            return False
        return True
