"""The human-readable parts of a card: the "Task embedding" section and a new card from the template.

Everything that reaches Markdown from a card entry goes through :func:`md` (no
markup, no HTML comment terminators, one line).
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from ..constants import CARD_BLOCK_KEY, TASK2VEC_TAG

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def md(value: Any) -> str:
    """Text safe to place in Markdown/HTML: no markup, no comment terminators, one line."""
    s = " ".join("".join(ch if ch.isprintable() else " " for ch in str(value)).split())
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", s)


def template_text(name: str) -> str:
    """A packaged template (the same files as the repo's ``cards/`` folder)."""
    return resources.files("t2v_hub").joinpath("templates", name).read_text(encoding="utf-8")


def render_section(entries: list[dict[str, Any]], repo_id: str) -> str:
    """The human-readable "Task embedding" section (inner text, without markers)."""
    import jinja2

    env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["md"] = md
    rows = [_display(e) for e in entries]
    return env.from_string(template_text("task2vec_section.md")).render(
        entries=rows, repo_id=md(repo_id), tag=TASK2VEC_TAG, block_key=CARD_BLOCK_KEY
    )


def _display(entry: dict[str, Any]) -> dict[str, Any]:
    def num(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, int | float) and not isinstance(v, bool) else "-"

    nearest = entry.get("nearest") if isinstance(entry.get("nearest"), list) else []
    return {
        "probe": entry.get("probe", ""),
        "method": entry.get("method") or "-",
        "dataset": entry.get("dataset") or "-",
        "dataset_revision": entry.get("dataset_revision") or "",
        "num_samples": num(entry.get("num_samples"), ","),
        "dim": num(entry.get("dim"), ","),
        "norm": num(entry.get("norm"), ".4g"),
        "file": entry.get("file", ""),
        "sha256": str(entry.get("sha256", ""))[:12],
        "nearest": [
            {"task": n.get("task", "?"), "distance": num(n.get("distance"), ".3f")}
            for n in nearest
            if isinstance(n, dict)
        ],
    }


__all__ = ["md", "render_section", "template_text"]
