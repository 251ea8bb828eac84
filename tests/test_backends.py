"""The encoder backends (torch | onnx | onnx_int8): graphs exported through the one forward function, cached per
model and settings, in the spec, and refused where they do not belong."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from encoder.backends import INT8_VARIANTS, backend_recipe
from encoder.encode import FeatureExtractor
from encoder.encoder_config import EncoderConfig
from encoder.features import FeatureSettings
from encoder.spec import FeatureSpec, SpecMismatchError
from encoder.typed_config import ConfigError

from .conftest import SAMPLE

TEXTS = ["the cat sat on the mat", "a dog", "the cat and the dog sat on a very big mat today", "a dog", "mat"]


def _fx(loaded, backend: str, cache: Path, **settings) -> FeatureExtractor:
    return FeatureExtractor(loaded, EncoderConfig(features=FeatureSettings(backend=backend, **settings),
                                                  graph_cache=str(cache), token_budget=16))


@pytest.mark.parametrize("layers, combine, pooling", [("last4", "mean", "mean"), ("all", "concat", "max"),
                                                      ("last", "mean", "cls")])
def test_the_onnx_graph_computes_the_torch_features(tiny_loaded, tmp_path, layers, combine, pooling):
    torch_fx = _fx(tiny_loaded, "torch", tmp_path, layers=layers, layer_combine=combine, pooling=pooling)
    onnx_fx = _fx(tiny_loaded, "onnx", tmp_path, layers=layers, layer_combine=combine, pooling=pooling)
    a, b = torch_fx.features(TEXTS).values, onnx_fx.features(TEXTS).values
    assert a.shape == b.shape == (len(TEXTS), torch_fx.dim)
    np.testing.assert_allclose(b, a, atol=1e-5)


def test_a_padded_batch_through_the_graph_equals_torch(tiny_loaded, tmp_path):
    """The pipeline feeds one-length batches, but the graph must honour the mask like the forward function does."""
    import torch

    from encoder.forward import batch_features, pad_ids

    fx = _fx(tiny_loaded, "onnx", tmp_path)
    rows = fx.tokenize(TEXTS)[0]
    ids, mask = pad_ids(rows, 0)
    assert (mask == 0).any()
    with torch.inference_mode():
        want = batch_features(tiny_loaded.model, rows, 0, fx.settings).numpy()
    np.testing.assert_allclose(fx.runner(ids.numpy(), mask.numpy()), want, atol=1e-5)


def test_long_text_windows_go_through_the_backend_like_torch(tiny_loaded, tmp_path):
    long = " ".join(["the cat sat on the mat"] * 12)
    kw = dict(long_text="chunks", chunk_tokens=16, chunk_stride=10)
    a = _fx(tiny_loaded, "torch", tmp_path, **kw).features([long, "a dog"])
    b = _fx(tiny_loaded, "onnx", tmp_path, **kw).features([long, "a dog"])
    np.testing.assert_allclose(b.values, a.values, atol=1e-5)
    assert (a.n_tokens == b.n_tokens).all()


def test_int8_graphs_give_codes_that_decode_close_to_torch(tmp_path):
    from encoder.model import load_encoder

    real_loaded = load_encoder("package")       # threads left as they are (the session's real_loaded sets 2)
    texts = pq.read_table(SAMPLE).column("text").to_pylist()[:64]
    ref = FeatureExtractor(real_loaded).features(texts).values
    for variant in INT8_VARIANTS:
        from encoder.onnx_graph import runner_for

        settings = FeatureSettings(backend="onnx_int8").resolve(real_loaded.num_layers)
        fx = FeatureExtractor(real_loaded, EncoderConfig(features=FeatureSettings(backend="onnx_int8")),
                              runner=runner_for(real_loaded, settings, 2, str(tmp_path), variant))
        x = fx.features(texts).values
        cos = (x * ref).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() > 0.9, variant
        spec = FeatureSpec(model=dict(real_loaded.fingerprint), features=fx.settings, dim=fx.dim,
                           quantization="binary")
        codes = spec.encode_features(x)
        assert codes.shape == (len(texts), 48)
        agree = (spec.decode(codes) == np.where(ref > 0, 1.0, -1.0)).mean()
        assert agree > 0.85, variant           # int8 changes some bits, not most of them
    int8 = (tmp_path).glob("onnx_int8-*/graph.onnx")
    sizes = [p.stat().st_size for p in int8]
    fp32_size = 4 * sum(p.numel() for p in real_loaded.model.parameters())
    assert sizes and max(sizes) < fp32_size / 2   # int8 weights: a graph a third of the fp32 one


def test_graphs_are_built_once_and_a_damaged_one_is_rebuilt(tiny_loaded, tmp_path, monkeypatch):
    from encoder import onnx_graph

    first = _fx(tiny_loaded, "onnx", tmp_path).runner.path
    calls = []
    real = onnx_graph.export_graph
    monkeypatch.setattr(onnx_graph, "export_graph", lambda *a: (calls.append(1), real(*a)))
    assert _fx(tiny_loaded, "onnx", tmp_path).runner.path == first and calls == []   # found in the cache
    other = _fx(tiny_loaded, "onnx", tmp_path, pooling="max").runner.path              # other pooling: other graph
    assert other != first and calls == [1]
    record = json.loads((first.parent / "graph.json").read_text())
    assert record["key"]["backend"] == "onnx" and record["key"]["model_sha256"] == tiny_loaded.fingerprint["sha256"]
    first.write_bytes(first.read_bytes()[:1000])                                      # half-copied
    fx = _fx(tiny_loaded, "onnx", tmp_path)
    assert calls == [1, 1] and fx.runner.path == first
    np.testing.assert_allclose(fx.features(TEXTS).values, _fx(tiny_loaded, "torch", tmp_path).features(TEXTS).values,
                               atol=1e-5)


def test_the_backend_is_part_of_the_spec_and_a_torch_spec_is_unchanged(tiny_loaded, tmp_path):
    from encoder.build_spec import build_spec

    specs = {}
    for backend in ("torch", "onnx", "onnx_int8"):
        cfg = EncoderConfig(features=FeatureSettings(backend=backend), graph_cache=str(tmp_path))
        specs[backend] = build_spec(cfg, FeatureExtractor(tiny_loaded, cfg))
        folder = specs[backend].save(tmp_path / backend)
        meta = json.loads(folder.read_text())
        assert ("backend" in meta) == (backend != "torch")
        if backend != "torch":
            assert meta["backend"] == backend and meta["backend_recipe"] == backend_recipe(backend)
        assert FeatureSpec.load(tmp_path / backend).fingerprint == specs[backend].fingerprint
    assert len({s.fingerprint for s in specs.values()}) == 3
    assert "backend" in specs["torch"].differences(specs["onnx_int8"])
    with pytest.raises(SpecMismatchError, match="backend"):
        FeatureExtractor(tiny_loaded, EncoderConfig()).check_spec(specs["onnx_int8"])
    # a spec whose int8 graph another recipe built is refused on load, naming both recipes
    meta = json.loads((tmp_path / "onnx_int8" / "feature_spec.json").read_text())
    meta["backend_recipe"] = "ort-dynamic-qint8/some-older-recipe"
    with pytest.raises(ValueError, match="some-older-recipe"):
        FeatureSpec.from_json_dict(meta)


def test_backend_settings_are_checked_at_the_edge(tiny_loaded):
    from encoder.typed_config import build

    with pytest.raises(ConfigError, match=r"encoder.backend.*'torch', 'onnx', 'onnx_int8'"):
        build(EncoderConfig, {"backend": "onnx_int9"}, "x.yaml", "encoder.")
    with pytest.raises(ConfigError, match="encoder.backend"):
        build(EncoderConfig, {"backend": "onnx", "device": "cuda"}, "x.yaml", "encoder.")


@pytest.mark.spark
def test_an_int8_table_refuses_heads_of_the_torch_spec_and_incremental_runs_keep_the_backend(pipeline, tmp_path):
    from jobs import apply_heads, embed
    from jobs.common import load_config

    small = tmp_path / "small.parquet"
    pq.write_table(pq.read_table(SAMPLE).slice(0, 60), small)
    out = tmp_path / "int8"
    sets = [f"input.path={small}", f"output.path={out}", "encoder.backend=onnx_int8",
            f"encoder.graph_cache={tmp_path / 'graphs'}"]
    manifest = embed.run(load_config(embed.EmbedConfig, "conf/embed.yaml", sets))
    spec = FeatureSpec.load(out)
    assert spec.features.backend == "onnx_int8" and manifest["rows"]["written"] == 60
    from jobs import describe

    assert f"backend `onnx_int8`, graph recipe `{backend_recipe('onnx_int8')}`" in describe.describe(out)
    # the table's codes are the library's int8 codes of the same texts
    table = pq.read_table(out / "embeddings").sort_by("id")
    from encoder.model import load_encoder
    from encoder.quantize import codes_from_column

    fx = FeatureExtractor(load_encoder("package"), EncoderConfig(features=FeatureSettings(backend="onnx_int8"),
                                                                   graph_cache=str(tmp_path / "graphs")))
    texts = dict(zip(*pq.read_table(small, columns=["id", "text"]).to_pydict().values()))
    want = fx.encode([texts[i] for i in table.column("id").to_pylist()], spec).codes
    np.testing.assert_array_equal(codes_from_column(table.column("embedding"), spec.n_bytes), want)
    # heads trained on the torch table are refused on it
    cfg = load_config(apply_heads.ApplyHeadsConfig, "conf/apply_heads.yaml", [
        f"embeddings={out}", f"heads={pipeline['heads']}", f"output.path={tmp_path / 'pred'}"])
    with pytest.raises(SpecMismatchError, match="not comparable"):
        apply_heads.run(cfg)
    # a nightly run on top of it with the torch backend is refused, naming the setting
    with pytest.raises(SpecMismatchError, match="backend"):
        embed.run(load_config(embed.EmbedConfig, "conf/embed.yaml", [sets[0], sets[1], "encoder.backend=torch"]))
    assert FeatureSpec.load(out).fingerprint == spec.fingerprint


def test_tuning_refuses_an_inference_backend():
    from jobs.common import load_config
    from jobs.train_encoder import TrainEncoderConfig

    with pytest.raises(ConfigError, match="encoder.backend.*tuning trains the torch model"):
        load_config(TrainEncoderConfig, "conf/train_encoder.yaml", ["encoder.backend=onnx_int8"])
