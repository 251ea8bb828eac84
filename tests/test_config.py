"""Config errors name the file, the dotted key, the value found and what is allowed."""
import pytest

from encoder.typed_config import ConfigError
from jobs.common import load_config
from jobs.embed import EmbedConfig, main


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_default_config_loads():
    cfg = load_config(EmbedConfig, "conf/embed.yaml")
    # passthrough is empty so the default config runs on any table with id and text (issue 6, part 8)
    assert cfg.encoder.quantization == "binary" and cfg.input.passthrough == ()


@pytest.mark.parametrize("text,key,allowed", [
    ("input: {path: x}\nencoder: {pooling: maxx}", "encoder.pooling", "'cls', 'mean', 'max'"),
    ("input: {path: x}\nencoder: {quantization: int4}", "encoder.quantization", "'binary', 'int8', 'fp16', 'fp32'"),
    ("input: {path: x, format: xml}", "input.format", "'parquet', 'jsonl', 'csv', 'tsv'"),
    ("input: {path: x}\nencoder: {thresholds: mean}", "encoder.thresholds", "'zero', 'calibrated'"),
    ("input: {path: x}\nencoder: {layers: first}", "encoder.layers", "'last', 'last4', 'all'"),
])
def test_bad_choice_names_key_and_allowed_values(tmp_path, text, key, allowed):
    with pytest.raises(ConfigError) as exc:
        load_config(EmbedConfig, write(tmp_path, text))
    assert f"{key} " in str(exc.value) and allowed in str(exc.value) and "c.yaml" in str(exc.value)


def test_unknown_key_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"output\.pth is not a known key"):
        load_config(EmbedConfig, write(tmp_path, "input: {path: x}\noutput: {pth: y}"))


def test_missing_required_key(tmp_path):
    with pytest.raises(ConfigError, match=r"input\.path is required"):
        load_config(EmbedConfig, write(tmp_path, "input: {format: jsonl}"))


def test_wrong_type(tmp_path):
    with pytest.raises(ConfigError, match=r"encoder\.max_length = 'long'; expected an integer"):
        load_config(EmbedConfig, write(tmp_path, "input: {path: x}\nencoder: {max_length: long}"))


def test_overrides_apply_and_are_validated(tmp_path):
    path = write(tmp_path, "input: {path: x}")
    cfg = load_config(EmbedConfig, path, ["encoder.layers=[-1, -2]", "output.keep_runs=3"])
    assert cfg.encoder.features.layers == (-1, -2) and cfg.output.keep_runs == 3
    with pytest.raises(ConfigError, match=r"output\.max_quarantine_fraction = 2.0; expected 0..1"):
        load_config(EmbedConfig, path, ["output.max_quarantine_fraction=2"])


def test_yaml_is_read_with_the_safe_loader(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(EmbedConfig, write(tmp_path, "input: !!python/object/apply:os.system ['true']"))


def test_cli_reports_config_errors_with_exit_code_2(tmp_path, capsys):
    assert main(["--config", write(tmp_path, "input: {path: x}\nencoder: {pooling: maxx}")]) == 2
    assert "encoder.pooling = 'maxx'" in capsys.readouterr().err


def test_the_feature_settings_keys_sit_directly_under_encoder_and_round_trip():
    """FeatureSettings is embedded inline: the YAML keeps ``encoder.layers`` (not ``encoder.features.layers``), an
    unknown key still names the allowed ones, and ``to_data`` is the inverse of ``build``."""
    from encoder.encoder_config import EncoderConfig
    from encoder.features import FeatureSettings, settings_keys
    from encoder.typed_config import ConfigError, build, to_data

    cfg = build(EncoderConfig, {"layers": [-1], "pooling": "max", "quantization": "int8"}, "t.yaml", "encoder.")
    assert cfg.features == FeatureSettings(layers=(-1,), pooling="max") and cfg.quantization == "int8"
    assert build(EncoderConfig, to_data(cfg), "again") == cfg
    assert set(settings_keys()) <= set(to_data(cfg))
    with pytest.raises(ConfigError, match=r"encoder\.features is not a known key; expected one of .*layers"):
        build(EncoderConfig, {"features": {"layers": "last"}}, "t.yaml", "encoder.")
