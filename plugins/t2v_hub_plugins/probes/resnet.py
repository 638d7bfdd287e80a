"""ResNet family (timm.models.resnet): classifier ``fc`` behind global pooling."""

from __future__ import annotations

from t2v_hub.probes.adapters import GenericAdapter


class ResNetAdapter(GenericAdapter):
    family = "resnet"
