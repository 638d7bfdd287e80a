"""EfficientNet family (timm.models.efficientnet), including the ``tf_`` variants.

The ``tf_`` models use ``Conv2dSame`` (TensorFlow 'SAME' padding computed in
forward); the Fisher hooks pad the captured input the same way, so nothing here
needs overriding beyond the family key. ``conv_head`` belongs to the backbone
(it is measured), ``classifier`` is the task head.
"""

from __future__ import annotations

from t2v_hub.probes.adapters import GenericAdapter


class EfficientNetAdapter(GenericAdapter):
    family = "efficientnet"
