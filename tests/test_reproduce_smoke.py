"""End-to-end smoke run of the reproduction pipeline (``python -m benchmarks.reproduce --config tiny``).

3 tasks from scikit-learn's 8x8 digits, 2 fine-tuned experts
plus the generic model, timm's tiny ``test_efficientnet`` at 32 px: checks the
structure of the results and that every metric is finite and in its valid range.
Timings are not checked.
"""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, object]:
    from benchmarks.reproduce import run

    root = tmp_path_factory.mktemp("zoo")
    mp = pytest.MonkeyPatch()
    mp.setenv("T2V_HUB_CACHE", str(root / "t2v_cache"))
    try:
        result = run("tiny", out=root / "out", results_dir=root / "results", demo=False)
    finally:
        mp.undo()
    return result, root


def _in(v: float | None, lo: float, hi: float) -> bool:
    return v is not None and math.isfinite(v) and lo - 1e-9 <= v <= hi + 1e-9


def test_structure(tiny_result) -> None:
    result, root = tiny_result
    assert set(result["meta_tasks"]) == {"pool_loo", "mixed"}
    assert len(result["tasks"]) == 3
    assert list(result["experts"])[0] == "generic_imagenet" and len(result["experts"]) == 3
    em = result["error_matrix"]
    assert len(em["errors"]) == 3 and all(len(r) == 3 for r in em["errors"])
    saved = json.loads((root / "results" / "reproduce_tiny.json").read_text())
    assert saved["meta_tasks"].keys() == result["meta_tasks"].keys()
    for name in ("reproduce_tiny_alpha.png", "reproduce_tiny_methods.png"):
        assert (root / "results" / name).stat().st_size > 1000


def test_metrics_are_valid(tiny_result) -> None:
    result, _ = tiny_result
    assert all(_in(e, 0, 1) for row in result["error_matrix"]["errors"] for e in row)
    expected = {"chance", "generic_imagenet", "static_best_on_other_tasks", "logme", "oracle",
                "d_sym[montecarlo]", "d_asym[montecarlo]", "model2vec[montecarlo]",
                "d_sym[variational]", "d_asym[variational]", "model2vec[variational]"}
    for meta in result["meta_tasks"].values():
        assert expected <= set(meta["methods"])
        for name, m in meta["methods"].items():
            assert _in(m["top1"], 0, 1), (name, m)
            assert _in(m["mean_chosen_error"], 0, 1) and _in(m["mean_best_error"], 0, 1)
            if name != "generic_imagenet":  # the generic model is not a candidate: it may beat the best one
                assert m["relative_error_increase"] is None or m["relative_error_increase"] >= -1e-9
            tau = m["weighted_tau"]
            assert tau is None or _in(tau, -1, 1)
        assert meta["methods"]["oracle"]["top1"] == 1.0
        assert meta["methods"]["oracle"]["relative_error_increase"] == 0.0
        for sweep in meta["alpha_sweep"].values():
            assert set(sweep) == {"0.0", "0.15", "0.5"}
        assert all(len(c) == len(meta["tasks"]) for c in meta["choices"].values())
        # the expert trained on a task is never chosen for it
        for name, ch in meta["choices"].items():
            for t, j in zip(meta["tasks"], ch, strict=True):
                assert meta["experts"][j] != t, name


def test_embeddings_and_costs(tiny_result) -> None:
    result, _ = tiny_result
    for method, per_task in result["embeddings"].items():
        assert method in ("montecarlo", "variational")
        for v in per_task.values():
            assert math.isfinite(v["norm"]) and v["norm"] > 0 and v["num_samples"] > 0
    for method, noise in result["estimator_noise"].items():
        assert noise["same_task_other_seed_mean"] >= 0 and noise["between_tasks_mean"] >= 0, method
    costs = result["cost_per_query"]
    assert costs["logme"]["networks_run"] == 2 and costs["task2vec[montecarlo]"]["networks_run"] == 1
    assert all(math.isfinite(c["seconds_mean"]) and c["seconds_mean"] >= 0 for c in costs.values())


def test_rerun_is_cached(tiny_result) -> None:
    from benchmarks.reproduce import run

    _, root = tiny_result
    again = run("tiny", out=root / "out", results_dir=None, demo=False)
    assert again["computed_this_run"] == {}
