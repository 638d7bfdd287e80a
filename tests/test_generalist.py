"""The generalist slot of the two-stage shortlist: scores against a closed form, the selector's
record of them, and `recommend` with a selector end to end (hub, index, CLI, bad inputs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from test_two_stage import make_zoo

import t2v_hub
from t2v_hub.cli.main import main
from t2v_hub.errors import RecommendError, SelectorError
from t2v_hub.hub import list_experts
from t2v_hub.selection.generalist import generalist_order, generalist_scores, shortlist_with_generalists
from t2v_hub.selection.index import build_index
from t2v_hub.selection.model2vec import Model2Vec, SelectorConfig, compat_of
from t2v_hub.selection.training import train_model2vec

nan = float("nan")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three experts, two with timm weights (test_two_stage's)."""
    return make_zoo(tmp_path_factory.mktemp("generalist"))


def test_generalist_scores_are_mean_relative_error_increases() -> None:
    errors = torch.tensor([[0.10, 0.20, nan],
                           [0.40, 0.20, 0.30],
                           [0.05, nan, 0.10]])
    # Per task best 0.10, 0.20, 0.05; relative increases (err - best) / best over each expert's known tasks.
    want = [(0 + 1.0 + 0) / 3, (1.0 + 0) / 2, (0.5 + 1.0) / 2]
    assert generalist_scores(errors).tolist() == pytest.approx(want)
    assert generalist_order(generalist_scores(errors)) == [0, 1, 2]
    # One known task is no evidence: no score; with min_tasks=1 it has one.
    one = torch.tensor([[0.1, 0.2], [0.3, nan]])
    assert generalist_scores(one)[1].isnan() and generalist_scores(one, min_tasks=1)[1] == pytest.approx(1.0)
    assert generalist_order(generalist_scores(one)) == [0]
    # A task solved perfectly (best error 0) divides by the floor, not by zero.
    perfect = generalist_scores(torch.tensor([[0.0, 0.01], [0.0, 0.02]]))
    assert perfect.isfinite().all() and perfect[0] == 0 and perfect[1] == pytest.approx(15.0)


def test_shortlist_with_generalists_skips_what_stage1_has_or_cannot_rank() -> None:
    stage1 = [4, 2, 0, 1]  # stage-1 order of the experts that can be ranked (3 is not among them)
    assert shortlist_with_generalists(stage1, [2, 3, 1, 0], 2, 1) == [4, 2, 1]
    assert shortlist_with_generalists(stage1, [2, 3, 1, 0], 2, 2) == [4, 2, 1, 0]
    assert shortlist_with_generalists(stage1, [4, 2], 2, 1) == [4, 2]  # nothing left to add
    assert shortlist_with_generalists(stage1, [1], 3, 0) == [4, 2, 0]


def _selector(zoo: dict[str, Any], generalist_first: list[str], *, bias: str = "none") -> Model2Vec:
    """A selector for the zoo's three experts whose error matrix makes ``generalist_first`` the
    generalists' order (two tasks, so every expert is backed by two)."""
    experts, _ = list_experts(zoo["hub"])
    ids = [ex.repo_id for ex in experts]
    F = torch.stack([ex.embedding.vector for ex in experts])
    err_of = {r: e for r, e in zip(generalist_first, (0.10, 0.11, 0.50), strict=True)}
    errors = torch.tensor([[err_of[r] for r in ids]] * 2)
    return train_model2vec(F[:2] * 1.1, F, errors, torch.full((F.shape[1],), 1e-3), SelectorConfig(bias=bias, epochs=3),
                           expert_ids=ids, compat=compat_of(experts[0].embedding))


def test_selector_records_generalist_scores(zoo: dict[str, Any], tmp_path: Path) -> None:
    order = ["org/expert-1", "org/expert-0", "org/expert-2"]
    sel = _selector(zoo, order)
    assert sel.generalist_ids() == order
    again = Model2Vec.load(sel.save(tmp_path / "s.safetensors"))
    assert torch.equal(again.generalist, sel.generalist) and again.generalist_ids() == order
    old = Model2Vec.from_bytes(Model2Vec(**{**sel.__dict__, "generalist": None}).to_bytes())
    assert old.generalist is None and old.generalist_ids() == []
    bad = Model2Vec(**{**sel.__dict__, "generalist": torch.zeros(5)}).to_bytes()
    with pytest.raises(SelectorError, match="tensor sizes"):
        Model2Vec.from_bytes(bad)


def _stage1(zoo: dict[str, Any], sel: Model2Vec) -> list[str]:
    recs = t2v_hub.recommend(str(zoo["data"]), hub=zoo["hub"], top_k=3, selector=sel).recommendations
    return [r.repo_id for r in recs]


