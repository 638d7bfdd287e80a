"""The meta-tasks of benchmarks.selection_novel select the candidates they say they do."""

from __future__ import annotations

import pytest
import torch

sq = pytest.importorskip("benchmarks.selection_quality")
from benchmarks.selection_novel import _candidates  # noqa: E402


@pytest.fixture(scope="module")
def zoo():
    if not sq.PACK.is_file():
        pytest.skip("the committed zoo pack is not here")
    return sq.load(sq.PACK)


def test_novel_offers_only_experts_of_other_pools(zoo) -> None:
    keep, exclude, lodo = _candidates(zoo, "novel")
    tasks, experts, pools = zoo["tasks"], zoo["experts"], zoo["pools"]
    assert lodo and bool(keep.all())
    for i, t in enumerate(tasks):
        for j, e in enumerate(experts):
            same_pool = pools[tasks.index(e)] == pools[i]
            assert bool(exclude[i, j]) == same_pool, (t, e)
        assert not any(not exclude[i, j] and e == t for j, e in enumerate(experts))  # never itself
        assert 0 < int((~exclude[i]).sum()) < len(experts)


@pytest.mark.parametrize(("meta", "rows"), [("loo", 12), ("mixed", 24), ("lodo", 36)])
def test_the_other_meta_tasks_exclude_only_the_task_itself(zoo, meta, rows) -> None:
    keep, exclude, _ = _candidates(zoo, meta)
    assert int(keep.sum()) == rows
    for i, t in enumerate(zoo["tasks"]):
        assert [bool(x) for x in exclude[i]] == [e == t for e in zoo["experts"]]


def test_two_stage_generalist_is_the_shortlist_recommend_scores() -> None:
    """The benchmark's rows of `recommend --generalists 1`: stage 1's top K plus the best generalist
    not among them, that shortlist ordered by stage 2, the rest in stage-1 order."""
    nan = float("nan")
    stage1 = torch.tensor([[0.1, 0.2, 0.3, 0.4, nan]])  # expert 4 is not a candidate
    generalist = torch.tensor([[5.0, 0.5, 9.0, 1.0, 0.0]])  # best: 4 (not a candidate), 1 (shortlisted), then 3
    stage2 = torch.tensor([[0.0, 1.0, 5.0, 3.0, 9.0]])  # higher = better
    ranks = sq.two_stage_generalist(stage1, generalist, stage2, 2)[0]
    assert ranks[:4].tolist() == [2.0, 1.0, 3.0, 0.0] and ranks[4].isnan()
    # Without the slot it is the plain two-stage row.
    assert sq.two_stage(stage1, stage2, 2)[0][:4].tolist() == [1.0, 0.0, 2.0, 3.0]


def test_generalist_rows_train_without_the_test_task() -> None:
    """The learned generalist of row i ignores row i's errors (and, under lodo, its pool's)."""
    if not sq.PACK.is_file():
        pytest.skip("the committed zoo pack is not here")
    data = sq.load(sq.PACK)
    keep, exclude, lodo = _candidates(data, "lodo")
    before = sq.learned(data, exclude, lodo=lodo, model2vec=False)["generalist"]
    changed = {**data, "errors": data["errors"].clone()}
    changed["errors"][0] = changed["errors"][0].flip(0)  # scramble task 0's own row
    after = sq.learned(changed, exclude, lodo=lodo, model2vec=False)["generalist"]
    assert torch.equal(before[0], after[0])
    same_pool = [i for i, p in enumerate(data["pools"]) if p == data["pools"][0]]
    other = [i for i in range(len(data["tasks"])) if i not in same_pool]
    assert all(torch.equal(before[i], after[i]) for i in same_pool)
    assert not all(torch.equal(before[i], after[i]) for i in other)


def test_losses_to_names_the_tasks_where_one_method_chooses_worse() -> None:
    from benchmarks.selection_novel import losses_to

    data = {"tasks": ["t0", "t1"], "experts": ["a", "b", "c"],
            "errors": torch.tensor([[0.1, 0.2, 0.4], [0.3, 0.2, 0.1]])}
    ours = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 4.0]])  # ranks: t0 picks b, t1 picks a
    theirs = torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])  # t0 picks a (better), t1 picks c (better)
    keep = torch.tensor([True, True])
    exclude = torch.zeros(2, 3, dtype=torch.bool)
    out = losses_to(data, ours, theirs, keep, exclude)
    assert [(x["task"], x["ours"], x["theirs"], x["in_shortlist"]) for x in out] == \
        [("t0", "b", "a", True), ("t1", "a", "c", False)]
    assert out[0]["points"] == pytest.approx(100.0) and out[1]["points"] == pytest.approx(200.0)
    assert losses_to(data, theirs, theirs, keep, exclude) == []


def test_shortlist_variant_rules_do_what_they_say() -> None:
    """benchmarks.shortlist_variants: its default row is the library's shortlist, lam = 0 is plain
    top K, the adaptive K stays within its bounds, and a neighbour generalist over every training task
    is the library's generalist of those tasks."""
    sv = pytest.importorskip("benchmarks.shortlist_variants")
    from t2v_hub.selection.generalist import generalist_order, generalist_scores

    order, s = [3, 0, 2, 1, 4], torch.tensor([0.20, 0.50, 0.30, 0.10, 0.90])
    D = torch.tensor([[0.0, 1.0, 0.01, 0.02, 1.0], [1.0, 0.0, 1.0, 1.0, 1.0], [0.01, 1.0, 0.0, 0.01, 1.0],
                      [0.02, 1.0, 0.01, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0, 0.0]])
    by = {"generalist": [4, 3, 1, 0, 2]}
    assert sv.RULES["d_sym top 3 + generalist (the default)"](order, by, s, D) == [3, 0, 2, 4]
    assert sv.mmr(3, 0.0)(order, by, s, D) == [3, 0, 2, 4]
    # Experts 0 and 2 lie next to expert 3; a strong diversity weight reaches past them to 1 and 4.
    assert sv.mmr(3, 1.0)(order, by, s, D)[:3] == [3, 1, 4]
    assert sv.ratio(0.1, 2, 6)(order, by, s, D) == [3, 0, 4]  # only 3 within 10% of 0.10: kmin = 2
    assert sv.ratio(10.0, 1, 3)(order, by, s, D) == [3, 0, 2, 4]  # all within, capped at kmax = 3
    data = sq.load(sq.PACK) if sq.PACK.is_file() else None
    if data is None:
        pytest.skip("the committed zoo pack is not here")
    keep, exclude, lodo = _candidates(data, "lodo")
    T = len(data["tasks"])
    nb = sv.neighbour_generalist(data, exclude, lodo, k=T)
    E = data["errors"].clone()
    E[exclude] = float("nan")
    train = [j for j in range(T) if data["pools"][j] != data["pools"][0]]
    ref = generalist_scores(E[train], min_tasks=1)
    assert torch.allclose(nb[0], ref, equal_nan=True, atol=1e-6)
    assert generalist_order(nb[0]) == generalist_order(ref)
