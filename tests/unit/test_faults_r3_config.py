"""Round-3 fault audit, #9 and #10 (params): a grid.truncated entry without depth, label_fractions as a number."""

from __future__ import annotations

import pytest

from chexops.config import config_from_dict
from chexops.errors import ConfigError


def _error(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_a_truncated_entry_without_depth_is_told_to_add_it_not_to_rename_itself():
    text = _error({"grid": {"truncated": {"resnet18-random-drop-1": {"family": "resnet18", "init": "random"}}}})
    assert "lacks the required key depth" in text and "resnet18-random-drop-1" in text
    assert "resnet18-random-full" not in text


def test_a_truncated_entry_without_family_or_with_a_word_for_depth_is_one_config_error():
    assert "family" in _error({"grid": {"truncated": {"x-random-drop-1": {"depth": 1, "init": "random"}}}})
    assert "depth must be int" in _error(
        {"grid": {"truncated": {"resnet18-random-drop-1": {"family": "resnet18", "init": "random", "depth": "x"}}}})


def test_label_fractions_as_a_number_is_told_to_be_a_list():
    text = _error({"grid": {"label_fractions": 0.5}})
    assert "must be a list" in text and "[0.5]" in text


def test_a_well_named_truncated_entry_still_loads():
    config = config_from_dict({"grid": {"families": ["resnet18"], "initializers": ["random"], "truncated": {
        "resnet18-random-drop-1": {"family": "resnet18", "init": "random", "depth": 1}}}})
    assert config.grid.truncated[0].depth == 1
