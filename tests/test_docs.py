"""The README's list of differences from diffusers is the class docstring's list."""

from __future__ import annotations

import re
from pathlib import Path

import kdpm2.flow
import kdpm2.scheduler

README = Path(__file__).resolve().parents[1] / "README.md"
ITEM = re.compile(r"^\s*- \*\*(.+?)\*\*", re.MULTILINE)


def _section(text: str, start: str, end: str) -> str:
    tail = text[text.index(start) :]
    return tail[: tail.index(end)] if end in tail else tail


def test_readme_differences_match_the_class_docstring():
    """Every difference named in one place is named in the other, in the same order; an item
    added to the code's list without the README (or the reverse) fails here."""
    doc = kdpm2.scheduler.KDPM2AncestralDiscreteScheduler.__doc__ or ""
    in_doc = ITEM.findall(_section(doc, "**Differences from diffusers**", "**Two forms"))
    in_readme = ITEM.findall(
        _section(README.read_text(encoding="utf-8"), "## Differences from diffusers", "\n## ")
    )
    assert len(in_doc) >= 8
    assert in_doc == in_readme


def test_readme_flow_differences_match_the_flow_class_docstring():
    """If this fails, the README's list of the flow scheduler's differences from
    FlowMatchEulerDiscreteScheduler and the class docstring's list have drifted apart."""
    doc = kdpm2.flow.FlowMatchKDPM2AncestralDiscreteScheduler.__doc__ or ""
    in_doc = ITEM.findall(
        _section(doc, "**Differences from FlowMatchEulerDiscreteScheduler**", "**Two forms")
    )
    in_readme = ITEM.findall(
        _section(
            README.read_text(encoding="utf-8"),
            "### Differences from FlowMatchEulerDiscreteScheduler",
            "\n## ",
        )
    )
    assert len(in_doc) >= 6
    assert in_doc == in_readme
