"""Config validation: defaults, overrides, and errors that name the key, value and expectation."""
import json

import numpy as np
import pytest
import yaml

from deepfake_workflow.config import check_values, load_config, parse_override, validate_config
from deepfake_workflow.errors import ConfigError


def test_defaults_fill_every_section():
    cfg = validate_config({})
    assert cfg["data"]["source"] == "demo"
    assert cfg["cache"]["size"] == 128 and cfg["cache"]["on_bad_image"] == "error"
    assert cfg["train"]["augment"]["hflip"] == 0.5
    assert cfg["model"]["max_params"] == 200_000_000


def test_repo_config_files_are_valid():
    for path in ["config.yaml", "configs/multi-ffdi.yaml"]:
        cfg = load_config(path)
        assert cfg["model"]["name"]


def test_dotted_override_keys_merge_into_nested_sections():
    cfg = validate_config({"train": {"epochs": 5}, "train.lr": 0.25})
    assert cfg["train"]["lr"] == 0.25 and cfg["train"]["epochs"] == 5


def test_dotted_keys_win_over_the_section_whatever_the_order():
    # Snakemake hands `--config folds__k=5` over *before* the config file's `folds:` section.
    cfg = validate_config({"folds__k": 5, "data__source": "local", "data__root": "/d",
                           "folds": {"k": 3}, "data": {"source": "demo", "root": None}})
    assert cfg["folds"]["k"] == 5 and cfg["data"]["source"] == "local" and cfg["data"]["root"] == "/d"
    cfg = validate_config({"folds": {"k": 3}, "folds__k": 5})
    assert cfg["folds"]["k"] == 5


@pytest.mark.parametrize("raw", [{"train__epochs": -1, "train": {"epochs": 4}},
                                 {"train__lr": "abc", "train": {"lr": 1.0e-3}}])
def test_command_line_values_are_validated_even_over_a_file_section(raw):
    with pytest.raises(ConfigError, match="config key 'train.(epochs|lr)'"):
        validate_config(raw)


def test_words_for_booleans_and_null_in_string_typed_keys():
    # Snakemake's --config reads values as strings: `model__pretrained=false` is not a file name.
    cfg = validate_config({"model__pretrained": "false", "data__root": "null", "train__channels_last": "true"})
    assert cfg["model"]["pretrained"] is False and cfg["data"]["root"] is None
    assert cfg["train"]["channels_last"] is True


@pytest.mark.parametrize("raw, needle", [
    ({"trian": {}}, "unknown config key 'trian' (did you mean 'train'?)"),
    ({"train": {"lrr": 0.1}}, "did you mean 'train.lr'"),
    ({"train": {"lr": -0.1}}, "'train.lr': got -0.1, expected > 0"),
    ({"train": {"epochs": 0}}, "'train.epochs': got 0, expected >= 1"),
    ({"folds": {"k": 1}}, "'folds.k': got 1, expected >= 2"),
    ({"cache": {"size": "big"}}, "'cache.size': got \"big\", expected type integer"),
    ({"cache": {"resize": "zoom"}}, "'cache.resize': got \"zoom\", expected one of"),
    ({"data": {"source": "local"}}, "'data.root'"),
    ({"data": {"source": "url"}}, "'data.urls'"),
    ({"data": {"source": "url", "urls": [{"url": "ftp://x/a.tar", "sha256": "0" * 64}]}}, "'data.urls[0].url'"),
    ({"report": {"threshold_policy": "fixed"}}, "'report.threshold_value'"),
    ({"train": {"augment": {"rrc_scale": [1.0, 0.5]}}}, "'train.augment.rrc_scale'"),
    ({"train": {"devices": 3, "batch_size": 32}}, "'train.batch_size': got 32, expected a multiple of train.devices"),
    ({"train": {"devices": 4, "batch_size": 4}}, "with at least 2 images per device"),
])
def test_bad_values_name_key_value_and_expectation(raw, needle):
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    assert needle in str(err.value)


def test_all_errors_reported_at_once():
    with pytest.raises(ConfigError) as err:
        validate_config({"train": {"lr": 0, "epochs": 0}})
    assert "train.lr" in str(err.value) and "train.epochs" in str(err.value)


