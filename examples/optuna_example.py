"""Rank backbones with TASK2VEC, then let Optuna try the most promising ones first.

    python examples/optuna_example.py            # about a minute on a laptop CPU
    python examples/optuna_example.py --quick    # smoke test: fewer samples and steps

Offline and CPU-only. Steps:

1. A small local hub of "experts", each a model repo with timm weights and the
   TASK2VEC embedding of the task it was trained on. STAND-INS: real experts would
   be pretrained backbones from the Hugging Face Hub, which cannot be downloaded
   here, so timm's tiny ``test_*`` architectures are trained for a few steps on
   digit subsets / a noise task instead. The probe is ``test_efficientnet`` (a
   stand-in for ``tf_efficientnet_lite0``) at 32 px.
2. ``rank_backbones`` embeds the target dataset (scikit-learn's 8x8 digits,
   upsampled to 32 px) once and ranks every expert by d_asym.
3. The Optuna integration enqueues the top-k backbones as the first trials; each
   trial fine-tunes its backbone briefly and reports validation accuracy.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from t2v_hub.automl import rank_backbones
from t2v_hub.hub import LocalHub, push_embedding
from t2v_hub.registry import get_integration
from t2v_hub.task2vec import embed

PROBE = "test_efficientnet"  # stand-in probe (random init, seeded): see the module docstring
SIZE = 32
# (repo id, timm architecture, which digits it was trained on; None = a noise task)
EXPERTS = [
    ("zoo/resnet-digits-0to4", "test_resnet", [0, 1, 2, 3, 4]),
    ("zoo/efficientnet-digits-5to9", "test_efficientnet", [5, 6, 7, 8, 9]),
    ("zoo/vit-noise", "test_vit", None),
]


def digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits as (N, 3, 32, 32) images normalised to mean 0 / std 1, shuffled."""
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    x = (x - x.mean()) / x.std()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return x[perm], torch.tensor(d.target)[perm]


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def build_hub(root: Path, x: torch.Tensor, y: torch.Tensor, steps: int, max_samples: int) -> LocalHub:
    """Train each stand-in expert on its task, save its weights, attach its task's embedding."""
    from timm.models import save_for_hf

    hub = LocalHub(root)
    for repo_id, arch, classes in EXPERTS:
        if classes is None:  # a task with no signal: random labels
            xs, ys = x[:400], torch.randint(0, 5, (400,), generator=torch.Generator().manual_seed(1))
        else:
            keep = torch.isin(y, torch.tensor(classes))
            xs, ys = x[keep], torch.searchsorted(torch.tensor(classes), y[keep])
        torch.manual_seed(0)
        model = timm.create_model(arch, num_classes=len(set(ys.tolist())))
        train(model, xs, ys, steps, lr=3e-3)
        hub.create_repo(repo_id)
        save_for_hf(model, hub.root / repo_id, safe_serialization=True)  # local-dir: weights timm can load
        task = embed((xs, ys), PROBE, input_size=SIZE, max_samples=max_samples)
        task.metadata["dataset_id"] = f"digits-{'noise' if classes is None else ''.join(map(str, classes))}"
        push_embedding(hub, repo_id, task)
        print(f"expert {repo_id:32s} ({arch}) trained on {task.metadata['dataset_id']}")
    return hub


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hub", default=None, help="folder for the local hub (default: a temporary folder)")
    ap.add_argument("--top-k", type=int, default=2, help="backbones enqueued first")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60, help="fine-tuning steps per trial")
    ap.add_argument("--quick", action="store_true", help="smoke test: fewer samples and steps")
    args = ap.parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    steps, max_samples = (10, 64) if args.quick else (args.steps, 300)
    x, y = digits()
    n_val = 300
    x_val, y_val, x_tr, y_tr = x[:n_val], y[:n_val], x[n_val:], y[n_val:]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.hub or tmp)
        root.mkdir(parents=True, exist_ok=True)
        build_hub(root, x_tr, y_tr, steps, max_samples)

        # One probe pass over the target data, whatever the number of experts.
        recs = rank_backbones((x_tr, y_tr), hub=str(root), top_k=len(EXPERTS), max_samples=max_samples)
        print("\nrank  backbone                          d_asym   trained on")
        for r in recs:
            print(f"{r.rank:>4}  {r.repo_id:32s}  {r.distance:+.4f}  {r.task}")

        integration = get_integration("optuna")  # discovered through the t2v_hub.integrations entry point
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
        queued = integration.enqueue_backbones(study, "backbone", recs, top_k=args.top_k)
        choices = integration.backbone_choices(recs)

        def objective(trial: optuna.Trial) -> float:
            name = trial.suggest_categorical("backbone", choices)
            lr = trial.suggest_float("lr", 1e-3, 1e-2, log=True)
            torch.manual_seed(trial.number)
            model = timm.create_model(name, pretrained=True, num_classes=10)  # local-dir:... weights
            train(model, x_tr, y_tr, steps, lr, seed=trial.number)
            return accuracy(model, x_val, y_val)

        study.optimize(objective, n_trials=max(args.trials, len(queued)))
        print(f"\nenqueued first: {queued}")
        for t in study.trials:
            print(f"trial {t.number}: {t.params['backbone']:<60s} lr={t.params['lr']:.4f}  val acc={t.value:.3f}")
        print(f"best: {study.best_trial.params['backbone']} (val acc {study.best_value:.3f})")
        return {"recommendations": [r.repo_id for r in recs], "queued": queued,
                "trials": [t.params["backbone"] for t in study.trials], "best": study.best_value}


if __name__ == "__main__":
    main()
