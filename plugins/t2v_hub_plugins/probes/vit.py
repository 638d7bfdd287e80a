"""Vision Transformer family (timm.models.vision_transformer).

Attention qkv/proj and MLP Linear layers see token sequences; the Fisher
estimator sums per-token gradients per sample. The pooled token (``forward_head``
with ``pre_logits=True``) is what the head sees.
"""

from __future__ import annotations

from t2v_hub.probes.adapters import GenericAdapter


class VisionTransformerAdapter(GenericAdapter):
    family = "vision_transformer"
