"""Checks on the committed params.yaml and presets that no loader-specific reading can break."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PARAM_FILES = [REPO / "params.yaml", *sorted((REPO / "presets").glob("*.yaml"))]


def yaml11_bool_words(text: str) -> list[tuple[int, str]]:
    """``(line, word)`` of every bare on/off/yes/no/y/n scalar: YAML 1.1 loaders (PyYAML, so the stages) read
    them as booleans, YAML 1.2 ones as strings, and `dvc exp run -S` rewrites params.yaml through the latter, so
    an enum value like ``mode: off`` changes type between a run and its rewritten params."""
    found = []
    nodes = [yaml.compose(text)]
    while nodes:
        node = nodes.pop()
        if isinstance(node, yaml.ScalarNode):
            if node.tag.endswith(":bool") and node.style is None and node.value.lower() not in ("true", "false"):
                found.append((node.start_mark.line + 1, node.value))
        elif isinstance(node, yaml.MappingNode):
            nodes += [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            nodes += node.value
    return sorted(found)


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.name)
def test_no_bare_yaml11_boolean_words_in_params(path: Path):
    found = yaml11_bool_words(path.read_text())
    assert not found, f"{path.name}: quote these values (line, word): {found}"


def test_the_check_finds_bare_words_and_accepts_quoted_ones_and_true_false():
    text = 'a: off\nb: "off"\nc: [yes, "no"]\nd: {e: On}\nf: true\ng: False\n'
    assert yaml11_bool_words(text) == [(1, "off"), (3, "yes"), (4, "On")]
