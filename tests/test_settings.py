"""Settings: the shipped config template lists every key, and the worker round trip."""

from __future__ import annotations

import sys
from dataclasses import fields, is_dataclass, replace
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

from edge_runtime.replay.codecs import FEATURE_CODECS
from edge_runtime.settings import (
    REPLAY_FEATURE_CODECS,
    Settings,
    SettingsError,
    load_settings,
)

TEMPLATE = Path(__file__).resolve().parents[1] / "deploy" / "config.toml"


def keys(section, prefix: str = "") -> set[str]:
    out = set()
    for f in fields(section):
        value = getattr(section, f.name)
        out |= keys(value, f"{prefix}{f.name}.") if is_dataclass(value) else {prefix + f.name}
    return out


def toml_keys(data: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in data.items():
        out |= toml_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return out


def test_config_template_lists_every_key_with_its_default():
    assert toml_keys(tomllib.loads(TEMPLATE.read_text())) == keys(Settings())
    loaded = load_settings(TEMPLATE, environ={})
    assert replace(loaded, data_dir=Settings().data_dir) == Settings()


def test_settings_survive_the_trip_to_the_worker():
    settings = load_settings(None, environ={"EDGE_RUNTIME_API_PORT": "9001",
                                            "EDGE_RUNTIME_TRAINING_CODEC": "pq"})
    assert Settings.from_json(settings.to_json()) == settings
    with pytest.raises(SettingsError, match="training.epochs"):
        Settings.from_json(settings.to_json().replace('"epochs": 10', '"epochs": 0'))


def test_settings_name_the_codecs_the_store_has():
    assert REPLAY_FEATURE_CODECS == FEATURE_CODECS
