"""Error matrices from the experts' own evaluation results on the hub.

Two places a model repo records how it scores on a dataset, both read here:

- ``.eval_results/*.yaml`` files (the Hub's current format, parsed with
  ``huggingface_hub.parse_eval_result_entries``): a list of entries
  ``{dataset: {id, task_id}, value, ...}``;
- the card's legacy ``model-index`` (``huggingface_hub.EvalResult``), where a
  result names ``dataset.type`` and a metric ``type``.

A row of the matrix is a dataset id (the id the task embeddings record as their
``dataset_id``), a column a model repo. Values are turned into test *errors*:
``metric="accuracy"`` reads them as accuracies (error = 1 - accuracy),
``metric="error"`` as errors. ``scale="auto"`` reads each file (and each card's
model-index) as percent when any of its values is above 1 (the Hub's leaderboards
mostly store percents), else as fractions — per file, since one repo's results
may come from several tools; pass ``"percent"`` or ``"fraction"`` to say so. In
``model-index`` only metrics whose ``type`` is the chosen one (``accuracy``/``acc``
or ``error``/``error_rate``) count.

Nothing here trusts the server: YAML is read with ``yaml.safe_load`` (no Python
tags), files are size-capped, unreadable files and odd entries are skipped and
reported, and conflicting values for one (dataset, model) cell are refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..constants import TASK2VEC_TAG
from ..errors import HubError, SelectorError
from ..hub.base import Hub, validate_repo_id, validate_repo_path
from .error_matrix import ErrorMatrix

EVAL_RESULTS_DIR = ".eval_results"
MAX_EVAL_FILE_BYTES = 1 << 20  # eval files are a few lines; a bigger one is not ours to parse
METRICS = ("accuracy", "error")
SCALES = ("auto", "fraction", "percent")
_MODEL_INDEX_NAMES = {"accuracy": {"accuracy", "acc", "top1", "top-1"}, "error": {"error", "error_rate", "top1-error"}}


@dataclass
class EvalResultsReport:
    """What was read: the matrix, and what was left out and why (repo, reason)."""

    matrix: ErrorMatrix
    skipped: list[tuple[str, str]] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)  # ".eval_results" / "model-index" -> cells


def _eval_files(files: Iterable[str] | None) -> list[str]:
    return sorted(
        f for f in (files or ())
        if f.startswith(EVAL_RESULTS_DIR + "/") and f.count("/") == 1 and f.endswith((".yaml", ".yml"))
    )


def _number(v: Any) -> float | None:
    if isinstance(v, bool):  # YAML "yes" would otherwise read as 1.0
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _entries_from_file(data: bytes, task_id: str | None) -> list[tuple[str, float]]:
    import yaml
    from huggingface_hub import parse_eval_result_entries

    raw = yaml.safe_load(data.decode("utf-8"))
    if not isinstance(raw, list):
        raise ValueError("expected a YAML list of entries")
    for i, item in enumerate(raw):  # huggingface_hub's parser says only KeyError: 'task_id'
        ds = item.get("dataset") if isinstance(item, dict) else None
        missing = [k for k in ("id", "task_id") if not isinstance(ds, dict) or k not in ds]
        if missing or "value" not in item:
            what = ", ".join([f"dataset.{k}" for k in missing] + ([] if isinstance(item, dict) and "value" in item
                                                                  else ["value"]))
            raise ValueError(f"entry {i} lacks {what} (each entry: dataset: {{id, task_id}}, value)")
    out = []
    for entry in parse_eval_result_entries(raw):
        if task_id is not None and entry.task_id != task_id:
            continue
        value = _number(entry.value)
        if value is None:
            raise ValueError(f"value {entry.value!r} for {entry.dataset_id} is not a number")
        out.append((str(entry.dataset_id), value))
    return out


def _entries_from_model_index(card_data: dict[str, Any] | None, metric: str) -> list[tuple[str, float]]:
    if not card_data or not card_data.get("model-index"):
        return []
    from huggingface_hub.repocard_data import model_index_to_eval_results

    _, results = model_index_to_eval_results(card_data["model-index"])
    out = []
    for r in results:
        value = _number(r.metric_value)
        if value is not None and str(r.metric_type).lower() in _MODEL_INDEX_NAMES[metric] and r.dataset_type:
            out.append((str(r.dataset_type), value))
    return out


def _scaled(entries: list[tuple[str, float]], scale: str) -> list[tuple[str, float]]:
    if scale == "percent" or (scale == "auto" and entries and max(v for _, v in entries) > 1.0):
        return [(d, v / 100.0) for d, v in entries]
    return entries


def read_eval_results(
    hub: Hub,
    *,
    filter: Iterable[str] | None = None,
    experts: Iterable[str] | None = None,
    metric: str = "accuracy",
    scale: str = "auto",
    task_id: str | None = None,
    model_index: bool = True,
) -> EvalResultsReport:
    """The error matrix (datasets x model repos) the hub's repos report about themselves.

    One listing of the repos tagged ``task2vec`` (and all of ``filter``), or of the
    repos in ``experts``; each ``.eval_results/*.yaml`` is fetched at the listed
    revision. ``task_id`` keeps only entries for that task of the benchmark.
    """
    if metric not in METRICS:
        raise SelectorError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if scale not in SCALES:
        raise SelectorError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    wanted = set(experts) if experts is not None else None
    tags = [] if wanted is not None else list(dict.fromkeys([TASK2VEC_TAG, *(filter or [])]))
    cells: dict[tuple[str, str], float] = {}
    skipped: list[tuple[str, str]] = []
    sources = {EVAL_RESULTS_DIR: 0, "model-index": 0}
    repos: list[str] = []
    for listing in hub.list_models(filter=tags):
        repo_id = listing.repo_id
        if wanted is not None and repo_id not in wanted:
            continue
        try:
            validate_repo_id(repo_id)
        except HubError as exc:
            skipped.append((repo_id, str(exc)))
            continue
        found: list[tuple[str, float, str]] = []
        for path in _eval_files(listing.files):
            try:
                validate_repo_path(path)
                data = hub.download(repo_id, path, listing.revision, max_bytes=MAX_EVAL_FILE_BYTES)
                found += [(d, v, EVAL_RESULTS_DIR) for d, v in _scaled(_entries_from_file(data, task_id), scale)]
            except Exception as exc:  # one bad file must not hide the others
                skipped.append((repo_id, f"{path}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"))
        if model_index:
            try:
                mi = _scaled(_entries_from_model_index(listing.card_data, metric), scale)
                found += [(d, v, "model-index") for d, v in mi]
            except Exception as exc:
                skipped.append((repo_id, f"model-index: {type(exc).__name__}: {str(exc)[:200]}"))
        if not found:
            continue
        repos.append(repo_id)
        for dataset, value, source in found:
            key = (dataset, repo_id)
            if key in cells and cells[key] != value:
                raise SelectorError(
                    f"{repo_id} reports two values for {dataset} ({cells[key]} and {value}); "
                    "pass task_id= to choose one task of that benchmark, or fix the repo's results"
                )
            if key not in cells:
                sources[source] += 1
            cells[key] = value
    if not cells:
        raise SelectorError(
            "no evaluation results found on the hub's experts (.eval_results/*.yaml or model-index); "
            "pass an error matrix file (errors=PATH) instead"
        )
    bad = [(k, v) for k, v in cells.items() if not 0.0 <= v <= 1.0]
    if bad:
        (dataset, repo), v = bad[0]
        raise SelectorError(
            f"{repo} reports {v:g} on {dataset}, outside [0, 1] after scaling; set scale= or metric="
        )
    if metric == "accuracy":
        cells = {k: 1.0 - v for k, v in cells.items()}
    datasets = sorted({d for d, _ in cells})
    errors = torch.full((len(datasets), len(repos)), float("nan"))
    for (d, r), v in cells.items():
        errors[datasets.index(d), repos.index(r)] = v
    return EvalResultsReport(ErrorMatrix(datasets, repos, errors), skipped, sources)


def eval_results_yaml(results: dict[str, float], *, task_id: str = "default", source_url: str | None = None,
                      notes: str | None = None) -> bytes:
    """An ``.eval_results/*.yaml`` file for ``{dataset_id: value}`` (written with huggingface_hub's schema)."""
    import yaml
    from huggingface_hub import EvalResultEntry, eval_result_entries_to_yaml

    entries = [
        EvalResultEntry(dataset_id=d, task_id=task_id, value=float(v), source_url=source_url,
                        source_name="t2v-hub" if source_url else None, notes=notes)
        for d, v in sorted(results.items())
    ]
    return yaml.safe_dump(eval_result_entries_to_yaml(entries), sort_keys=False).encode()


__all__ = ["EVAL_RESULTS_DIR", "EvalResultsReport", "eval_results_yaml", "read_eval_results"]
