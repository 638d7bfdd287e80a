"""The meta-tasks of benchmarks.selection_novel select the candidates they say they do."""

from __future__ import annotations

import pytest

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
