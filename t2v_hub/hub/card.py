"""Model card (README.md) editing: the ``task2vec`` YAML block, the tag and our section.

The card belongs to the model owner. We change exactly three things and keep every
other byte: the top-level ``task2vec`` key of the YAML front matter, the
``task2vec`` entry of ``tags``, and the Markdown between our two HTML comment
markers. Re-serialising the whole front matter (what ``ModelCard`` does) would drop
comments, ``null`` keys and formatting, so the front matter is edited key by key:
YAML nodes give each top-level key's line span, the new value is produced by the
YAML library (never by string formatting), and the result is parsed again and
compared with the intended metadata before anything is written.

Everything is parsed with safe loaders only: ``!!python/object`` and friends raise.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import yaml

from ..constants import CARD_BLOCK_KEY, EMBEDDING_DIR, TASK2VEC_TAG
from ..errors import CardError
from .base import MAX_CARD_BYTES
from .card_render import md, render_section, template_text  # noqa: E402,F401 - md/template_text re-exported

SECTION_BEGIN = "<!-- task2vec:begin -->"
SECTION_END = "<!-- task2vec:end -->"
# Front matter larger than this is refused: Hub metadata is meant to be small, and
# parsing megabytes of YAML on every attach is a denial of service, not a card.
MAX_FRONT_MATTER_CHARS = 1024 * 1024

# The same pattern huggingface_hub uses, so we see the front matter the Hub sees.
FRONT_MATTER_RE = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")
# Line breaks as YAML counts them (Python's splitlines also splits on \f, \v, ...).
_YAML_BREAK_RE = re.compile(r"\r\n|\r|\n|\x85|\u2028|\u2029")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_SafeLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class ParsedCard:
    """A README split into parts: ``head + yaml_text + tail + body`` == original text."""

    head: str
    yaml_text: str
    tail: str
    body: str
    metadata: dict[str, Any]
    newline: str
    has_front_matter: bool


def _newline_of(text: str) -> str:
    m = re.search(r"\r\n|\n|\r", text)
    return m.group(0) if m else "\n"


def parse_card(text: str) -> ParsedCard:
    """Split and safely parse a card; CardError when the front matter is unusable."""
    if len(text) > MAX_CARD_BYTES:
        raise CardError(f"README.md is {len(text):,} characters, over the {MAX_CARD_BYTES:,} limit; shorten it first")
    m = FRONT_MATTER_RE.search(text)
    if not m:
        return ParsedCard("", "", "", text, {}, _newline_of(text), False)
    yaml_text = m.group(2)
    if len(yaml_text) > MAX_FRONT_MATTER_CHARS:
        raise CardError(
            f"README.md front matter is {len(yaml_text):,} characters (limit {MAX_FRONT_MATTER_CHARS:,}); "
            "move long text into the card body"
        )
    meta = _safe_load(yaml_text)
    return ParsedCard(m.group(1), yaml_text, m.group(3), text[m.end() :], meta, _newline_of(m.group(1)), True)


def _safe_load(yaml_text: str) -> dict[str, Any]:
    try:
        data = yaml.load(yaml_text, Loader=_SafeLoader)  # noqa: S506 - a safe loader class
    except yaml.YAMLError as exc:
        # Tags such as !!python/object land here too: safe loaders refuse to construct them.
        raise CardError(f"README.md front matter is not valid safe YAML ({_one_line(exc)}); fix the card first") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CardError(f"README.md front matter must be a mapping of keys, found {type(data).__name__}; fix the card")
    return data


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


# -- our block ------------------------------------------------------------------------


def read_entries(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``task2vec`` block as a list of entries; CardError when it is malformed."""
    block = metadata.get(CARD_BLOCK_KEY)
    if block is None:
        return []
    if not isinstance(block, list):
        raise CardError(f"the card's {CARD_BLOCK_KEY!r} block must be a list of entries, found {type(block).__name__}")
    for i, entry in enumerate(block):
        problem = entry_problem(entry)
        if problem:
            raise CardError(f"the card's {CARD_BLOCK_KEY!r} entry {i} is malformed: {problem}")
    return [dict(e) for e in block]


