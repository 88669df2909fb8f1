"""The one config path: option parsing, overlay, precedence (defaults < YAML < flags < -o), resume, comma lists."""

from __future__ import annotations

import pytest
from pydantic import Field

from facelab.config import StrictConfig, overlay, parse_options, read_yaml, resolve_config, resume_config
from facelab.errors import ConfigError


class Inner(StrictConfig):
    epochs: int = 10
    lr: float = 0.1


class Cfg(StrictConfig):
    store: str = "s"
    labels: list[str] | None = None
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    name: str = "plain"
    trainer: Inner = Field(default_factory=Inner)


def test_parse_options_nests_dotted_keys_and_reads_yaml_values():
    got = parse_options(["trainer.epochs=3", "trainer.lr=1e-3", "labels=[a, b]", "name=", "store=x=y", "flag=true"])
    assert got == {"trainer": {"epochs": 3, "lr": 1e-3}, "labels": ["a", "b"], "name": None, "store": "x=y",
                   "flag": True}
    assert parse_options(None) == {} and parse_options([]) == {}


@pytest.mark.parametrize("item, words", [("epochs", "KEY=VALUE"), (".x=1", "empty key"), ("a..b=1", "empty key"),
                                         ("x=[1", "not valid YAML"), ("a=1", None)])
def test_parse_options_errors_name_the_option(item, words):
    if words is None:
        assert parse_options([item]) == {"a": 1}
        return
    with pytest.raises(ConfigError, match=words):
        parse_options([item])


def test_a_key_cannot_be_both_a_value_and_a_mapping():
    with pytest.raises(ConfigError, match="already given a value"):
        parse_options(["trainer=3", "trainer.epochs=2"])


def test_overlay_merges_mappings_and_replaces_everything_else():
    base = {"a": {"x": 1, "y": 2}, "b": [1, 2], "c": 1}
    assert overlay(base, {"a": {"y": 3}, "b": [3]}) == {"a": {"x": 1, "y": 3}, "b": [3], "c": 1}
    assert base == {"a": {"x": 1, "y": 2}, "b": [1, 2], "c": 1}  # not modified
    assert overlay(base, "built") == "built"
    assert overlay({"a": 1}, {"a": {"x": 1}}) == {"a": {"x": 1}}


def test_precedence_defaults_yaml_flags_options(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("store: from-yaml\nname: from-yaml\ntrainer: {epochs: 5, lr: 0.5}\n")
    cfg = resolve_config(Cfg, yaml_file=y, flags={"name": "from-flag", "trainer.epochs": 7, "labels": None},
                         options=["trainer.epochs=9"])
    assert cfg.store == "from-yaml"  # YAML over the default
    assert cfg.name == "from-flag"  # a flag over YAML
    assert cfg.trainer.epochs == 9 and cfg.trainer.lr == 0.5  # -o over the flag; the rest of YAML's trainer kept
    assert cfg.labels is None  # a flag that was not given changes nothing
    assert resolve_config(Cfg).model_dump() == Cfg().model_dump()


def test_list_fields_take_comma_text_and_tuples_coerce():
    cfg = resolve_config(Cfg, options=["labels=Male, Smiling,", "fractions=0.8,0.1,0.1"])
    assert cfg.labels == ["Male", "Smiling"] and cfg.fractions == (0.8, 0.1, 0.1)
    assert Cfg(labels="a,b").labels == ["a", "b"] and Cfg(name="a,b").name == "a,b"  # only list fields split


@pytest.mark.parametrize("text, words", [("- a\n- b\n", "list"), ("a: [1\n", "not valid YAML"), ("42\n", "int")])
def test_read_yaml_refuses_what_is_not_a_mapping(tmp_path, text, words):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=words):
        read_yaml(p)


def test_empty_yaml_is_an_empty_mapping_and_unknown_keys_are_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("")
    assert read_yaml(p) == {}
    p.write_text("trainer: {epochz: 3}\n")
    with pytest.raises(ConfigError, match=r"trainer.epochz"):
        resolve_config(Cfg, yaml_file=p)
    with pytest.raises(ConfigError, match="expected a mapping"):
        Cfg.from_dict(["a"])  # type: ignore[arg-type]


def test_resume_config_applies_only_the_given_changes_and_writes_them_back(tmp_path):
    Cfg(name="saved", trainer=Inner(epochs=4)).save(tmp_path / "config.yaml")
    same = resume_config(Cfg, tmp_path, changes={"trainer.epochs": None})
    assert same.name == "saved" and same.trainer.epochs == 4
    more = resume_config(Cfg, tmp_path, changes={"trainer.epochs": 8})
    assert more.trainer.epochs == 8 and resume_config(Cfg, tmp_path).trainer.epochs == 8  # saved
    with pytest.raises(ConfigError, match="no config.yaml"):
        resume_config(Cfg, tmp_path / "nope")
