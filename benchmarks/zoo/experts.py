"""Experts: the untouched ImageNet backbone ("generic") and fine-tuned copies, and their features.

Fine-tuning follows supplement 4.1 with fewer draws (see ``configs.FinetuneConfig``):
the classifier alone first (Adam, on cached features of the frozen backbone), then
the whole network with SGD + momentum, weight decay 5e-4 and a x0.1 step, every
epoch a fixed number of class-balanced draws with replacement.

Features of an expert are its pooled penultimate activations (timm
``forward_head(pre_logits=True)``), in eval mode, for every pool image some task
uses; cached as fp16 under ``<out>/features``.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from t2v_hub.data import balanced_indices

from .configs import FinetuneConfig, ZooConfig

GENERIC = "generic_imagenet"


def base_model(cfg: ZooConfig) -> nn.Module:
    """The backbone every expert starts from (ImageNet weights from the offline package)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = timm.create_model(cfg.arch, pretrained=False)
    if cfg.pretrained:
        from t2v_hub.probes.weights import load_offline_weights

        load_offline_weights(model, cfg.arch)
    return model.eval()


@torch.no_grad()
def features(model: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Pooled pre-logit features (N, D) fp32 of normalised images, eval mode."""
    model.eval().to(device)
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size].to(device, non_blocking=True)
        f = model.forward_head(model.forward_features(x), pre_logits=True)
        out.append(f.float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.num_features)


def _head_phase(model: nn.Module, feats: torch.Tensor, y: torch.Tensor, ft: FinetuneConfig, g: torch.Generator) -> None:
    head = model.get_classifier()
    opt = torch.optim.Adam(head.parameters(), lr=ft.head_lr)
    for _ in range(ft.head_epochs):
        idx = balanced_indices(y, ft.head_draws, g)
        for s in range(0, len(idx), 64):
            b = idx[s : s + 64]
            loss = nn.functional.cross_entropy(head(feats[b]), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def finetune(
    cfg: ZooConfig,
    base: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    generic_feats: torch.Tensor,
    device: torch.device,
    seed: int,
) -> tuple[nn.Module, dict[str, Any]]:
    """A fine-tuned copy of ``base`` for (images, labels); returns it and training stats."""
    ft = cfg.finetune
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    model = copy.deepcopy(base)
    num_classes = int(labels.max()) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.reset_classifier(num_classes)
    # Phase 1: classifier only, on cached features of the frozen backbone.
    _head_phase(model, generic_feats, labels, ft, g)
    # Phase 2: the whole network, SGD.
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=ft.lr, momentum=ft.momentum, weight_decay=ft.weight_decay)
    decay_epoch = max(1, math.floor(ft.epochs * ft.decay_at))
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[decay_epoch], gamma=0.1)
    losses = []
    for _epoch in range(ft.epochs):
        model.train(ft.train_bn)
        idx = balanced_indices(labels, ft.draws_per_epoch, g)
        for s in range(0, len(idx), ft.batch_size):
            b = idx[s : s + ft.batch_size]
            if len(b) < 2:
                continue
            x, y = images[b].to(device), labels[b].to(device)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        sched.step()
    model.eval()
    with torch.no_grad():
        acc = float((torch.cat([model(images[i : i + 256].to(device)).argmax(1).cpu()
                                for i in range(0, len(images), 256)]) == labels).float().mean())
    stats = {
        "train_accuracy": acc,
        "final_loss": sum(losses[-5:]) / max(1, len(losses[-5:])),
        "steps": len(losses),
        "images_seen": len(losses) * ft.batch_size,
        "seconds": time.perf_counter() - t0,
        "num_train": int(len(labels)),
        "num_classes": num_classes,
    }
    return model.cpu(), stats


def save_expert(model: nn.Module, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def load_expert(base: nn.Module, path: Path, num_classes: int) -> nn.Module:
    model = copy.deepcopy(base)
    model.reset_classifier(num_classes)
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()