def test_recommend_shortlist_takes_the_generalist_from_below(zoo: dict[str, Any], monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("T2V_HUB_CACHE", str(zoo["root"] / "cache"))
    probe_sel = _selector(zoo, ["org/expert-0", "org/expert-1", "org/expert-2"])
    order = _stage1(zoo, probe_sel)
    # The generalist: an expert with weights that stage 1 does not put first; the stage-1 winner is
    # a better generalist still, so the slot must skip it.
    weighted = [r for r in order[1:] if r != "org/expert-2"][-1]
    sel = _selector(zoo, [order[0], weighted, next(r for r in order if r not in (order[0], weighted))])
    assert _stage1(zoo, sel) == order  # bias "none" with equal tasks: stage 1 does not depend on the errors
    result = t2v_hub.recommend(str(zoo["data"]), hub=zoo["hub"], top_k=3, selector=sel, rerank="logme",
                               shortlist=1)
    recs = result.recommendations
    assert result.cost["generalists"] == 1 and [r.rank for r in recs] == [1, 2, 3]
    by_id = {r.repo_id: r for r in recs}
    gen = by_id[weighted]
    assert gen.shortlisted_by == "generalist" and gen.stage1_rank == order.index(weighted) + 1
    assert gen.ordered_by == "logme" and gen.transfer_score is not None
    assert by_id[order[0]].shortlisted_by == "task2vec"
    assert [r.shortlisted_by for r in recs].count(None) == 1
    # Both shortlisted experts hold the first two ranks, ordered by LogME where both were scored.
    top2 = [r for r in recs if r.shortlisted_by]
    assert sorted(r.rank for r in top2) == [1, 2]
    scored = sorted((r for r in top2 if r.transfer_score is not None), key=lambda r: r.rank)
    assert all(a.transfer_score >= b.transfer_score for a, b in zip(scored, scored[1:], strict=False))
    # top_k=1: stage 1 returns one expert, the generalist comes from below it all the same.
    experts, _ = list_experts(zoo["hub"])
    t0 = t2v_hub.Task2VecEmbedding(sel.trivial, dict(experts[0].embedding.metadata))
    idx = build_index(experts, tmp_path / "idx", trivial=t0)
    for kw in ({}, {"index": idx}):
        one = t2v_hub.recommend(str(zoo["data"]), hub=zoo["hub"], top_k=1, selector=sel, rerank="logme",
                                shortlist=1, **kw)
        assert one.cost["models_scored"] == 2 and one.cost["generalists"] == 1
        assert [r.repo_id for r in one.recommendations] == [recs[0].repo_id]
    # A generalist without weights cannot be scored: it keeps its stage-1 place, a note says so, and the
    # next generalist takes the slot.
    if order[0] != "org/expert-2":
        rest = next(r for r in order if r not in (order[0], "org/expert-2"))
        res = t2v_hub.recommend(str(zoo["data"]), hub=zoo["hub"], top_k=3, rerank="logme", shortlist=1,
                                selector=_selector(zoo, [order[0], "org/expert-2", rest]))
        got = {r.repo_id: r for r in res.recommendations}
        back = got["org/expert-2"]
        assert back.rank == back.stage1_rank == 3 and back.transfer_score is None and back.shortlisted_by is None
        assert any("org/expert-2 was passed over for a generalist slot" in n for n in res.notes)
        assert got[rest].shortlisted_by == "generalist" and res.cost["generalists"] == 1
        assert res.cost["models_scored"] == 2
    # generalists=0 is the TASK2VEC shortlist alone; the index gives the same two-stage ranking.
    plain = t2v_hub.recommend(str(zoo["data"]), hub=zoo["hub"], top_k=3, selector=sel, rerank="logme",
                              shortlist=1, generalists=0)
    assert plain.cost["generalists"] == 0 and all(r.shortlisted_by != "generalist" for r in plain.recommendations)
    via_index = t2v_hub.recommend(str(zoo["data"]), hub=zoo["hub"], index=idx, top_k=3, selector=sel,
                                  rerank="logme", shortlist=1).recommendations
    assert [(r.repo_id, r.shortlisted_by, r.stage1_rank) for r in via_index] == \
        [(r.repo_id, r.shortlisted_by, r.stage1_rank) for r in recs]


def test_generalists_bad_inputs_and_old_selectors(zoo: dict[str, Any], monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setenv("T2V_HUB_CACHE", str(zoo["root"] / "cache"))
    sel = _selector(zoo, ["org/expert-0", "org/expert-1", "org/expert-2"])
    old = Model2Vec(**{**sel.__dict__, "generalist": None})
    data, hub = str(zoo["data"]), zoo["hub"]
    with pytest.raises(RecommendError, match="generalists=1 adds experts to stage 2's shortlist"):
        t2v_hub.recommend(data, hub=hub, selector=sel, generalists=1)
    with pytest.raises(RecommendError, match="publish no evaluation results on 2\\+ datasets; pass selector="):
        t2v_hub.recommend(data, hub=hub, rerank="logme", generalists=1)  # no selector, no .eval_results
    with pytest.raises(RecommendError, match="the selector records no generalist scores"):
        t2v_hub.recommend(data, hub=hub, selector=old, rerank="logme", generalists=2)
    for bad in (-1, 1.5, "1", True):
        with pytest.raises(RecommendError, match="generalists"):
            t2v_hub.recommend(data, hub=hub, selector=sel, rerank="logme", generalists=bad)
    # An old selector by default: no generalist slot, and a note that says how to get one.
    res = t2v_hub.recommend(data, hub=hub, top_k=3, selector=old, rerank="logme", shortlist=1)
    assert res.cost["generalists"] == 0 and any("no generalist scores" in n for n in res.notes)
    # Without a selector nothing changes and nothing is said about generalists.
    res = t2v_hub.recommend(data, hub=hub, top_k=3, rerank="logme", shortlist=1)
    assert res.cost["generalists"] == 0 and not any("generalist" in n for n in res.notes)
    # CLI: the flag needs --rerank, and a selector that records generalists; the table says who is one.
    path = sel.save(tmp_path / "sel.safetensors")
    base = ["recommend", "--dataset", data, "--hub", str(hub.root), "--top-k", "3", "--selector", str(path)]
    assert main([*base, "--generalists", "1"]) == 2
    assert "--generalists sets stage 2: add --rerank logme" in capsys.readouterr().err
    assert main([*base, "--rerank", "logme", "--generalists", "-1"]) == 2
    capsys.readouterr()
    old_path = old.save(tmp_path / "old.safetensors")
    assert main([*base[:-1], str(old_path), "--rerank", "logme", "--generalists", "1"]) == 2
    err = capsys.readouterr().err
    assert "--generalists 1: the selector records no generalist scores" in err and "Traceback" not in err
    assert main([*base, "--rerank", "logme", "--shortlist", "1", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cost"]["generalists"] == 1
    assert [r["shortlisted_by"] for r in out["recommendations"]].count("generalist") == 1
    assert main([*base, "--rerank", "logme", "--shortlist", "1"]) == 0
    cap = capsys.readouterr()
    assert "shortlisted as" in cap.out.splitlines()[0] and "generalist" in cap.out
    assert "of 1 + 1 generalist(s) shortlisted expert(s) scored" in cap.err


def test_without_a_selector_generalists_come_from_the_hubs_eval_results(tmp_path, monkeypatch) -> None:
    """The demo hub's experts publish `.eval_results` on the zoo's 36 datasets: generalists=1 reads them
    (and only when asked: by default no expert's results are read)."""
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    shutil.copytree(root / "examples" / "zoo", tmp_path / "zoo")
    monkeypatch.setenv("T2V_HUB_CACHE", str(tmp_path / "cache"))
    from t2v_hub.selection.eval_results import read_eval_results

    em = read_eval_results(t2v_hub.hub.get_hub(str(tmp_path / "zoo"))).matrix
    want = [em.expert_ids[j] for j in generalist_order(generalist_scores(em.errors))]
    data = str(root / "examples" / "data" / "fashion_tops4")
    res = t2v_hub.recommend(data, hub=str(tmp_path / "zoo"), rerank="logme", shortlist=1, generalists=1,
                            max_samples=40, top_k=3)
    assert any(n.startswith("generalists from the experts' own evaluation results on 36 dataset(s): "
                            + ", ".join(want[:3])) for n in res.notes)
    # The demo holds weights for four experts only: the best generalists without them are passed over.
    first = res.recommendations[0].repo_id
    with_weights = [r for r in want if r != first and (tmp_path / "zoo" / r / "model.safetensors").is_file()]
    tried = [r for r in want if r != first][:3]
    got = [r.repo_id for r in res.recommendations if r.shortlisted_by == "generalist"]
    assert got == [r for r in tried if r in with_weights][:1]
    passed_over = tried[: tried.index(got[0])] if got else tried
    assert passed_over and all(any(f"{r} was passed over for a generalist slot" in n for n in res.notes)
                               for r in passed_over)