def entry_problem(entry: Any) -> str | None:
    """Why a card entry cannot be used, or None when it is well formed."""
    if not isinstance(entry, dict):
        return f"expected a mapping, found {type(entry).__name__}"
    for key in ("probe", "file", "sha256"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            return f"missing or non-text {key!r}"
    if not _SHA256_RE.match(entry["sha256"]):
        return "sha256 is not 64 lowercase hex digits"
    # Entries may only point at embedding files: not at weights or anything else in the repo.
    if not (entry["file"].startswith(f"{EMBEDDING_DIR}/") and entry["file"].endswith(".safetensors")):
        return f"file {entry['file']!r} is not a {EMBEDDING_DIR}/*.safetensors path"
    return None


def merge_entries(entries: list[dict[str, Any]], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Replace the entry stored at the same file, else append: one entry per file."""
    out = [e for e in entries if e.get("file") != new["file"]]
    out.append(new)
    return out


# -- YAML dumping ---------------------------------------------------------------------

# Strings a YAML 1.2 reader (the Hub's) would take for numbers or booleans although
# PyYAML (YAML 1.1) writes them unquoted, e.g. "1e5" or "0o17": quote them.
_YAML12_NON_STR = re.compile(
    r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?|0o[0-7]+|0x[0-9a-fA-F]+|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)"
)


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # anchors/aliases (&id001) would confuse readers and other YAML tools


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    if _YAML12_NON_STR.fullmatch(value):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'")
    return dumper.represent_str(value)


_Dumper.add_representer(str, _represent_str)


def _dump(obj: Any, newline: str) -> str:
    text = yaml.dump(
        obj, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=4096, line_break=newline
    )
    return text


# -- front matter editing -------------------------------------------------------------


def _split_lines(text: str) -> list[str]:
    """Lines with their breaks, split where YAML counts a line break."""
    lines, pos = [], 0
    for m in _YAML_BREAK_RE.finditer(text):
        lines.append(text[pos : m.end()])
        pos = m.end()
    if pos < len(text):
        lines.append(text[pos:])
    return lines


def _top_level(yaml_text: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
    root = yaml.compose(yaml_text, Loader=_SafeLoader)
    if root is None:
        return []
    if not isinstance(root, yaml.MappingNode) or root.flow_style:
        raise CardError("README.md front matter must be a block mapping (key: value lines); fix the card")
    return [(k.value if isinstance(k, yaml.ScalarNode) else "", k, v) for k, v in root.value]


def _key_spans(lines: list[str], keys: list[tuple[str, yaml.Node, yaml.Node]]) -> dict[str, tuple[int, int]]:
    """Line span [start, end) of each top-level key, trailing column-0 comments excluded."""
    spans: dict[str, tuple[int, int]] = {}
    for i, (name, knode, _) in enumerate(keys):
        if knode.start_mark.column != 0:
            raise CardError("README.md front matter keys must start at column 0; fix the card")
        start = knode.start_mark.line
        end = keys[i + 1][1].start_mark.line if i + 1 < len(keys) else len(lines)
        # Blank lines and comments at column 0 before the next key belong to the file, not to this value.
        while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
            end -= 1
        if name in spans and name in ("tags", CARD_BLOCK_KEY):
            raise CardError(f"README.md front matter has the key {name!r} twice; remove one")
        spans.setdefault(name, (start, end))
    return spans


def _with_tag(tags: Any) -> list[Any] | None:
    """The new tags value, or None when the tag is already there."""
    if tags is None:
        return [TASK2VEC_TAG]
    if isinstance(tags, str):
        return None if tags == TASK2VEC_TAG else [tags, TASK2VEC_TAG]
    if isinstance(tags, list):
        return None if TASK2VEC_TAG in tags else [*tags, TASK2VEC_TAG]
    raise CardError(f"README.md 'tags' must be a list, found {type(tags).__name__}; fix the card")


def _edit_front_matter(card: ParsedCard, entries: list[dict[str, Any]],
                       extra: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """New YAML text and the metadata it must parse to.

    ``extra``: standard fields added only where the card does not have them (the owner's
    values are never changed).
    """
    nl = card.newline
    expected = copy.deepcopy(card.metadata)
    expected[CARD_BLOCK_KEY] = entries
    added = {k: v for k, v in (extra or {}).items() if k not in card.metadata}
    expected.update(added)
    new_tags = _with_tag(card.metadata.get("tags"))
    if new_tags is not None:
        expected["tags"] = new_tags

    lines = _split_lines(card.yaml_text)
    keys = _top_level(card.yaml_text)
    spans = _key_spans(lines, keys)
    nodes = {name: v for name, _, v in keys}
    new_keys: list[str] = []  # top-level keys the card lacks, dumped
    edits: list[tuple[int, int, str]] = []  # (first line, end line, replacement text)

    if new_tags is not None:
        tag_node = nodes.get("tags")
        if "tags" not in spans:
            new_keys.append(_dump({"tags": new_tags}, nl))
        elif _is_simple_block_seq(tag_node, lines):
            # Add one item line under the last one: the rest of the list stays as written.
            last = tag_node.value[-1]
            line = lines[last.start_mark.line]
            indent = line[: len(line) - len(line.lstrip(" "))]
            at = last.end_mark.line + 1 if last.end_mark.column > 0 else last.end_mark.line
            edits.append((at, at, indent + _dump([TASK2VEC_TAG], nl)))
        else:
            s, e = spans["tags"]
            edits.append((s, e, _dump({"tags": new_tags}, nl)))

    new_keys.extend(_dump({k: v}, nl) for k, v in added.items())
    block = _dump({CARD_BLOCK_KEY: entries}, nl)
    if CARD_BLOCK_KEY in spans:
        s, e = spans[CARD_BLOCK_KEY]
        edits.append((s, e, block))
    else:
        new_keys.append(block)

    if new_keys:
        # New keys go at the end, except after a final block scalar (| or >): its value
        # would gain the line break that the end of the front matter cuts off.
        at = len(lines)
        if keys and isinstance(keys[-1][2], yaml.ScalarNode) and keys[-1][2].style in ("|", ">"):
            at = keys[-1][1].start_mark.line
        # Listed first: at equal positions, edits applied later land above earlier ones.
        edits.insert(0, (at, at, "".join(new_keys)))

    # Bottom-up so line indices stay valid; at equal starts the replacement goes first.
    for s, e, chunk in sorted(edits, key=lambda x: (x[0], x[1]), reverse=True):
        if e == len(lines) and (not lines or not lines[-1].endswith(("\n", "\r"))):
            # The edit reaches the end, whose last line has no break (the closing --- brings it).
            if s == e and lines:
                lines[-1] += nl
            chunk = chunk[: -len(nl)] if chunk.endswith(nl) else chunk
        lines[s:e] = [chunk]
    return "".join(lines), expected


def _is_simple_block_seq(node: yaml.Node | None, lines: list[str]) -> bool:
    """A block list of plain one-line scalars: we can add one item line without touching the rest."""
    if not isinstance(node, yaml.SequenceNode) or node.flow_style or not node.value:
        return False
    seen = set()
    for item in node.value:
        if not isinstance(item, yaml.ScalarNode) or item.style not in (None, "", "'", '"'):
            return False
        if item.start_mark.line != item.end_mark.line or item.start_mark.line in seen:
            return False
        seen.add(item.start_mark.line)
        if not lines[item.start_mark.line].lstrip(" ").startswith("-"):
            return False
    return True


# -- body section ---------------------------------------------------------------------


def _marker_re(marker: str) -> re.Pattern[str]:
    return re.compile(r"^[ \t]*" + re.escape(marker) + r"[ \t]*(?:\r\n|\r|\n|$)", re.MULTILINE)


def _edit_body(body: str, section: str, nl: str) -> str:
    begins = list(_marker_re(SECTION_BEGIN).finditer(body))
    ends = list(_marker_re(SECTION_END).finditer(body))
    inner = "\n".join(section.strip().splitlines()).replace("\n", nl)  # the card's own line breaks
    block = f"{SECTION_BEGIN}{nl}{inner}{nl}{SECTION_END}{nl}"
    if not begins and not ends:
        if not body:
            return block
        sep = nl if body.endswith(("\n", "\r")) else nl + nl
        return body + sep + block
    if len(begins) != 1 or len(ends) != 1 or ends[0].start() < begins[0].end():
        raise CardError(
            f"README.md has unmatched {SECTION_BEGIN} / {SECTION_END} markers; "
            "keep exactly one pair (or none) and retry"
        )
    end_break = ends[0].group(0)[len(ends[0].group(0).rstrip("\r\n")) :]
    return body[: begins[0].start()] + block[: len(block) - len(nl)] + end_break + body[ends[0].end() :]


def new_card(entries: list[dict[str, Any]], repo_id: str, section: str,
             extra: dict[str, Any] | None = None) -> str:
    """A whole README for a repo that has none, from the packaged model card template.

    ``extra``: the Hub's standard fields when known (``library_name``, ``datasets``,
    ``base_model``, ``license``), placed before our block.
    """
    from huggingface_hub import ModelCard, ModelCardData

    meta = {**(extra or {}), "tags": [TASK2VEC_TAG], CARD_BLOCK_KEY: entries}
    card = ModelCard.from_template(
        ModelCardData(**meta),
        template_str=template_text("modelcard.md"),
        model_title=md(repo_id.split("/")[-1]),
        repo_id=md(repo_id),
        task2vec_section=f"{SECTION_BEGIN}\n{section.strip()}\n{SECTION_END}",
    )
    # The template renders the body; the front matter is dumped by our dumper so that
    # values a YAML 1.2 reader would mistype are quoted, as in edited cards.
    return "---\n" + _dump(meta, "\n") + "---\n\n" + card.text.lstrip("\r\n")


def update_card(text: str | None, entries: list[dict[str, Any]], repo_id: str,
                extra: dict[str, Any] | None = None) -> str:
    """The card with our block, tag and section set to ``entries``; all else unchanged.

    ``extra`` (the Hub's standard fields when known): a new card states them all; an
    existing card gains only those it lacks.

    The result is parsed again and must give exactly the intended metadata and body,
    otherwise CardError is raised and nothing should be written.
    """
    section = render_section(entries, repo_id)
    if not text or not text.strip():
        out = new_card(entries, repo_id, section, extra)
        expected = {**(extra or {}), "tags": [TASK2VEC_TAG], CARD_BLOCK_KEY: entries}
        _verify(out, expected, None)
        return out
    card = parse_card(text)
    nl = card.newline
    body = _edit_body(card.body, section, nl)
    if card.has_front_matter:
        yaml_text, expected = _edit_front_matter(card, entries, extra)
        out = card.head + yaml_text + card.tail + body
    else:
        expected = {**(extra or {}), "tags": [TASK2VEC_TAG], CARD_BLOCK_KEY: entries}
        out = "---" + nl + _dump(expected, nl) + "---" + nl + body
    _verify(out, expected, body)
    return out


def _verify(out: str, expected: dict[str, Any], body: str | None) -> None:
    try:
        got = parse_card(out)
    except CardError as exc:
        raise CardError(f"internal error: the edited card does not parse ({exc}); nothing was written") from exc
    if got.metadata != expected or (body is not None and got.body != body):
        raise CardError(
            "internal error: editing the card would change more than the task2vec block; nothing was written. "
            "Please report this card's front matter."
        )
