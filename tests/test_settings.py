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
from edge_runtime.replay.selection import SELECTIONS
from edge_runtime.settings import (
    REPLAY_FEATURE_CODECS,
    REPLAY_SELECTIONS,
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
                                            "EDGE_RUNTIME_REPLAY_CODEC": "pq"})
    assert Settings.from_json(settings.to_json()) == settings
    with pytest.raises(SettingsError, match="training.epochs"):
        Settings.from_json(settings.to_json().replace('"epochs": 10', '"epochs": 0'))


def test_settings_name_the_codecs_the_store_has():
    assert REPLAY_FEATURE_CODECS == FEATURE_CODECS
    assert REPLAY_SELECTIONS == SELECTIONS


def test_replay_settings_are_validated_by_key():
    settings = load_settings(None, environ={"EDGE_RUNTIME_REPLAY_BUDGET_BYTES": "1000000",
                                            "EDGE_RUNTIME_REPLAY_SELECTION": "random"})
    assert (settings.replay.budget_bytes, settings.replay.selection) == (1_000_000, "random")
    for key, value, message in (("BUDGET_BYTES", "0", "replay.budget_bytes"),
                                ("SAMPLES", "-1", "replay.samples"),
                                ("SELECTION", "herding", "replay.selection")):
        with pytest.raises(SettingsError, match=message):
            load_settings(None, environ={f"EDGE_RUNTIME_REPLAY_{key}": value})


def test_training_allocator_is_validated():
    assert load_settings(None, environ={}).training.allocator == "tcmalloc"
    chosen = load_settings(None, environ={"EDGE_RUNTIME_TRAINING_ALLOCATOR": "system"})
    assert chosen.training.allocator == "system"
    with pytest.raises(SettingsError, match="training.allocator must be tcmalloc or system"):
        load_settings(None, environ={"EDGE_RUNTIME_TRAINING_ALLOCATOR": "jemalloc"})


def test_keys_that_moved_still_start_the_daemon(tmp_path):
    """An operator's config is kept across upgrades: the old replay keys still work."""
    old = tmp_path / "config.toml"
    old.write_text('[training]\ncodec = "uint8_channel"\nreplay_samples = 50\n')
    settings = load_settings(old, environ={})
    assert (settings.replay.codec, settings.replay.samples) == ("uint8_channel", 50)
    env = load_settings(None, environ={"EDGE_RUNTIME_TRAINING_CODEC": "fp16"})
    assert env.replay.codec == "fp16"
