"""Error matrices: tasks (rows) x experts (columns) test errors, and the embeddings for them.

An *error matrix* holds, for each task and expert, the test error of a classifier
trained for the task on top of the expert (NaN = not measured). It is read from
CSV (first column the task ids, header the expert repo ids) or JSON
(``{"tasks": [...], "experts": [...], "errors": [[...]]}`` or
``{task: {expert: error}}``); :mod:`t2v_hub.selection.eval_results` builds one from
the experts' ``.eval_results`` / model-index entries on a hub.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import SelectorError


@dataclass(frozen=True)
class ErrorMatrix:
    task_ids: list[str]
    expert_ids: list[str]
    errors: torch.Tensor  # (T, E) float32, NaN = unknown

    @property
    def missing(self) -> int:
        return int((~torch.isfinite(self.errors)).sum())

    def subset(self, task_ids: list[str], expert_ids: list[str]) -> ErrorMatrix:
        ti = [self.task_ids.index(t) for t in task_ids]
        ei = [self.expert_ids.index(e) for e in expert_ids]
        return ErrorMatrix(list(task_ids), list(expert_ids), self.errors[ti][:, ei])


def _cell(v: Any) -> float:
    if v is None:
        return math.nan
    if isinstance(v, str):
        v = v.strip()
        if v.lower() in ("", "nan", "na", "n/a", "none", "null", "-"):
            return math.nan
    try:
        x = float(v)
    except (TypeError, ValueError) as exc:
        raise SelectorError(f"error matrix cell {v!r} is not a number; use a number or leave it empty") from exc
    return x if math.isfinite(x) else math.nan


def _dedupe(ids: list[str], what: str) -> None:
    seen = {i for i in ids if ids.count(i) > 1}
    if seen:
        raise SelectorError(f"duplicate {what} id(s) in the error matrix: {', '.join(sorted(seen)[:5])}")


def load_error_matrix(path: str | os.PathLike[str]) -> ErrorMatrix:
    """Read an error matrix from CSV or JSON (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise SelectorError(f"error matrix {str(p)!r} not found")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(p.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise SelectorError(f"{p} is not valid JSON ({type(exc).__name__}); fix or regenerate the file") from exc
        return _checked(_from_json(data, str(p)), str(p))
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:  # -sig: a spreadsheet's byte-order mark is no id
            rows = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SelectorError(f"{p} is not a UTF-8 CSV file ({type(exc).__name__}); pass the error matrix as CSV "
                            "(a header of expert ids, one row per task) or JSON") from exc
    if len(rows) < 2 or len(rows[0]) < 2:
        raise SelectorError(f"{p}: expected a header of expert ids and one row per task (task id first)")
    experts = [c.strip() for c in rows[0][1:]]
    tasks, values = [], []
    for r in rows[1:]:
        if len(r) != len(rows[0]):
            raise SelectorError(f"{p}: row {r[0]!r} has {len(r) - 1} values for {len(experts)} experts")
        tasks.append(r[0].strip())
        values.append([_cell(c) for c in r[1:]])
    _dedupe(tasks, "task")
    _dedupe(experts, "expert")
    return _checked(ErrorMatrix(tasks, experts, torch.tensor(values, dtype=torch.float32)), str(p))


def _checked(em: ErrorMatrix, source: str) -> ErrorMatrix:
    """Errors are fractions in [0, 1]: a negative, a percent or 1e30 would train a selector on nonsense."""
    e = em.errors
    bad = (torch.isfinite(e) & ((e < 0) | (e > 1))).nonzero()
    if bad.numel():
        i, j = (int(x) for x in bad[0])
        raise SelectorError(
            f"{source}: error {float(e[i, j]):g} for task {em.task_ids[i]!r} and expert {em.expert_ids[j]!r} is "
            "outside [0, 1]; errors are fractions (divide percentages by 100)"
        )
    return em


def _from_json(data: Any, source: str) -> ErrorMatrix:
    if isinstance(data, dict) and {"tasks", "experts", "errors"} <= set(data):
        tasks, experts = [str(t) for t in data["tasks"]], [str(e) for e in data["experts"]]
        vals = [[_cell(v) for v in row] for row in data["errors"]]
        if len(vals) != len(tasks) or any(len(r) != len(experts) for r in vals):
            raise SelectorError(f"{source}: 'errors' must be {len(tasks)} rows of {len(experts)} values")
    elif isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
        tasks = [str(t) for t in data]
        experts = list(dict.fromkeys(str(e) for row in data.values() for e in row))
        vals = [[_cell(row.get(e)) for e in experts] for row in data.values()]
    else:
        raise SelectorError(f"{source}: expected {{'tasks','experts','errors'}} or {{task: {{expert: error}}}}")
    _dedupe(tasks, "task")
    _dedupe(experts, "expert")
    return ErrorMatrix(tasks, experts, torch.tensor(vals, dtype=torch.float32).reshape(len(tasks), len(experts)))


# -- embeddings for the rows and columns ------------------------------------------------------


def load_embedding_source(spec: str, probe: str | None = None) -> dict[str, Any]:
    """Embeddings by id from a folder of ``.safetensors`` files or a hub.

    Folder: each file is known by its stem, its stem with ``--`` read as ``/``
    (``org--name.safetensors`` for repo ``org/name``) and its metadata
    ``dataset_id`` / ``repo_id``. Hub (``hf``, URL, or a local hub folder): each
    expert by repo id and by the dataset it was trained on. Where experts were
    embedded with several probes, ``probe`` (default: the most common) picks one.
    """
    from ..embedding import Task2VecEmbedding

    p = Path(spec)
    out: dict[str, Any] = {}
    if p.is_dir() and any(p.glob("*.safetensors")):
        for f in sorted(p.glob("*.safetensors")):
            e = Task2VecEmbedding.load(f)
            for key in (e.metadata.get("repo_id"), e.metadata.get("dataset_id"), f.stem.replace("--", "/"), f.stem):
                if key:
                    out[key] = e
        return out
    from ..hub import get_hub, list_experts
    from .recommend import choose_probe

    experts, _ = list_experts(get_hub(spec))
    if not experts:
        raise SelectorError(f"no embeddings found in {spec!r} (a folder of .safetensors files or a hub)")
    plan = choose_probe(experts, probe)
    for ex in experts:
        if ex.embedding.probe == plan.probe and ex.embedding.method == plan.method:
            if ex.task:
                out.setdefault(ex.task, ex.embedding)
            out[ex.repo_id] = ex.embedding
    return out


__all__ = ["ErrorMatrix", "load_embedding_source", "load_error_matrix"]
