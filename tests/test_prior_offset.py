"""The static prior in MODEL2VEC's offsets: clusters against a naive average linkage, the weight's
cross-validation on cases where the answer is known, and the selector it trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from t2v_hub.errors import SelectorError
from t2v_hub.selection.distances import cdist
from t2v_hub.selection.generalist import generalist_scores
from t2v_hub.selection.model2vec import Model2Vec, SelectorConfig
from t2v_hub.selection.prior_offset import PRIOR_GRID, centred, chosen_error_sum, cv_prior_weight, task_groups
from t2v_hub.selection.training import train_model2vec


def naive_average_linkage(D: list[list[float]], k: int) -> list[list[int]]:
    """The definition: merge the two groups of lowest mean pairwise distance, recomputed from scratch."""
    groups = [[i] for i in range(len(D))]
    while len(groups) > k:
        best = None
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                d = sum(D[i][j] for i in groups[a] for j in groups[b]) / (len(groups[a]) * len(groups[b]))
                if best is None or d < best[0] - 1e-12:
                    best = (d, a, b)
        _, a, b = best
        groups[a] = groups[a] + groups.pop(b)
    return sorted(sorted(g) for g in groups)


def clustered(T: int, d: int = 24, k: int = 3, seed: int = 0, spread: float = 0.3) -> tuple[torch.Tensor, list[int]]:
    g = torch.Generator().manual_seed(seed)
    centres = 2.0 * torch.randn(k, d, generator=g)
    which = [i % k for i in range(T)]
    X = torch.exp(centres[which] + spread * torch.randn(T, d, generator=g))
    return X, which


@pytest.mark.parametrize(("T", "k", "spread"), [(9, 3, 0.3), (14, 4, 1.5), (7, 2, 3.0), (5, 5, 1.0)])
def test_task_groups_is_average_linkage(T: int, k: int, spread: float) -> None:
    X, _ = clustered(T, seed=T, spread=spread)
    want = naive_average_linkage(cdist(X, X).double().tolist(), k)
    assert sorted(task_groups(X, k)) == want


def test_task_groups_recovers_planted_domains() -> None:
    X, which = clustered(12, k=3, spread=0.2)
    got = sorted(task_groups(X, 3))
    assert got == sorted(sorted(i for i in range(12) if which[i] == c) for c in range(3))


def test_centred_leaves_unknown_experts_neutral() -> None:
    g = torch.tensor([0.1, float("nan"), 0.5, 0.3])
    assert torch.allclose(centred(g), torch.tensor([-0.2, 0.0, 0.2, 0.0]))
    assert torch.equal(centred(torch.full((3,), float("nan"))), torch.zeros(3))


def test_chosen_error_sum_ignores_unknown_cells() -> None:
    errors = torch.tensor([[0.3, float("nan"), 0.1], [0.2, 0.4, float("nan")]])
    scores = torch.tensor([[1.0, 0.0, 2.0], [0.5, 0.1, -9.0]])  # the lowest score of each row is an unknown cell
    assert chosen_error_sum(errors, scores) == pytest.approx(0.3 + 0.4)


def _two_domain_case(prior_matters: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tasks in 3 domains, 4 experts. Scores: d-like noise. Errors: either one expert is best on every
    task (the prior is the truth) or each task's best expert is its lowest score (the prior is noise)."""
    X, which = clustered(12, k=3, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    scores = torch.rand(12, 4, generator=g)
    if prior_matters:
        errors = 0.3 + 0.05 * torch.rand(12, 4, generator=g)
        errors[:, 2] = 0.05  # expert 2 is best everywhere; the scores know nothing of it
    else:
        errors = 0.1 + 0.5 * scores  # the scores are the truth
        errors[:, 2] += 0.02 * torch.tensor([1.0 if w == 0 else -0.2 for w in which])  # a weak, misleading prior
    return X, scores, errors


def test_cv_weight_is_large_when_the_prior_is_the_truth_and_zero_when_it_is_noise() -> None:
    X, scores, errors = _two_domain_case(prior_matters=True)
    beta, record = cv_prior_weight(X, errors, lambda train, held: scores[held], folds=3)
    assert beta > 0 and record["folds"] == 3 and record["group_sizes"] == [4, 4, 4]
    # What was chosen is the grid's best on the held-out groups, recomputed here.
    groups = task_groups(X, 3)

    def total(b: float) -> float:
        out = 0.0
        for held in groups:
            train = [i for i in range(12) if i not in held]
            out += chosen_error_sum(errors[held], scores[held] + b * centred(generalist_scores(errors[train]))[None, :])
        return out

    best = min(PRIOR_GRID, key=lambda b: (round(total(b), 9), b))
    assert beta == best and record["mean_chosen_error"][str(best)] == pytest.approx(total(best) / 12, abs=1e-6)
    X, scores, errors = _two_domain_case(prior_matters=False)
    assert cv_prior_weight(X, errors, lambda train, held: scores[held], folds=3)[0] == 0.0


def test_too_few_tasks_per_group_keeps_the_prior_off() -> None:
    X, scores, errors = _two_domain_case(prior_matters=True)
    beta, record = cv_prior_weight(X[:3], errors[:3], lambda train, held: scores[held], folds=3)
    assert beta == 0.0 and "skipped" in record


def synthetic_selector_inputs(seed: int = 0) -> tuple[torch.Tensor, ...]:
    X, which = clustered(12, k=3, seed=seed)
    g = torch.Generator().manual_seed(seed + 7)
    F = X[[0, 1, 2, 4]] * torch.exp(0.1 * torch.randn(4, X.shape[1], generator=g))
    t0 = X.mean(0)
    errors = 0.2 + 0.3 * cdist(F, X).T + 0.01 * torch.rand(12, 4, generator=g)
    errors[:, 3] -= 0.15  # a generalist
    return X, F, t0, errors


@pytest.mark.parametrize("bias", ["filter", "none"])
def test_selector_offset_is_the_plain_one_plus_the_weighted_prior(bias: str, tmp_path: Path) -> None:
    X, F, t0, errors = synthetic_selector_inputs()
    kw = {"bias": bias, "epochs": 10}
    plain = train_model2vec(X, F, errors, t0, SelectorConfig(**kw, prior="none"))
    sel = train_model2vec(X, F, errors, t0, SelectorConfig(**kw, prior="cv", prior_folds=3))
    beta = sel.info["prior_weight"]
    assert beta in PRIOR_GRID and sel.info["prior_cv"]["folds"] == 3 and "prior_weight" not in plain.info
    assert torch.allclose(sel.offset, plain.offset + beta * centred(generalist_scores(errors)), atol=1e-6)
    assert sel.log_gamma == plain.log_gamma  # the prior moves the offsets only
    # The weight is the CV's over selectors retrained without each cluster, recomputed here.
    groups = task_groups(X, 3)

    def held_scores(held: list[int]) -> torch.Tensor:
        train = [i for i in range(12) if i not in held]
        inner = train_model2vec(X[train], F, errors[train], t0, SelectorConfig(**kw, prior="none"))
        return inner.scores(X[held], inner.expert_ids, F)

    parts = [(held, held_scores(held)) for held in groups]

    def total(b: float) -> float:
        return sum(chosen_error_sum(errors[h], s + b * centred(generalist_scores(errors[[i for i in range(12) if i not in h]]))[None, :])
                   for h, s in parts)

    assert beta == min(PRIOR_GRID, key=lambda b: (round(total(b), 9), b))
    sel.save(tmp_path / "s.safetensors")
    back = Model2Vec.load(tmp_path / "s.safetensors")
    assert back.config.prior == "cv" and torch.equal(back.offset, sel.offset)


def test_a_selector_saved_before_the_prior_reads_as_none() -> None:
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    X, F, t0, errors = synthetic_selector_inputs(seed=2)
    data = train_model2vec(X, F, errors, t0, SelectorConfig(bias="filter", epochs=2, prior="none")).to_bytes()
    n = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8 : 8 + n])["__metadata__"]
    config = json.loads(meta["config"])
    del config["prior"], config["prior_folds"]
    old = st_save(st_load(data), metadata={**meta, "config": json.dumps(config)})
    assert Model2Vec.from_bytes(old).config.prior == "none"


def test_config_names_bad_prior_settings() -> None:
    with pytest.raises(SelectorError, match="prior must be one of cv, none"):
        SelectorConfig(prior="static")
    with pytest.raises(SelectorError, match="prior_folds=1: expected a whole number of at least 2"):
        SelectorConfig(prior_folds=1)


def test_a_layer_selector_with_a_prior_says_when_an_expert_was_unseen() -> None:
    from dataclasses import replace

    X, F, t0, errors = synthetic_selector_inputs(seed=4)
    layers = torch.arange(X.shape[1]) % 3
    sel = train_model2vec(X, F, errors, t0, SelectorConfig(bias="layer", layer_epochs=5, prior="none"), layers=layers)
    ids = [*sel.expert_ids[:3], "org/new"]
    assert sel.apply(ids, F)[3] == []  # no per-expert parameter: nothing to miss
    with_prior = replace(sel, offset=torch.tensor([0.1, -0.1, 0.0, 0.0]))
    _, offset, seen, notes = with_prior.apply(ids, F)
    assert notes and "org/new" in notes[0] and offset[3] == 0 and not bool(seen[3])