def test_numbers_given_as_strings_are_read_as_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-3\n  epochs: '4'\n  ema: 'true'\n")  # PyYAML: 1e-3 is a string
    cfg = load_config(path)
    assert cfg["train"]["lr"] == 1e-3 and cfg["train"]["epochs"] == 4 and cfg["train"]["ema"] is True
    # Snakemake's --config 'train={lr: 0.01}' gives nested strings; 'cache__size' is its nested spelling.
    cfg = validate_config({"train": {"lr": "0.01"}, "cache__size": "64"})
    assert cfg["train"]["lr"] == 0.01 and cfg["cache"]["size"] == 64
    with pytest.raises(ConfigError, match="'train.lr': got \"fast\""):
        validate_config({"train": {"lr": "fast"}})


def test_load_config_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"folds": {"k": 4}}))
    cfg = load_config(path, dict([parse_override("train.lr=2.0e-4"), parse_override("cache.size=64")]))
    assert cfg["folds"]["k"] == 4 and cfg["train"]["lr"] == 2.0e-4 and cfg["cache"]["size"] == 64


def test_missing_config_file_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_config_values_are_never_evaluated():
    cfg = validate_config({"model": {"name": "__import__('os').system('false')"}})
    assert cfg["model"]["name"].startswith("__import__")  # kept as a plain string


def _stage_config(*argv):
    """The config a stage program gets from its command line (scripts/*.py parse it this way)."""
    import argparse

    from deepfake_workflow.cli import add_config_args, config_from_args

    parser = argparse.ArgumentParser()
    add_config_args(parser)
    return config_from_args(parser.parse_args(list(argv)))


def test_a_stage_reads_only_the_keys_its_rule_passed_under_both_engines(tmp_path):
    """Snakemake passes sections as JSON, dvc.yaml the file plus --keys: the same keys readable,
    the same clear error for any other key (not a silent schema default)."""
    path = tmp_path / "config.yaml"
    path.write_text("predict: {tta: hflip}\ntrain: {device: cpu, lr: 0.5}\n", encoding="utf-8")
    snakemake_style = _stage_config("--config-json", json.dumps({"predict": {"tta": "hflip"}, "train.device": "cpu"}))
    dvc_style = _stage_config("--config", str(path), "--keys", "predict,train.device")
    for config in (snakemake_style, dvc_style):
        assert config["predict"]["tta"] == "hflip" and config["predict"]["crops"] == "auto"
        assert config["train"]["device"] == "cpu"
        with pytest.raises(ConfigError, match=r"config key 'train.lr' was not passed to this stage"):
            config["train"]["lr"]
        with pytest.raises(ConfigError, match=r"config key 'model' was not passed"):
            config["model"]
    assert _stage_config("--config", str(path))["train"]["lr"] == 0.5  # by hand: the whole file


def test_check_values_uses_the_schema_rules_and_messages():
    # library calls: the same lines as a config, every problem at once, workers from the schema's $defs
    with pytest.raises(ConfigError) as err:
        check_values({"seed": -1, "cache": {"size": 4096}, "data": {"demo": {"max_size": 5000}}}, workers=0)
    assert str(err.value).splitlines() == [
        "invalid settings:",
        "  config key 'cache.size': got 4096, expected <= 2048",
        "  config key 'data.demo.max_size': got 5000, expected <= 4096",
        "  config key 'seed': got -1, expected >= 0",
        "  argument 'workers': got 0, expected >= 1",
    ]
    with pytest.raises(ConfigError, match="'data.demo.min_size': got 300, expected <= data.demo.max_size"):
        check_values({"data": {"demo": {"min_size": 300, "max_size": 200}}})  # cross-field rules too


def test_check_values_takes_python_values_as_they_are():
    check_values({"cache": {"size": np.int64(64), "max_pixels": None}}, workers=np.int32(2))
    # no coercion: a float or a string where an integer belongs would break the caller later
    for size in (64.0, "64", True):
        with pytest.raises(ConfigError, match="'cache.size'"):
            check_values({"cache": {"size": size}})
    with pytest.raises(ConfigError, match="unknown config key 'cache.sise'"):
        check_values({"cache": {"sise": 64}})
