"""Rescoring: binary candidates re-ranked by a stored int8 column (``output.rescore: int8``).

The spec key and scales (fingerprint, reuse), the kernel against a brute-force int8 ranking of the same candidates,
the notebook index, and on a real table (the shipped sample, the real model, local Spark): the embed job's column
against the library, the neighbours job against the index, docs/search.md's and README's rescoring SQL in both
engines, the data dictionary, and a table without the column refusing ``rescore: true``."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from encoder.build_spec import build_spec
from encoder.encode import FeatureExtractor
from encoder.encoder_config import EncoderConfig
from encoder.features import FeatureSettings
from encoder.quantize import calibrate_scales, codes_from_column, quantize
from encoder.spec import FeatureSpec, SpecMismatchError
from search.index import CodeIndex
from search.kernels import rescore, top_k

from .conftest import ROOT, SAMPLE
from .oracles import brute_force_rescore

BASE = dict(model={"name": "m", "sha256": "0" * 64}, layers=(6,), layer_combine="mean", pooling="mean",
            normalize=True, max_length=256, quantization="binary", threshold_mode="zero", dim=16)


def spec_with_rescore(scales: np.ndarray | None = None) -> FeatureSpec:
    scales = np.linspace(0.01, 0.02, 16, dtype=np.float32) if scales is None else scales
    return FeatureSpec.of(**BASE, rescore="int8", rescore_scales=scales)


# -- the spec ---------------------------------------------------------------------------------------------------------
def test_rescore_is_written_only_when_on_and_is_part_of_the_fingerprint(tmp_path):
    plain, on = FeatureSpec.of(**BASE), spec_with_rescore()
    assert "rescore" not in plain.to_json_dict() and plain.to_json_dict()["arrays"] == []
    meta = on.to_json_dict()
    assert meta["rescore"] == "int8" and meta["rescore_bytes"] == 16 and meta["arrays"] == ["rescore_scales"]
    assert on.fingerprint != plain.fingerprint
    assert spec_with_rescore(on.rescore_scales * np.float32(1.001)).fingerprint != on.fingerprint
    assert plain.differences(on) == ["rescore", "rescore_scales"]
    on.save(tmp_path)
    back = FeatureSpec.load(tmp_path)
    assert back.fingerprint == on.fingerprint and back.rescore == "int8"
    np.testing.assert_array_equal(back.rescore_scales, on.rescore_scales)
    with pytest.raises(ValueError, match="re-ranks binary candidates"):
        FeatureSpec.of(**(BASE | {"quantization": "fp16"}), rescore="int8", rescore_scales=on.rescore_scales)
    with pytest.raises(ValueError, match="rescore_scales"):
        FeatureSpec.of(**BASE, rescore="int8")


def test_the_int8_column_is_the_one_quantizers_int8_path_with_the_rescore_scales():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 16)).astype(np.float32)
    spec = spec_with_rescore(calibrate_scales(x[:20]))
    col = spec.encode_rescore(x)
    np.testing.assert_array_equal(col, quantize(x, "int8", scales=spec.rescore_scales))
    np.testing.assert_array_equal(spec.encode_features(x), quantize(x, "binary"))
    back = spec.decode_rescore(col)
    assert np.abs(back - np.clip(x, -127 * spec.rescore_scales, 127 * spec.rescore_scales)).max() <= \
        spec.rescore_scales.max() / 2 + 1e-6
    with pytest.raises(ValueError, match="output.rescore=int8"):
        FeatureSpec.of(**BASE).encode_rescore(x)


def test_build_spec_calibrates_the_rescore_scales_and_thresholds_from_carries_them(tiny_model_dir, tiny_loaded,
                                                                                    tmp_path):
    texts = ["the man is playing a guitar .", "the stock market fell today", "a very good movie , not bad",
             "hello world", "someone is strumming a guitar", "what do you mean"]
    cfg = EncoderConfig(model=str(tiny_model_dir), features=FeatureSettings(layers="last"))
    fx = FeatureExtractor(tiny_loaded, cfg)
    with pytest.raises(ValueError, match="calibration sample"):
        build_spec(cfg, fx, rescore="int8")
    spec = build_spec(cfg, fx, lambda n: texts[:n], rescore="int8")
    np.testing.assert_array_equal(spec.rescore_scales, calibrate_scales(fx.features(texts).values))
    assert spec.threshold_mode == "zero" and spec.thresholds is None
    spec.save(tmp_path)
    reused = build_spec(EncoderConfig(model=str(tiny_model_dir), features=FeatureSettings(layers="last"),
                                      thresholds_from=str(tmp_path)), fx, rescore="int8")
    assert reused.fingerprint == spec.fingerprint
    with pytest.raises(SpecMismatchError, match=r"output\.rescore = 'none' but encoder\.thresholds_from"):
        build_spec(EncoderConfig(model=str(tiny_model_dir), features=FeatureSettings(layers="last"),
                                 thresholds_from=str(tmp_path)), fx)


@pytest.mark.parametrize("sets, message", [
    (["output.rescore=maybe"], "output.rescore = 'maybe'; expected one of 'none', 'int8'"),
    (["output.rescore=int8", "encoder.quantization=fp16"], "output.rescore = 'int8' re-ranks binary codes"),
])
def test_a_wrong_rescore_setting_is_a_config_error_naming_the_key(sets, message):
    from encoder.typed_config import ConfigError
    from jobs import embed
    from jobs.common import load_config

    assert load_config(embed.EmbedConfig, "conf/embed.yaml", []).output.rescore == "none"     # the default
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(embed.EmbedConfig, "conf/embed.yaml", sets)


# -- the kernel and the index -----------------------------------------------------------------------------------------
def test_rescoring_equals_a_brute_force_int8_ranking_of_the_same_candidates():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 16)).astype(np.float32)
    spec = spec_with_rescore(calibrate_scales(x[:100]))
    codes, int8 = spec.encode_features(x), spec.encode_rescore(x)
    q = x[:7] + rng.normal(scale=0.3, size=(7, 16)).astype(np.float32)
    cand, _ = top_k(spec.encode_features(q), codes, 30)
    rows, cos = rescore(q, cand, int8, 10, spec.decode_rescore)
    want_rows, want_cos = brute_force_rescore(q, cand, int8, spec.rescore_scales, 10)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(cos, want_cos, rtol=1e-5)
    assert set(rows[0]) <= set(cand[0])
    # the same candidates with every vector made equal: ties go by row
    flat = np.repeat(int8[:1], len(int8), axis=0)
    rows, _ = rescore(q, cand, flat, 10, spec.decode_rescore)
    np.testing.assert_array_equal(rows, np.sort(cand, axis=1)[:, :10])


def test_code_index_rescores_in_id_order_whatever_the_row_order_and_refuses_without_the_column():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    spec = spec_with_rescore(calibrate_scales(x))
    ids = [f"r{i:04d}" for i in range(300)]
    q = x[[5, 50]] + 0.05
    perm = rng.permutation(300)
    a = CodeIndex(pa.array(ids), spec.encode_features(x), spec, int8=spec.encode_rescore(x))
    b = CodeIndex(pa.array([ids[i] for i in perm]), spec.encode_features(x[perm]), spec,
                  int8=spec.encode_rescore(x[perm]))
    ra = a.search(spec.encode_features(q), k=5, rescore=True, candidates=40, vectors=q)
    rb = b.search(spec.encode_features(q), k=5, rescore=True, candidates=40, vectors=q)
    assert ra.equals(rb) and ra.column_names == ["query", "rank", "id", "hamming", "similarity", "cosine"]
    got = ra.to_pydict()
    assert [got["id"][0], got["id"][5]] == ["r0005", "r0050"]
    cand, _ = top_k(spec.encode_features(q), a.codes, 40)
    want, _ = brute_force_rescore(q, cand, a.int8, spec.rescore_scales, 5)
    assert got["id"] == [ids[r] for r in want.ravel()]
    plain = CodeIndex(pa.array(ids), spec.encode_features(x), FeatureSpec.of(**BASE))
    with pytest.raises(ValueError, match=r"search\(rescore=True\) needs the embedding_int8 column.*output.rescore"):
        plain.search(spec.encode_features(q), rescore=True, vectors=q)
    with pytest.raises(ValueError, match="candidates = 3 must be at least k = 5"):
        a.search(spec.encode_features(q), k=5, rescore=True, candidates=3, vectors=q)


# -- a real rescoring table (Spark) -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rescored(spark, tmp_path_factory) -> dict:
    """600 rows of the shipped sample (with 'eczbrwg', the docs' example id) embedded by the default config with
    output.rescore: int8, and the neighbours job over it with the default config (search.rescore: auto)."""
    from jobs import embed, neighbours
    from jobs.common import load_config

    root = tmp_path_factory.mktemp("rescored")
    t = pq.read_table(SAMPLE, columns=["id", "text"])
    keep = np.zeros(t.num_rows, bool)
    keep[:599] = True
    keep[t.column("id").to_pylist().index("eczbrwg")] = True
    src = root / "in.parquet"
    pq.write_table(t.filter(pa.array(keep)), src)
    cfg = load_config(embed.EmbedConfig, "conf/embed.yaml", [f"input.path={src}", f"output.path={root / 'embed'}",
                                                             "output.rescore=int8", "encoder.calibration_rows=300"])
    manifest = embed.run(cfg)
    nb = load_config(neighbours.NeighboursConfig, "conf/neighbours.yaml", [
        f"embeddings={root / 'embed'}", f"output.path={root / 'nb'}", "search.candidates=50", "duplicates.radius=24"])
    return {"root": root, "src": src, "embed": root / "embed", "manifest": manifest, "nb": root / "nb",
            "nb_manifest": neighbours.run(nb), "nb_cfg": nb}


@pytest.mark.spark
def test_embed_stores_the_int8_column_the_library_makes(rescored, real_loaded):
    spec = FeatureSpec.load(rescored["embed"])
    assert spec.rescore == "int8" and spec.rescore_scales.shape == (384,)
    assert rescored["manifest"]["feature_spec"]["rescore"] == "int8"
    t = pq.read_table(rescored["embed"] / "embeddings").sort_by("id")
    assert t.column_names[:3] == ["id", "embedding", "embedding_int8"]
    texts = dict(zip(*pq.read_table(rescored["src"]).to_pydict().values()))
    ids = t.column("id").to_pylist()[:64]
    f = FeatureExtractor(real_loaded, spec.encoder_config("package")).features([texts[i] for i in ids]).values
    np.testing.assert_array_equal(codes_from_column(t.column("embedding_int8"), 384)[:64], spec.encode_rescore(f))
    np.testing.assert_array_equal(codes_from_column(t.column("embedding"), 48)[:64], spec.encode_features(f))


@pytest.mark.spark
def test_neighbours_job_rescores_exactly_as_the_index(rescored):
    m = rescored["nb_manifest"]
    assert m["search"]["rescore"] == {"column": "embedding_int8", "candidates": 50}
    got = pq.read_table(rescored["nb"] / "search")
    assert got.column_names == ["query_id", "rank", "id", "hamming", "similarity", "cosine"]
    import csv

    with open(ROOT / "examples" / "queries.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    index = CodeIndex.from_table(rescored["embed"])
    res = index.search([r["text"] for r in rows], k=10, rescore=True, candidates=50).to_pydict()
    qids = [r["query_id"] for r in rows]
    want = sorted((qids[q], r, i, h, c) for q, r, i, h, c in zip(res["query"], res["rank"], res["id"],
                                                                  res["hamming"], res["cosine"]))
    g = got.to_pydict()
    assert list(zip(g["query_id"], g["rank"], g["id"], g["hamming"], g["cosine"])) == want
    cos = np.array(g["cosine"]).reshape(len(rows), 10)
    assert (np.diff(cos, axis=1) <= 0).all() and not (np.diff(np.array(g["hamming"]).reshape(-1, 10)) >= 0).all()


@pytest.mark.spark
def test_a_query_by_id_is_its_stored_int8_vector(rescored, tmp_path):
    from jobs import neighbours
    from jobs.common import load_config

    ids = pq.read_table(rescored["embed"] / "embeddings", columns=["id"]).column("id").to_pylist()[:3]
    qf = tmp_path / "q.csv"
    qf.write_text("query_id,row\n" + "".join(f"q{i},{x}\n" for i, x in enumerate(ids)))
    c = load_config(neighbours.NeighboursConfig, "conf/neighbours.yaml", [
        f"embeddings={rescored['embed']}", f"output.path={tmp_path / 'nb'}", f"search.queries.path={qf}",
        "search.queries.text_column=null", "search.queries.table_id_column=row", "search.rescore=true", "search.k=3",
        "duplicates=null"])
    neighbours.run(c)
    got = pq.read_table(tmp_path / "nb" / "search").to_pydict()
    first = {q: (i, cs) for q, r, i, cs in zip(got["query_id"], got["rank"], got["id"], got["cosine"]) if r == 1}
    assert {q: i for q, (i, _) in first.items()} == {f"q{k}": x for k, x in enumerate(ids)}
    assert all(cs == pytest.approx(1.0, abs=1e-6) for _, cs in first.values())


@pytest.mark.spark
def test_rescore_true_on_a_table_without_the_column_and_a_wrong_value_are_exit_2(pipeline, tmp_path, capsys):
    from jobs import neighbours

    args = ["--config", "conf/neighbours.yaml", "--set", f"embeddings={pipeline['embed']}", "--set",
            f"output.path={tmp_path / 'nb'}", "--set", "duplicates=null"]
    for value, named in (("true", "search.rescore = true, but embeddings"),
                         ("maybe", "search.rescore = 'maybe'; expected one of true, false, 'auto'")):
        capsys.readouterr()
        assert neighbours.main(args + ["--set", f"search.rescore={value}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and named in err[0], err
    assert not (tmp_path / "nb").exists()
    neighbours.main(args)                      # auto on a table without the column: binary search as before
    assert pq.read_schema(sorted((tmp_path / "nb" / "search").glob("*.parquet"))[0]).names == [
        "query_id", "rank", "id", "hamming", "similarity"]


def rescoring_examples() -> dict[str, str]:
    """The rescoring SQL of docs/search.md and README.md (the ```sql blocks that call int8_cosine), by title."""
    out = {}
    for page in ("docs/search.md", "README.md"):
        text = (ROOT / page).read_text(encoding="utf-8")
        for title, body in re.findall(r"```sql\n-- (.+?)\n(.*?)```", text, re.S):
            if "int8_cosine(" in body:
                out[f"{page}: {title.strip()}"] = body
    return out


@pytest.mark.spark
def test_docs_and_readme_rescoring_sql_runs_in_duckdb_and_spark(rescored, spark, pipeline):
    from jobs import sql
    from jobs.errors import InputError

    examples = rescoring_examples()
    assert any(k.startswith("README.md") for k in examples) and any(k.startswith("docs/") for k in examples)
    views = sql.views(rescored["embed"], Path("/nonexistent"), Path("/nonexistent"))
    index = CodeIndex.from_table(rescored["embed"])
    row = index.ids.to_pylist().index("eczbrwg")
    cand, _ = top_k(index.codes[[row]], index.codes, 101)
    cand = cand[:, cand[0] != row][:, :100]
    want_rows, want_cos = brute_force_rescore(index.spec.decode_rescore(index.int8[[row]]), cand, index.int8,
                                              index.spec.rescore_scales, 10)
    want_ids = [index.ids[int(r)].as_py() for r in want_rows[0]]
    con = sql.duckdb_connect(views)
    session = sql.spark_readonly_session(spark, views)
    for title, query in examples.items():
        for engine in ("duckdb", "spark"):
            rows = (sql.duckdb_query(con, query, 50)[1] if engine == "duckdb"
                    else [tuple(r) for r in sql.spark_query(session, query).collect()])
            assert [r[0] for r in rows] == want_ids, (title, engine)
            assert [r[2] for r in rows] == pytest.approx(list(want_cos[0]), rel=1e-6), (title, engine)
    # on a table without the column: one InputError that says how to get it
    plain = sql.views(pipeline["embed"], Path("/nonexistent"), Path("/nonexistent"))
    query = next(iter(examples.values()))
    with pytest.raises(InputError, match="output.rescore=int8"):
        sql.duckdb_query(sql.duckdb_connect(plain), query, 5)
    with pytest.raises(InputError, match="output.rescore=int8"):
        sql.spark_query(sql.spark_readonly_session(spark, plain), query)


@pytest.mark.spark
def test_describe_explains_both_code_columns(rescored):
    from jobs import describe

    text = describe.describe(rescored["embed"])
    assert "| `embedding_int8` | binary |" in text and "| `embedding` | binary |" in text
    assert "`embedding_int8` stores the same 384 features as int8" in text
    nb = describe.describe(rescored["nb"])
    assert "| `cosine` | float |" in nb and "rescored: the binary top-50 re-ranked by int8 cosine" in nb
