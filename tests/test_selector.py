"""MODEL2VEC: soft labels, training on synthetic data with a known truth, the artifact, metrics, CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from t2v_hub.cli.main import main
from t2v_hub.embedding import Task2VecEmbedding
from t2v_hub.errors import SelectorError
from t2v_hub.selection.distances import cdist_asym
from t2v_hub.selection.error_matrix import load_error_matrix
from t2v_hub.selection.metrics import (
    chance_baseline,
    evaluate_selection,
    loo_mean_error_scores,
)
from t2v_hub.selection.model2vec import Model2Vec, SelectorConfig
from t2v_hub.selection.training import loo_model2vec, soft_labels, train_model2vec

COMPAT = dict(probe="test_efficientnet", weights_sha256="w" * 8, layout_hash="l" * 8, method="montecarlo")


def synthetic(T: int = 12, E: int = 6, d: int = 24, seed: int = 0, bias_scale: float = 0.08):
    """Tasks and experts drawn around 4 cluster centres in log-Fisher space; the error of expert
    j on task i is affine in d_asym(F_j -> t_i) plus a strong per-expert bias (the truth)."""
    g = torch.Generator().manual_seed(seed)
    prof, centers = 1.5 * torch.randn(d, generator=g), torch.randn(4, d, generator=g)

    def sample(n: int) -> torch.Tensor:
        c = torch.randint(0, 4, (n,), generator=g)
        return torch.exp(prof + centers[c] + 0.7 * torch.randn(n, d, generator=g))

    X, F, t0 = sample(T), sample(E), torch.exp(prof + 0.3 * torch.randn(d, generator=g))
    bias = torch.linspace(-bias_scale, bias_scale, E)[torch.randperm(E, generator=g)]
    D = cdist_asym(F, X, t0, 0.15).T  # (T, E)
    errors = 0.2 + 0.5 * D + bias + 0.003 * torch.randn(T, E, generator=g)
    return X, F, t0, errors, bias, D


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def test_soft_labels_match_hand_computation() -> None:
    e = [0.10, 0.20, 0.40]
    mean = sum(e) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in e) / 3)  # population std
    logits = [-20.0 * (x - mean) / std for x in e]
    z = sum(math.exp(v) for v in logits)
    want = [math.exp(v) / z for v in logits]
    got = soft_labels(torch.tensor([e, [0.3, float("nan"), 0.1], [0.5, 0.5, 0.5]]), 20.0)
    assert got[0].tolist() == pytest.approx(want, rel=1e-5)
    # NaN cells get 0 and the others are normalised among themselves; equal errors: uniform.
    assert got[1, 1] == 0.0 and got[1, 2] > 0.99 and float(got[1].sum()) == pytest.approx(1.0)
    assert got[2].tolist() == pytest.approx([1 / 3] * 3)


def test_model2vec_beats_d_asym_and_recovers_the_biases() -> None:
    X, F, t0, errors, bias, D = synthetic()
    base = evaluate_selection(errors, D)
    # A per-expert scalar effect is what this synthetic zoo has: the offset ("both") must find it.
    both = SelectorConfig(bias="both", prior="none")  # the supplement's selector: its own offsets only
    loo = loo_model2vec(X, F, errors, t0, both)
    m2v = evaluate_selection(errors, loo)
    assert torch.isfinite(loo).all()
    assert m2v["relative_error_increase"] < 0.5 * base["relative_error_increase"]
    assert m2v["top1"] > base["top1"] and m2v["weighted_tau"] > base["weighted_tau"]
    # Trained on all tasks, the learned per-expert effect orders the experts like the true bias.
    sel = train_model2vec(X, F, errors, t0, both)
    effect = (sel.scores(X, sel.expert_ids, F) - cdist_asym(F, X, t0, 0.15).T).mean(0)
    assert spearman(effect, bias) > 0.9 and spearman(sel.offset, bias) > 0.9
    # The extremes have the right sign: the best expert is pushed up, the worst down.
    assert int(effect.argmin()) == int(bias.argmin()) and int(effect.argmax()) == int(bias.argmax())
    assert float(sel.offset[bias.argmin()]) < 0 < float(sel.offset[bias.argmax()])


def test_gamma_positive_and_training_deterministic() -> None:
    X, F, t0, errors, _, D = synthetic(T=6, E=4, d=16, seed=1)
    # Errors anti-correlated with the distance push gamma down: it must stay positive.
    anti = train_model2vec(X, F, 1.0 - D, t0, SelectorConfig(bias="none", epochs=60, lr=0.2))
    assert anti.gamma > 0 and math.isfinite(anti.gamma) and anti.gamma < anti.info["initial_gamma"]
    cfg = SelectorConfig(epochs=10, batch_size=2, seed=3, bias="filter")
    a, b = train_model2vec(X, F, errors, t0, cfg), train_model2vec(X, F, errors, t0, cfg)
    assert a.log_scale is not None and b.log_scale is not None
    assert torch.equal(a.log_scale, b.log_scale) and torch.equal(a.offset, b.offset) and a.log_gamma == b.log_gamma


def test_nan_cells_skipped_and_empty_task_refused() -> None:
    X, F, t0, errors, _, _ = synthetic(T=6, E=4, d=16, seed=2)
    errors[0, 1] = errors[3, 2] = float("nan")
    sel = train_model2vec(X, F, errors, t0, SelectorConfig(epochs=5, bias="filter"))
    assert sel.info["skipped_cells"] == 2 and sel.info["known_cells"] == 22
    # Which tasks back each expert's bias: columns 1 and 2 lost one task each.
    assert list(sel.info["tasks_per_expert"].values()) == [6, 5, 5, 6]
    layer = train_model2vec(X, F, errors, t0, SelectorConfig(epochs=5, bias="layer"), layers=torch.arange(16) // 8)
    assert layer.info["tasks_per_expert"] == sel.info["tasks_per_expert"]
    assert torch.isfinite(sel.offset).all() and sel.log_scale is not None and torch.isfinite(sel.log_scale).all()
    errors[4] = float("nan")
    with pytest.raises(SelectorError, match="task-4"):
        train_model2vec(X, F, errors, t0, SelectorConfig(epochs=5, bias="filter"), task_ids=[f"task-{i}" for i in range(6)])


def test_artifact_round_trip_and_mismatches(tmp_path: Path) -> None:
    X, F, t0, errors, _, _ = synthetic(T=6, E=4, d=16, seed=3)
    ids = [f"org/m{j}" for j in range(4)]
    sel = train_model2vec(X, F, errors, t0, SelectorConfig(epochs=8, alpha=0.2, bias="filter"), expert_ids=ids,
                          compat={**COMPAT, "dim": "16"})
    sel.save(tmp_path / "s.safetensors")
    back = Model2Vec.load(tmp_path / "s.safetensors")
    assert back.expert_ids == ids and back.config == sel.config and back.compat == sel.compat
    assert back.log_scale is not None and sel.log_scale is not None and torch.equal(back.log_scale, sel.log_scale)
    assert torch.equal(back.offset, sel.offset) and back.log_gamma == pytest.approx(sel.log_gamma)
    assert torch.equal(back.scores(X, ids, F), sel.scores(X, ids, F))
    assert back.config.alpha == 0.2 and back.info["num_tasks"] == 6
    target = Task2VecEmbedding.create(X[0], **COMPAT)
    back.check_compatible(target)
    with pytest.raises(SelectorError, match="probe"):
        back.check_compatible(Task2VecEmbedding.create(X[0], **{**COMPAT, "probe": "resnet18"}))
    with pytest.raises(SelectorError, match="different expert set"):
        back.apply(["zoo/a", "zoo/b"], F[:2])
    m, off, seen, notes = back.apply([ids[1], "zoo/new"], F[:2])
    assert seen.tolist() == [True, False] and off[1] == 0.0 and torch.equal(m[1], F[1]) and "zoo/new" in notes[0]
    with pytest.raises(SelectorError, match="not a t2v-hub selector"):
        Model2Vec.from_bytes(target.to_bytes())
    with pytest.raises(SelectorError, match="bias"):
        SelectorConfig(bias="vector")


def test_evaluate_selection_by_hand() -> None:
    errors = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.4, 0.6], [0.2, float("nan"), 0.1]])
    scores = torch.tensor([[1.0, 0.0, 2.0], [1.0, 0.0, 2.0], [0.0, 5.0, 1.0]])
    r = evaluate_selection(errors, scores)
    # chosen 0.2, 0.4, 0.2; best 0.1, 0.4, 0.1
    assert r["mean_chosen_error"] == pytest.approx(0.8 / 3) and r["mean_best_error"] == pytest.approx(0.6 / 3)
    assert r["relative_error_increase"] == pytest.approx((0.8 - 0.6) / 0.6)
    assert r["relative_error_increase_per_task"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)
    assert r["top1"] == pytest.approx(1 / 3)
    excl = torch.zeros(3, 3, dtype=torch.bool)
    excl[0, 1] = True  # the excluded cell is never chosen
    assert evaluate_selection(errors, scores, excl)["mean_chosen_error"] == pytest.approx((0.1 + 0.4 + 0.2) / 3)
    perfect = evaluate_selection(errors, errors)
    assert perfect["relative_error_increase"] == 0 and perfect["top1"] == 1 and perfect["weighted_tau"] == 1
    c = chance_baseline(errors)
    assert c["mean_chosen_error"] == pytest.approx((0.2 + 0.5 + 0.15) / 3)
    assert c["top1"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 2) / 3)
    loo = loo_mean_error_scores(errors)
    assert float(loo[0, 0]) == pytest.approx((0.5 + 0.2) / 2) and float(loo[2, 0]) == pytest.approx((0.1 + 0.5) / 2)


def _write_inputs(tmp_path: Path, X: torch.Tensor, F: torch.Tensor, t0: torch.Tensor, errors: torch.Tensor) -> None:
    tasks, experts = tmp_path / "tasks", tmp_path / "experts"
    tasks.mkdir()
    experts.mkdir()
    for i, x in enumerate(X):
        Task2VecEmbedding.create(x, dataset_id=f"task-{i}", **COMPAT).save(tasks / f"t{i}.safetensors")
    for j, f in enumerate(F):  # experts known by file stem: org--mj.safetensors is org/mj
        Task2VecEmbedding.create(f, dataset_id=f"src-{j}", **COMPAT).save(experts / f"org--m{j}.safetensors")
    Task2VecEmbedding.create(t0, **COMPAT).save(tmp_path / "t0.safetensors")
    with (tmp_path / "errors.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["task", *[f"org/m{j}" for j in range(F.shape[0])]])
        for i, row in enumerate(errors.tolist()):
            w.writerow([f"task-{i}", *["" if math.isnan(v) else f"{v:.6f}" for v in row]])


def test_cli_train_and_eval(tmp_path: Path, capsys) -> None:
    X, F, t0, errors, _, _ = synthetic(T=8, E=4, d=16, seed=4)
    errors[2, 3] = float("nan")
    _write_inputs(tmp_path, X, F, t0, errors)
    em = load_error_matrix(tmp_path / "errors.csv")
    assert em.expert_ids == [f"org/m{j}" for j in range(4)] and em.missing == 1
    common = ["--errors", str(tmp_path / "errors.csv"), "--tasks", str(tmp_path / "tasks"),
              "--experts", str(tmp_path / "experts"), "--trivial", str(tmp_path / "t0.safetensors"), "--bias", "filter", "--epochs", "20"]
    out = tmp_path / "sel.safetensors"
    assert main(["selector", "train", *common, "--out", str(out), "--format", "json"]) == 0
    cap = capsys.readouterr()
    summary = json.loads(cap.out)
    assert summary["experts"] == 4 and summary["tasks"] == 8 and summary["skipped_cells"] == 1
    assert summary["tasks_per_expert"] == {"org/m0": 8, "org/m1": 8, "org/m2": 8, "org/m3": 7}
    assert "1 missing/NaN error cell(s) skipped" in cap.err
    sel = Model2Vec.load(out)
    assert sel.compat["probe"] == "test_efficientnet" and sel.config.epochs == 20 and sel.expert_ids[0] == "org/m0"
    # The summary names what `recommend --rerank` would add to its shortlist: the selector's best generalists.
    from t2v_hub.selection.generalist import generalist_scores

    want = generalist_scores(em.errors)
    assert [g["expert"] for g in summary["generalists"]] == [em.expert_ids[j] for j in want.argsort()[:3].tolist()]
    assert summary["generalists"][0]["mean_relative_error_increase"] == pytest.approx(float(want.min()), abs=1e-4)
    assert main(["selector", "eval", *common, "--static", "org/m1", "--format", "json"]) == 0
    res = json.loads(capsys.readouterr().out)["results"]
    assert {"chance (expected)", "d_sym", "d_asym (alpha=0.15)", "always org/m1", "MODEL2VEC (leave-one-out)",
            "mean error on other tasks"} <= set(res)
    assert all(0 <= r["top1"] <= 1 for r in res.values())
    assert main(["selector", "eval", *common[:-2], "--epochs", "5"]) == 0
    table = capsys.readouterr().out
    assert "MODEL2VEC (leave-one-out)" in table and "w. tau" in table
    # A JSON error matrix works the same; a task with no error at all is refused by name.
    data = {"tasks": [f"task-{i}" for i in range(8)], "experts": em.expert_ids,
            "errors": [[None if math.isnan(v) else v for v in row] for row in errors.tolist()]}
    data["errors"][5] = [None] * 4
    (tmp_path / "errors.json").write_text(json.dumps(data))
    assert main(["selector", "train", *common[2:], "--errors", str(tmp_path / "errors.json"), "--out", str(out)]) == 2
    assert "task-5" in capsys.readouterr().err


def test_cli_eval_exclude_self_never_learns_from_own_task_cells(tmp_path: Path, capsys) -> None:
    X, F, t0, errors, _, _ = synthetic(T=8, E=4, d=16, seed=5)
    _write_inputs(tmp_path, X, F, t0, errors)
    for j, f in enumerate(F):  # expert j was trained on task-j
        Task2VecEmbedding.create(f, dataset_id=f"task-{j}", **COMPAT).save(tmp_path / "experts" / f"org--m{j}.safetensors")
    results = []
    for own in (0.0, 0.9):  # the own-task cells' values must not matter with --exclude-self
        e = errors.clone()
        e[torch.arange(4), torch.arange(4)] = own
        _write_inputs_errors(tmp_path / "errors.csv", e)
        assert main(["selector", "eval", "--errors", str(tmp_path / "errors.csv"), "--tasks", str(tmp_path / "tasks"),
                     "--experts", str(tmp_path / "experts"), "--trivial", str(tmp_path / "t0.safetensors"),
                     "--bias", "filter", "--epochs", "10", "--exclude-self", "--format", "json"]) == 0
        results.append(json.loads(capsys.readouterr().out)["results"])
    for name in ("MODEL2VEC (leave-one-out)", "mean error on other tasks", "d_sym"):
        assert results[0][name] == results[1][name], name


def _write_inputs_errors(path: Path, errors: torch.Tensor) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["task", *[f"org/m{j}" for j in range(errors.shape[1])]])
        for i, row in enumerate(errors.tolist()):
            w.writerow([f"task-{i}", *[f"{v:.6f}" for v in row]])


def test_error_matrix_that_is_not_text_is_one_line(tmp_path: Path, capsys) -> None:
    from t2v_hub.selection.error_matrix import load_error_matrix

    junk = tmp_path / "errors.csv"
    junk.write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(SelectorError, match="is not a UTF-8 CSV file"):
        load_error_matrix(junk)
    assert main(["selector", "train", "--errors", str(junk), "--tasks", str(tmp_path), "--out",
                 str(tmp_path / "s.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "not a UTF-8 CSV file" in err and "unexpected" not in err
    bom = tmp_path / "bom.csv"  # as spreadsheets save it
    bom.write_text("task,e1,e2\nt1,0.1,0.2\n", encoding="utf-8-sig")
    assert load_error_matrix(bom).expert_ids == ["e1", "e2"]


@pytest.mark.parametrize("flags", [["--bias", "filter", "--epochs", "0"], ["--bias", "layer", "--layer-epochs", "0"]])
def test_zero_epochs_is_refused_before_anything_is_written(flags: list[str], tmp_path: Path, capsys) -> None:
    """Zero epochs trained nothing, wrote the selector, then crashed formatting a loss never computed."""
    X, F, t0, errors, _, _ = synthetic(T=6, E=3, d=16, seed=5)
    _write_inputs(tmp_path, X, F, t0, errors)
    out = tmp_path / "sel.safetensors"
    assert main(["selector", "train", "--errors", str(tmp_path / "errors.csv"), "--tasks", str(tmp_path / "tasks"),
                 "--experts", str(tmp_path / "experts"), "--trivial", str(tmp_path / "t0.safetensors"), *flags,
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: argument {flags[2]}: must be at least 1, got 0 (see t2v-hub selector train --help)"
    assert not out.exists()
    for name in ("epochs", "layer_epochs"):
        with pytest.raises(SelectorError, match=f"{name}=0: expected a whole number of at least 1"):
            SelectorConfig(**{name: 0})


def test_quiet_silences_hints_and_progress_not_results(tmp_path: Path, capsys) -> None:
    """Every other command that talks on stderr took --quiet; `selector` refused it as unknown."""
    X, F, t0, errors, _, _ = synthetic(T=6, E=3, d=16, seed=6)
    errors[1, 2] = float("nan")
    _write_inputs(tmp_path, X, F, t0, errors)
    common = ["--errors", str(tmp_path / "errors.csv"), "--tasks", str(tmp_path / "tasks"), "--experts",
              str(tmp_path / "experts"), "--trivial", str(tmp_path / "t0.safetensors"), "--bias", "filter", "--epochs", "5"]
    assert main(["selector", "eval", *common]) == 0
    loud = capsys.readouterr()
    assert "missing/NaN error cell(s) skipped" in loud.err and "leave-one-out MODEL2VEC" in loud.err
    assert main(["selector", "eval", *common, "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "" and quiet.out == loud.out


def test_cli_prior_flags(tmp_path: Path, capsys) -> None:
    X, F, t0, errors, _, _ = synthetic(T=9, E=3, d=16, seed=8)
    _write_inputs(tmp_path, X, F, t0, errors)
    common = ["--errors", str(tmp_path / "errors.csv"), "--tasks", str(tmp_path / "tasks"), "--experts",
              str(tmp_path / "experts"), "--trivial", str(tmp_path / "t0.safetensors"), "--bias", "filter",
              "--epochs", "5"]
    out = tmp_path / "sel.safetensors"
    assert main(["selector", "train", *common, "--prior-folds", "3", "--out", str(out), "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    sel = Model2Vec.load(out)
    assert summary["prior_weight"] == sel.info["prior_weight"] and sel.config.prior == "cv"
    assert sel.config.prior_folds == 3 and sel.info["prior_cv"]["folds"] == 3
    assert main(["selector", "train", *common, "--prior", "none", "--out", str(out), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["prior_weight"] is None
    assert main(["selector", "train", *common, "--prior", "none", "--prior-folds", "3", "--out", str(out)]) == 2
    assert "--prior-folds applies to --prior cv" in capsys.readouterr().err
