"""Known bad artifacts are known errors (issue 19): one line on stderr, a documented exit code, no traceback.

Model folders are ``ModelError`` (code 2), head folders ``ArtifactError`` (code 6), YAML ``ConfigError`` (code 2).
Each bad artifact is written in ``tmp_path`` from the tiny model or a saved head, then broken. No test starts a JVM:
every refusal happens before Spark would start."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from encoder.artifacts import ArtifactError
from encoder.model import ModelError, load_encoder, resolve_model_path
from encoder.spec import FeatureSpec
from encoder.typed_config import MAX_YAML_NODES, ConfigError, load_yaml
from heads.fitted import FittedHead
from heads.io import load_head, load_heads, save_head
from heads.modules import Head
from heads.tasks import TaskConfig
from jobs.errors import exit_code, one_line


def assert_known(exc: BaseException, code: int, *fragments: str) -> str:
    """The error is a known one with ``code``, reads as one line, and names what is wrong."""
    line = one_line(exc)
    assert exit_code(exc) == code, line
    assert "\n" not in line, line
    for fragment in fragments:
        assert fragment in line, line
    return line


# -- model folders ----------------------------------------------------------------------------------------------
def _pickle_only(d: Path) -> None:
    (d / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(1)}, d / "pytorch_model.bin")


def _truncated(d: Path) -> None:
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])


def _garbage(d: Path) -> None:
    (d / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))


def _missing(d: Path) -> None:
    shutil.rmtree(d)


def _remote_code(d: Path) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(model_type="evil-remote", auto_map={"AutoConfig": "configuration_evil.EvilConfig",
                                                     "AutoModel": "modeling_evil.EvilModel"})
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")


def _config_not_json(d: Path) -> None:
    (d / "config.json").write_text('{"model_type": "bert",')


def _other_tensors(d: Path) -> None:   # a valid safetensors file of other weights: transformers would fill in random
    save_file({"x": torch.zeros(2)}, str(d / "model.safetensors"))


def _no_tokenizer(d: Path) -> None:    # transformers would build a tokenizer of special tokens only
    for name in ("tokenizer.json", "vocab.txt"):
        (d / name).unlink(missing_ok=True)


MODEL_CASES = {
    "pickle_only": (_pickle_only, ["pytorch_model.bin", "only safetensors"]),
    "truncated_safetensors": (_truncated, ["model.safetensors", "not a readable safetensors file"]),
    "garbage_safetensors": (_garbage, ["model.safetensors", "not a readable safetensors file"]),
    "missing_folder": (_missing, ["not a local folder"]),
    "auto_map_unknown_model_type": (_remote_code, ["config.json", "'evil-remote'", "trust_remote_code is off"]),
    "config_not_json": (_config_not_json, ["config.json", "not valid JSON"]),
    "other_tensors": (_other_tensors, ["model.safetensors", "does not hold the weights config.json describes"]),
    "no_tokenizer": (_no_tokenizer, ["no tokenizer files"]),
}


def broken_model(tiny_model_dir: Path, tmp_path: Path, case: str) -> Path:
    d = tmp_path / f"model_{case}"
    shutil.copytree(tiny_model_dir, d)
    MODEL_CASES[case][0](d)
    return d


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_a_bad_model_folder_is_a_model_error(tiny_model_dir, tmp_path, case):
    d = broken_model(tiny_model_dir, tmp_path, case)
    with pytest.raises(ModelError) as info:
        load_encoder(str(d))
    line = assert_known(info.value, 2, "encoder.model", *MODEL_CASES[case][1])
    assert str(d) in line


@pytest.mark.parametrize("case", ["truncated_safetensors", "auto_map_unknown_model_type", "pickle_only"])
def test_train_encoder_refuses_a_bad_model_before_spark(tiny_model_dir, tmp_path, case):
    """train_encoder resolves the folder (no load) before its Spark session: the same checks apply there."""
    with pytest.raises(ModelError) as info:
        resolve_model_path(str(broken_model(tiny_model_dir, tmp_path, case)))
    assert_known(info.value, 2, *MODEL_CASES[case][1])


def test_the_embed_job_reports_a_bad_model_in_one_line_with_exit_code_2(tiny_model_dir, tmp_path, capsys):
    """Through the entry point: --dry-run loads the model on the driver before Spark starts."""
    from jobs import embed

    d = broken_model(tiny_model_dir, tmp_path, "truncated_safetensors")
    cfg = tmp_path / "embed.yaml"
    cfg.write_text(f"input: {{path: examples/goemotions_sample.parquet}}\noutput: {{path: {tmp_path / 'out'}}}\n"
                   f"encoder: {{model: {d}}}\n")
    assert embed.main(["--config", str(cfg), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("embed: ModelError: ") and "model.safetensors" in err[0], err


def test_good_model_folders_still_load(tiny_model_dir):
    assert load_encoder(str(tiny_model_dir)).hidden_size == 32
    assert resolve_model_path("package").is_dir()


# -- head folders -----------------------------------------------------------------------------------------------
DIM = 16


def spec() -> FeatureSpec:
    return FeatureSpec.of(model={"name": "m", "sha256": "0" * 64}, layers=(6,), layer_combine="concat",
                          pooling="mean", normalize=True, max_length=256, quantization="binary",
                          threshold_mode="zero", dim=DIM, scales=None)


HEADS = {"topic": (TaskConfig("topic", "multiclass", ("topic",), labels=("a", "b", "c")), 3, 0),
         "flag": (TaskConfig("flag", "binary", ("flag",), head="mlp", hidden=8), 1, 8),
         "tags": (TaskConfig("tags", "multilabel", ("t0", "t1", "t2")), 3, 0)}


def saved_heads(root: Path) -> Path:
    torch.manual_seed(0)
    for name, (task, n, hidden) in HEADS.items():
        labels = list(task.labels) or (["no", "yes"] if task.kind == "binary" else list(task.columns))
        save_head(root / name, FittedHead(task, Head(DIM, n, hidden), labels), spec())
    return root


def edit_meta(folder: Path, fn) -> None:
    meta = json.loads((folder / "head.json").read_text())
    fn(meta)
    (folder / "head.json").write_text(json.dumps(meta))


def test_saved_heads_load(tmp_path):
    assert [h.task.name for h in load_heads(saved_heads(tmp_path), spec())] == ["flag", "tags", "topic"]


def test_truncated_head_weights_are_an_artifact_error(tmp_path):
    root = saved_heads(tmp_path)
    w = root / "topic" / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:-10])
    with pytest.raises(ArtifactError) as info:
        load_heads(root, spec())
    assert_known(info.value, 6, str(w), "not a readable safetensors file")


@pytest.mark.parametrize("edit, fragments", [
    (lambda h: h.update(dim=DIM // 2), ["weights.safetensors", "out.weight has shape [3, 16]", "need [3, 8]"]),
    (lambda h: h.update(n_outputs=4), ["3 label names", "4 outputs"]),
], ids=["dim", "n_outputs"])
def test_head_json_sizes_that_disagree_with_the_weights_are_an_artifact_error(tmp_path, edit, fragments):
    root = saved_heads(tmp_path)
    edit_meta(root / "topic", lambda m: edit(m["head"]))
    with pytest.raises(ArtifactError) as info:
        load_head(root / "topic")          # without a spec: the weights themselves are checked against head.json
    assert_known(info.value, 6, *fragments)


def test_head_json_outputs_and_labels_that_agree_but_not_with_the_weights(tmp_path):
    root = saved_heads(tmp_path)
    edit_meta(root / "topic", lambda m: (m["head"].update(n_outputs=4), m.update(labels=["a", "b", "c", "d"]),
                                         m["task"].update(labels=["a", "b", "c", "d"])))
    with pytest.raises(ArtifactError) as info:
        load_heads(root, spec())
    assert_known(info.value, 6, "weights.safetensors", "out.weight has shape [3, 16]", "need [4, 16]")


def test_an_mlp_head_whose_hidden_size_disagrees_with_the_weights(tmp_path):
    root = saved_heads(tmp_path)
    edit_meta(root / "flag", lambda m: (m["head"].update(hidden=4), m["task"].update(hidden=4)))
    with pytest.raises(ArtifactError) as info:
        load_heads(root, spec())
    assert_known(info.value, 6, "first.weight has shape [8, 16]", "need [4, 16]")


def test_a_head_dim_other_than_its_spec_is_an_artifact_error(tmp_path):
    root = saved_heads(tmp_path)
    for name in HEADS:      # weights and head.json agree with each other, not with the spec they name
        task, n, hidden = HEADS[name]
        labels = json.loads((root / name / "head.json").read_text())["labels"]
        save_head(root / name, FittedHead(task, Head(DIM * 2, n, hidden), labels), spec())
    with pytest.raises(ArtifactError) as info:
        load_heads(root, spec())
    assert_known(info.value, 6, "head.dim = 32", "16 dimensions")


@pytest.mark.parametrize("name, labels, fragment", [
    ("topic", ["a", "b"], "2 label names for a multiclass head of 3 outputs; expected 3"),
    ("topic", ["a", "b", "c", "d"], "4 label names for a multiclass head of 3 outputs; expected 3"),
    ("tags", ["t0", "t1"], "2 label names for a multilabel head of 3 outputs; expected 3"),
    ("flag", ["no", "yes", "maybe"], "3 label names for a binary head of 1 output; expected 2"),
], ids=["multiclass_fewer", "multiclass_more", "multilabel_fewer", "binary_more"])
def test_label_names_other_than_the_heads_outputs_are_an_artifact_error(tmp_path, name, labels, fragment):
    """Fewer names failed inside Spark (ArrowIndexError); more published a label that is never predicted."""
    root = saved_heads(tmp_path)
    edit_meta(root / name, lambda m: (m.update(labels=labels), m["task"].update(labels=[])))
    with pytest.raises(ArtifactError) as info:
        load_heads(root, spec())
    assert_known(info.value, 6, str(root / name / "head.json"), fragment)


# -- YAML -------------------------------------------------------------------------------------------------------
def anchor_bomb(levels: int = 8, width: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    body = "\n".join("    " + line for line in lines)
    return f"input: {{path: x}}\nspark:\n  conf:\n{body}\n"


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_an_anchor_bomb_under_spark_conf_is_refused_before_it_is_built(tmp_path):
    from jobs.common import load_config
    from jobs.embed import EmbedConfig

    with pytest.raises(ConfigError) as info:
        load_config(EmbedConfig, write(tmp_path, anchor_bomb()))
    assert_known(info.value, 2, "spark.conf.a", f"expands to more than {MAX_YAML_NODES:,} values")


def test_a_self_referencing_alias_is_refused():
    with pytest.raises(ConfigError, match="expands to more than"):
        load_yaml("a: &a [*a]")


def test_a_non_scalar_spark_conf_value_is_refused(tmp_path):
    from jobs.common import load_config
    from jobs.embed import EmbedConfig

    for value, kind in (("[1, 2]", "list"), ("{a: 1}", "mapping"), ("null", "null")):
        with pytest.raises(ConfigError) as info:
            load_config(EmbedConfig, write(tmp_path, f"input: {{path: x}}\nspark: {{conf: {{spark.x: {value}}}}}"))
        assert_known(info.value, 2, f"spark.conf.spark.x is a {kind}")
    cfg = load_config(EmbedConfig, write(tmp_path, "input: {path: x}\nspark: {conf: {spark.a: 1, spark.b: true, "
                                                   "spark.c: '2g', spark.d: 0.5}}"))
    assert cfg.spark.conf == {"spark.a": 1, "spark.b": True, "spark.c": "2g", "spark.d": 0.5}


def test_a_key_given_twice_is_an_error_naming_it(tmp_path, capsys):
    from jobs import embed

    text = f"input: {{path: x}}\noutput: {{path: {tmp_path / 'out'}}}\nencoder:\n  pooling: max\n  pooling: mean\n"
    assert embed.main(["--config", write(tmp_path, text)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "encoder.pooling is given twice (line 4 and line 5)" in err[0], err
    with pytest.raises(ConfigError, match=r"spark\.conf\.spark\.a is given twice"):
        load_yaml("spark: {conf: {spark.a: 1, spark.a: 2}}")
    with pytest.raises(ConfigError, match=r"^\(yaml\): input is given twice"):
        load_yaml("input: {path: x}\ninput: {path: y}")


def test_merge_keys_may_still_be_overridden():
    """YAML's merge key: keys of a merged mapping may be given again (that is what it is for), not a duplicate."""
    data = load_yaml("base: &b {a: 1, b: 2}\nx: {<<: *b, a: 3}\ny:\n  <<: *b\n  b: 4\n")
    assert data["x"] == {"a": 3, "b": 2} and data["y"] == {"a": 1, "b": 4}


def test_invalid_yaml_is_one_line(tmp_path):
    from jobs.common import load_config
    from jobs.embed import EmbedConfig

    with pytest.raises(ConfigError) as info:
        load_config(EmbedConfig, write(tmp_path, "input: {path: x\nencoder: [\n"))
    assert_known(info.value, 2, "is not valid YAML", "line ")
