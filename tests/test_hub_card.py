"""Card editing: only our YAML block, our tag and our section change; hostile cards are refused."""

from __future__ import annotations

import pytest
import yaml

from t2v_hub.errors import CardError
from t2v_hub.hub.card import (
    SECTION_BEGIN,
    SECTION_END,
    md,
    parse_card,
    read_entries,
    render_section,
    template_text,
    update_card,
)

SHA = "ab" * 32


def entry(probe: str = "tf_efficientnet_lite0", **over: object) -> dict:
    e = {
        "probe": probe,
        "file": f"task2vec/{probe}.safetensors",
        "sha256": SHA,
        "dim": 16,
        "method": "montecarlo",
        "dataset": "fashion_mnist",
        "dataset_revision": None,
        "num_samples": 1000,
        "norm": 1.5,
        "layout_hash": "1e5",
        "weights_sha256": "w",
    }
    e.update(over)
    return e


OWNER_CARD = """---
# Owner's comment: keep me
license: apache-2.0   # trailing comment
language:
- en
tags:
  - image-classification   # why
  - timm
datasets: [fashion_mnist, "mnist"]
widget: null
model-index:
- name: my-model
  results: []
description: |
  literal block
  # not a comment
---

# My model

Some *body* text with trailing spaces{TRAILING}
and a line without newline at the end""".replace("{TRAILING}", "   ")


def body_of(text: str) -> str:
    return parse_card(text).body


def test_update_keeps_other_keys_comments_and_body_byte_for_byte() -> None:
    out = update_card(OWNER_CARD, [entry()], "org/m")
    before, after = parse_card(OWNER_CARD), parse_card(out)
    # Every other key keeps its value; tags only gain ours; our block is exactly the entries.
    for key, value in before.metadata.items():
        if key != "tags":
            assert after.metadata[key] == value
    assert after.metadata["tags"] == ["image-classification", "timm", "task2vec"]
    assert after.metadata["task2vec"] == [entry()]
    # Comments and formatting of the owner's YAML survive verbatim.
    for line in OWNER_CARD.splitlines()[1:17]:
        assert line in out.splitlines()
    # The body is the old body plus our section appended; nothing before it moved.
    assert after.body.startswith(before.body)
    assert SECTION_BEGIN in after.body and SECTION_END in after.body
    # Layout of the block: our value dumped by the YAML library, strings YAML 1.2 would mistype are quoted.
    assert "layout_hash: '1e5'" in out


def test_existing_card_gains_only_the_standard_fields_it_lacks() -> None:
    extra = {"license": "mit", "datasets": ["org/other"], "library_name": "timm", "base_model": "timm/x"}
    out = update_card(OWNER_CARD, [entry()], "org/m", extra)
    meta = parse_card(out).metadata
    # The owner's values stay (license, datasets); only absent fields are added.
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["fashion_mnist", "mnist"]
    assert meta["library_name"] == "timm" and meta["base_model"] == "timm/x"
    for line in OWNER_CARD.splitlines()[1:17]:
        assert line in out.splitlines()
    assert update_card(out, [entry()], "org/m", extra) == out  # idempotent
    bare = update_card("# just a body\n", [entry()], "org/m", {"license": "mit"})
    assert parse_card(bare).metadata["license"] == "mit" and parse_card(bare).body.startswith("# just a body")


def test_second_update_replaces_only_our_block_and_section() -> None:
    once = update_card(OWNER_CARD, [entry()], "org/m")
    twice = update_card(once, [entry(), entry("resnet18", norm=2.0)], "org/m")
    assert parse_card(twice).metadata["task2vec"] == [entry(), entry("resnet18", norm=2.0)]
    assert parse_card(twice).metadata["tags"].count("task2vec") == 1
    # Text before our section and after it is unchanged between the two versions.
    b1, b2 = body_of(once), body_of(twice)
    assert b1[: b1.index(SECTION_BEGIN)] == b2[: b2.index(SECTION_BEGIN)]
    assert b1[b1.index(SECTION_END) :] == b2[b2.index(SECTION_END) :]
    assert "resnet18" in b2
    # Same entries again: the card does not change at all (idempotent).
    assert update_card(twice, [entry(), entry("resnet18", norm=2.0)], "org/m") == twice


def test_section_in_the_middle_keeps_text_after_it() -> None:
    card = f"---\nlicense: mit\n---\nintro\n\n{SECTION_BEGIN}\nold text\n{SECTION_END}\n\n## Later section\nkeep\n"
    out = update_card(card, [entry()], "org/m")
    assert out.startswith("---\nlicense: mit\n")
    assert out.endswith(f"{SECTION_END}\n\n## Later section\nkeep\n")
    assert "old text" not in out and "intro\n\n" + SECTION_BEGIN in out


def test_crlf_card_stays_crlf() -> None:
    card = "---\r\nlicense: mit\r\ntags:\r\n- a\r\n---\r\nbody\r\n"
    out = update_card(card, [entry()], "org/m")
    assert "\n" not in out.replace("\r\n", "")
    assert parse_card(out).metadata["tags"] == ["a", "task2vec"]
    assert out.startswith("---\r\nlicense: mit\r\ntags:\r\n- a\r\n- task2vec\r\n")


