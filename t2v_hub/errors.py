"""Exception hierarchy.

Every error t2v-hub raises on bad input derives from :class:`T2VError`; the CLI
turns those into a one-line message and a non-zero exit code. Messages name the
problem *and* the fix.
"""

from __future__ import annotations


class T2VError(Exception):
    """Base class of every t2v-hub error."""

    exit_code: int = 2


class ProbeError(T2VError):
    """A probe cannot be built (unknown name, no filter-bearing layer, bad weights)."""


class UnknownProbeError(ProbeError):
    """The probe name is not a timm model, hub or local checkpoint."""


class WeightsError(ProbeError):
    """Pretrained weights are missing, corrupt or do not match the architecture."""


class DataError(T2VError):
    """The dataset cannot be used as a classification task."""


class DatasetNotFoundError(DataError):
    """The dataset (local path or hub id) does not exist."""


class BadImageError(DataError):
    """An image cannot be decoded."""


class FisherError(T2VError):
    """A Fisher estimator was called with invalid arguments."""


class EmbeddingError(T2VError):
    """An embedding file is missing, corrupt or malformed."""


class IncompatibleEmbeddingError(EmbeddingError):
    """Two embeddings cannot be compared (different probe, weights, layout or method)."""


class HubError(T2VError):
    """A hub operation failed."""


class RepoNotFoundError(HubError):
    """The repository does not exist on the hub."""


class ConcurrentUpdateError(HubError):
    """The repository changed between read and commit; nothing was overwritten."""


class IntegrityError(HubError):
    """A downloaded file does not match the checksum announced by the card."""


class SelectorError(T2VError):
    """A selector cannot be trained, loaded or applied."""


class OutputError(T2VError):
    """An output path cannot be written."""


class ImageTooLargeError(BadImageError):
    """An image has more pixels than the decoder accepts, even after JPEG draft decoding."""


class CardError(HubError):
    """A model card (README.md) cannot be read or edited safely; it was left unchanged."""


class RecommendError(T2VError):
    """Experts cannot be ranked for a task (none found, none compatible, bad options)."""


class ConfigError(T2VError):
    """An environment variable of t2v-hub's (``T2V_HUB_*``) holds a value it cannot use."""


class DeviceError(T2VError):
    """The requested torch device does not exist on this machine (no CUDA, no such GPU index, no MPS)."""
