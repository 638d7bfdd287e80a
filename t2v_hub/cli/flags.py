"""Library errors speak Python; the CLI says the same with its flags.

Library messages name parameters as Python does (``max_samples=0``, ``top_k``,
``overwrite=True``). :func:`to_cli` rewrites them with the flags of the command
that ran: a parameter is translated when it has an underscore (no English word
does) or is written ``name=``; the flag comes from the command's own parser, so
a new flag needs no table entry. ``ALIASES`` covers parameters whose flag has
another name.
"""

from __future__ import annotations

import argparse
import re

# Python parameter -> CLI flag, where the two are not spelled alike.
ALIASES = {
    "repo_id": "--model",
    "overwrite": "--force",
    "config": "--config",
    "pretrained": "--no-pretrained",
    "cache": "--no-cache",
    # read_eval_results(task_id=, scale=, metric=) behind `selector --eval-results`
    "task_id": "--eval-task-id",
    "scale": "--eval-scale",
    "metric": "--eval-metric",
}
# Values that are a flag by another name (``name=True`` of a store_true flag is handled generally).
_IMPLIED = {("overwrite", "True"), ("pretrained", "False"), ("cache", "False")}


def flag_map(parser: argparse.ArgumentParser) -> dict[str, str]:
    """dest -> its long option for every option of ``parser`` (read only)."""
    out: dict[str, str] = {}
    for action in parser._actions:  # argparse has no public listing of its actions
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and action.dest not in out:
            out[action.dest] = longs[0]
    return out


def _switches(parser: argparse.ArgumentParser | None) -> set[str]:
    """Dests of on/off flags (``store_true``): ``name=True`` is the flag itself."""
    if parser is None:
        return set()
    return {a.dest for a in parser._actions if isinstance(a, argparse._StoreTrueAction)}


def to_cli(message: str, parser: argparse.ArgumentParser | None) -> str:
    """``message`` with the Python parameter names it mentions replaced by ``parser``'s flags."""
    flags = flag_map(parser) if parser is not None else {}
    known = {**{k: v for k, v in ALIASES.items()}, **flags}
    switches = _switches(parser)

    def assign(m: re.Match[str]) -> str:
        name, value = m.group(1), m.group(2)
        flag = known.get(name)
        if flag is None:
            return m.group(0)
        if (name, value) in _IMPLIED or (name in switches and value == "True"):
            return flag
        return f"{flag} {value.strip(chr(39))}" if value else flag

    out = re.sub(r"\b([a-z][a-z0-9_]*)=((?:'[^']*')|[^\s,;)]*)", assign, message)

    def bare(m: re.Match[str]) -> str:
        flag = known.get(m.group(1))
        return flag if flag is not None else m.group(0)

    return re.sub(r"(?<![-\w.])([a-z][a-z0-9]*(?:_[a-z0-9]+)+)\b(?![=(])", bare, out)


__all__ = ["ALIASES", "flag_map", "to_cli"]