@pytest.mark.parametrize(
    "tags_yaml, expected",
    [
        ("tags: [a, b]", ["a", "b", "task2vec"]),
        ("tags: a", ["a", "task2vec"]),
        ("tags:", ["task2vec"]),
        ("tags:\n- task2vec\n- a", ["task2vec", "a"]),
        ("other: 1", ["task2vec"]),
    ],
)
def test_tag_forms(tags_yaml: str, expected: list[str]) -> None:
    out = update_card(f"---\n{tags_yaml}\n---\nbody\n", [entry()], "org/m")
    assert parse_card(out).metadata["tags"] == expected


def test_card_without_front_matter_and_empty_card() -> None:
    out = update_card("# Title\n\ntext\n", [entry()], "org/m")
    parsed = parse_card(out)
    assert parsed.metadata == {"tags": ["task2vec"], "task2vec": [entry()]}
    assert parsed.body.startswith("# Title\n\ntext\n")
    for empty in (None, "", "  \n"):
        new = update_card(empty, [entry()], "org/my-model")
        p = parse_card(new)
        assert p.metadata == {"tags": ["task2vec"], "task2vec": [entry()]}
        assert "# my-model" in p.body and SECTION_BEGIN in p.body and "Task embedding" in p.body


def test_new_card_comes_from_the_model_card_template() -> None:
    from huggingface_hub import ModelCard

    out = update_card(None, [entry()], "org/m")
    card = ModelCard(out)  # the Hub's own parser reads it
    assert card.data.to_dict()["task2vec"] == [entry()] and "task2vec" in card.data.tags
    assert "t2v-hub attach" in template_text("modelcard.md")


def test_rendered_section_escapes_hostile_values() -> None:
    evil = entry(probe="x-->\n<script>alert(1)</script>|", dataset="[link](javascript:x) `code`")
    text = render_section([evil], "org/m")
    assert "<script>" not in text and "-->" not in text and "](javascript" not in text
    assert "&lt;script&gt;" in text
    row = [line for line in text.splitlines() if line.startswith("| x")][0]
    assert row.count(" | ") == 7  # the pipe in the value did not add a column
    assert md("a\x00b\nc") == "a b c"


def test_nearest_tasks_are_listed() -> None:
    text = render_section([entry(nearest=[{"task": "mnist", "distance": 0.25}])], "org/m")
    assert "Nearest known tasks" in text and "mnist: distance 0.250" in text


@pytest.mark.parametrize(
    "front",
    [
        "license: [unclosed",
        "a: b\n  c: d: e",
        "- just\n- a list",
        "!!python/object/apply:os.system ['echo pwned']",
        "x: !!python/object/apply:os.system ['touch /tmp/t2v-pwned']",
        "x: !!python/name:os.system",
    ],
)
def test_malformed_or_unsafe_yaml_is_refused(front: str, tmp_path) -> None:
    card = f"---\n{front}\n---\nbody\n"
    with pytest.raises(CardError):
        update_card(card, [entry()], "org/m")
    import os

    assert not os.path.exists("/tmp/t2v-pwned")


def test_malformed_task2vec_block_is_refused() -> None:
    for block in ("task2vec: 3", "task2vec:\n- probe: p", "task2vec:\n- {probe: p, file: f, sha256: nothex}"):
        meta = yaml.safe_load(block)
        with pytest.raises(CardError):
            read_entries(meta)


def test_unmatched_markers_and_duplicate_keys_are_refused() -> None:
    with pytest.raises(CardError, match="markers"):
        update_card(f"body\n{SECTION_BEGIN}\nno end\n", [entry()], "org/m")
    with pytest.raises(CardError, match="markers"):
        update_card(f"{SECTION_END}\nx\n{SECTION_BEGIN}\n", [entry()], "org/m")
    with pytest.raises(CardError, match="twice"):
        update_card("---\ntags: [a]\ntags: [b]\n---\n", [entry()], "org/m")


def test_size_limits() -> None:
    big_body = "---\nlicense: mit\n---\n" + ("lorem ipsum " * 80 + "\n") * 10_900  # ~10 MB of body
    assert len(big_body) > 10_000_000
    out = update_card(big_body, [entry()], "org/m")
    assert out.startswith("---\nlicense: mit\ntags:\n- task2vec\ntask2vec:\n")
    assert parse_card(out).body.startswith(parse_card(big_body).body)
    with pytest.raises(CardError, match="front matter"):
        update_card("---\n" + "k: " + "v" * 1_100_000 + "\n---\n", [entry()], "org/m")
    with pytest.raises(CardError, match="limit"):
        update_card("x" * (16 * 1024 * 1024 + 1), [entry()], "org/m")


def test_packaged_templates_match_cards_folder() -> None:
    from pathlib import Path

    cards = Path(__file__).resolve().parents[1] / "cards"
    for name in ("task2vec_section.md", "modelcard.md"):
        assert (cards / name).read_text(encoding="utf-8") == template_text(name), name
