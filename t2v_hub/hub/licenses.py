"""The Hub's license identifiers, and the checks a new card's ``license`` and ``base_model`` pass.

The Hub validates a model card's metadata when README.md is pushed: ``license`` must be one of
its identifiers (https://huggingface.co/docs/hub/repositories-licenses; ``other`` with
``license_name``/``license_link`` for anything else) and ``base_model`` a model id. Checking
here first turns a rejected push (or, on a LocalHub, a card the Hub would refuse later) into a
one-line error before anything is written.
"""

from __future__ import annotations

import difflib

from ..errors import CardError

__all__ = ["HUB_LICENSES", "check_base_model", "check_license"]

HUB_LICENSES = frozenset(["apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0", "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0", "etalab-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0", "isc", "h-research", "intel-research", "lppl-1.3c", "ms-pl", "apple-ascl", "apple-amlr", "mpl-2.0", "odc-by", "odbl", "openrail++", "osl-3.0", "postgresql", "ofl-1.1", "ncsa", "unlicense", "zlib", "pddl", "lgpl-lr", "deepfloyd-if-license", "fair-noncommercial-research-license", "llama2", "llama3", "llama3.1", "llama3.2", "llama3.3", "llama4", "gemma", "unknown", "other"])


def check_license(license: str | None) -> None:
    """``license`` is None or one of :data:`HUB_LICENSES` (case as the Hub writes them)."""
    if license is None:
        return
    if license in HUB_LICENSES:
        return
    close = difflib.get_close_matches(str(license).strip().lower(), sorted(HUB_LICENSES), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise CardError(f"license={license!r} is not a Hub license identifier; {hint}use e.g. apache-2.0, mit or "
                    "cc-by-4.0, or 'other' (and name it in the card)")


def check_base_model(base_model: str | None) -> None:
    """``base_model`` is None or a model id the Hub accepts (``name`` or ``namespace/name``)."""
    if base_model is None:
        return
    from .base import REPO_ID_RE

    name = str(base_model)
    if not name or not REPO_ID_RE.match(name) or ".." in name:
        raise CardError(f"base_model={base_model!r} is not a Hub model id; pass e.g. base_model=timm/resnet50.a1_in1k")
