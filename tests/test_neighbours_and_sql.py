"""Analysts: the neighbours job (search + near-duplicates) against the library, docs/search.md's SQL examples in Spark SQL and
DuckDB, and the data dictionary; on the default pipeline's tables (real model, shipped sample)."""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from encoder.quantize import codes_from_column
from encoder.spec import SpecMismatchError
from encoder.typed_config import ConfigError
from jobs import describe, neighbours, sql
from jobs.common import load_config
from search.index import CodeIndex

from .oracles import brute_force_pairs
from jobs.errors import InputError

from .conftest import ROOT, SAMPLE

pytestmark = pytest.mark.spark
QUERIES = {"thanks": "Thank you so much, this made my day", "what": "What do you even mean by that?",
           "lol": "lol this is hilarious"}


def hashes(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.glob("*.parquet"))}


def cfg(tmp_path, pipeline, *more):
    return load_config(neighbours.NeighboursConfig, "conf/neighbours.yaml", [
        f"embeddings={pipeline['embed']}", f"output.path={tmp_path / 'nb'}", *more])


@pytest.fixture(scope="module")
def query_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("queries") / "q.csv"
    pq.write_table(pa.table({"query_id": list(QUERIES), "text": list(QUERIES.values())}), p.with_suffix(".parquet"))
    return p.with_suffix(".parquet")


def test_neighbours_job_equals_the_library_and_reruns_identically(pipeline, spark, tmp_path, query_file):
    c = cfg(tmp_path, pipeline, f"search.queries.path={query_file}", "search.queries.format=parquet", "search.k=7",
            "duplicates.radius=24")
    m = neighbours.run(c)
    out = Path(c.output.path)
    got = pq.read_table(out / "search").to_pydict()
    index = CodeIndex.from_table(pipeline["embed"])
    res = index.search(list(QUERIES.values()), k=7).to_pydict()
    want = sorted((list(QUERIES)[q], r, i, h) for q, r, i, h in zip(res["query"], res["rank"], res["id"],
                                                                     res["hamming"]))      # the job sorts by query_id
    assert list(zip(got["query_id"], got["rank"], got["id"], got["hamming"])) == want
    assert m["search"] == {"queries": 3, "k": 7, "rows": 21, "queries_from": "texts"}
    # near-duplicates: exactly the pairs brute force finds, each once, id_a < id_b
    t = pq.read_table(pipeline["embed"] / "embeddings", columns=["id", "embedding"])
    ids = t.column("id").to_pylist()
    pairs, d = brute_force_pairs(codes_from_column(t.column("embedding"), 48), 24)
    want_pairs = sorted((min(ids[a], ids[b]), max(ids[a], ids[b]), int(x)) for (a, b), x in zip(pairs, d))
    dup = pq.read_table(out / "duplicates").to_pydict()
    assert list(zip(dup["id_a"], dup["id_b"], dup["hamming"])) == want_pairs and len(want_pairs) >= 2
    assert m["duplicates"]["pairs"] == len(want_pairs) and len(m["duplicates"]["blocks"]) == 25
    first = {name: hashes(out / name) for name in ("search", "duplicates")}
    neighbours.run(c)
    assert {name: hashes(out / name) for name in ("search", "duplicates")} == first   # a rerun: the same bytes


def test_queries_by_table_id_find_themselves(pipeline, spark, tmp_path):
    ids = pq.read_table(pipeline["embed"] / "embeddings", columns=["id"]).column("id").to_pylist()[:4]
    qf = tmp_path / "q.csv"
    qf.write_text("query_id,row\n" + "".join(f"q{i},{x}\n" for i, x in enumerate(ids)))
    c = cfg(tmp_path, pipeline, f"search.queries.path={qf}", "search.queries.text_column=null",
            "search.queries.table_id_column=row", "search.k=3", "duplicates=null")
    neighbours.run(c)
    got = pq.read_table(Path(c.output.path) / "search").to_pydict()
    top = {q: (i, h) for q, r, i, h in zip(got["query_id"], got["rank"], got["id"], got["hamming"]) if r == 1}
    assert all(top[f"q{k}"][1] == 0 for k in range(4))
    assert not (Path(c.output.path) / "duplicates").exists()
    qf.write_text("query_id,row\nq0,nope\n")
    with pytest.raises(InputError, match="not ids of the embedding table.*nope"):
        neighbours.run(c)


def test_bad_queries_radius_and_another_model_are_refused(pipeline, spark, tmp_path, tiny_model_dir):
    qf = tmp_path / "q.csv"
    qf.write_text("query_id,text\na,hello\na,world\n")
    with pytest.raises(InputError, match="occur more than once"):
        neighbours.run(cfg(tmp_path, pipeline, f"search.queries.path={qf}"))
    with pytest.raises(ConfigError, match=r"duplicates.radius.*= 48; expected 0..47"):
        neighbours.run(cfg(tmp_path, pipeline, "duplicates.radius=48"))
    qf.write_text("query_id,text\na,hello\n")
    with pytest.raises(SpecMismatchError, match="model"):        # query texts must be encoded like the table
        neighbours.run(cfg(tmp_path, pipeline, f"search.queries.path={qf}", f"search.model={tiny_model_dir}"))
    assert not (tmp_path / "nb").exists()


# -- docs/search.md's SQL examples (each shown once, run in both engines) -----------------------------------------
def doc_queries() -> dict[str, str]:
    text = (ROOT / "docs" / "search.md").read_text(encoding="utf-8")
    found = re.findall(r"```sql\n-- (.+?)\n(.*?)```", text, re.S)
    # the rescoring examples need a table with the int8 column: tests/test_rescore.py runs them
    return {title.strip(): body for title, body in found if "int8_cosine(" not in body}


@pytest.fixture(scope="module")
def tables(pipeline, tmp_path_factory) -> dict[str, tuple[str, str]]:
    """The default views, plus a 'previous run' of the predictions with the neutral label flipped on known rows."""
    t = sql.views(pipeline["embed"], pipeline["pred"], Path("/nonexistent"))
    assert {"embeddings", "quarantine", "source", "predictions"} <= set(t)
    pred = pq.read_table(pipeline["pred"] / "predictions")
    flip = np.zeros(pred.num_rows, bool)
    flip[[3, 10, 99, 2500]] = True
    neutral = pred.column("neutral").to_pylist()
    old = [({"neutral": "emotional", "emotional": "neutral"}[v] if f else v) for v, f in zip(neutral, flip)]
    prev = tmp_path_factory.mktemp("prev")
    pq.write_table(pred.set_column(pred.schema.get_field_index("neutral"), "neutral", pa.array(old)),
                   prev / "part-00000.parquet")
    t["predictions_prev"] = ("parquet", str(prev))
    t["_flipped"] = ("", ",".join(sorted(np.asarray(pred.column("id").to_pylist())[flip])))
    return t


def expected(title: str, pipeline, tables) -> list[tuple]:
    """Each docs/search.md query's answer, computed without SQL."""
    src = pq.read_table(SAMPLE).to_pydict()
    text = dict(zip(src["id"], src["text"]))
    pred = pq.read_table(pipeline["pred"] / "predictions").to_pydict()
    if title == "the ten nearest texts to one id":
        index = CodeIndex.from_table(pipeline["embed"])
        code = index.codes[index.ids.to_pylist().index("eczbrwg")][None, :]
        res = index.search(code, k=11).to_pydict()
        return [(i, h, text[i]) for i, h in zip(res["id"], res["hamming"]) if i != "eczbrwg"][:10]
    if title == "rows per predicted label, with the text the head is most sure of":
        counts = Counter(pred["neutral"])
        return [(label, n) for label, n in sorted(counts.items(), key=lambda x: -x[1])]
    if title == "the texts most likely to be joyful":
        joy = [(s["joy"], i) for s, i in zip(pred["emotions_scores"], pred["id"])]
        top = sorted(joy, key=lambda x: (-x[0], x[1]))[:5]
        return [(i, pytest.approx(j, rel=1e-6), text[i]) for j, i in top]
    if title == "rows whose predicted labels changed since the previous run":
        flipped = tables["_flipped"][1].split(",")
        now = dict(zip(pred["id"], pred["neutral"]))
        return [(i, {"neutral": "emotional", "emotional": "neutral"}[now[i]], now[i]) for i in flipped]
    raise AssertionError(f"docs/search.md has an SQL example this test does not know: {title!r}")


def check(title: str, rows: list[tuple], pipeline, tables) -> None:
    want = expected(title, pipeline, tables)
    if title == "rows per predicted label, with the text the head is most sure of":
        assert [r[:2] for r in rows] == want
        pred = pq.read_table(pipeline["pred"] / "predictions").to_pydict()
        text = dict(zip(*pq.read_table(SAMPLE, columns=["id", "text"]).to_pydict().values()))
        for label, _, best in rows:     # the text of a row with that label's highest score
            top = max(s for s, lab in zip(pred["neutral_score"], pred["neutral"]) if lab == label)
            assert best in {text[i] for i, s, lab in zip(pred["id"], pred["neutral_score"], pred["neutral"])
                            if lab == label and s == top}
    elif title == "rows whose predicted labels changed since the previous run":
        assert [r[:3] for r in rows] == want
    else:
        assert [tuple(r) for r in rows] == want


def test_docs_sql_examples_run_in_duckdb_and_spark(pipeline, spark, tables):
    queries = doc_queries()      # each example written once, run in both engines
    assert len(queries) == 4 and any("hamming(" in q for q in queries.values())
    views = {k: v for k, v in tables.items() if not k.startswith("_")}
    con = sql.duckdb_connect(views)
    sql.spark_register(spark, views)
    for title, query in sorted(queries.items()):
        for engine in ("duckdb", "spark"):
            rows = con.sql(query).fetchall() if engine == "duckdb" else [tuple(r) for r in spark.sql(query).collect()]
            check(title, rows, pipeline, tables)


def test_spark_hamming_function_matches_the_library_and_handles_nulls(pipeline, spark, tables):
    sql.spark_register(spark, {"embeddings": tables["embeddings"]})
    rows = spark.sql("SELECT a.id, hamming(a.embedding, b.embedding) AS h, hamming(a.embedding, NULL) AS n "
                     "FROM embeddings a JOIN embeddings b ON b.id = 'eczbrwg' ORDER BY a.id").collect()
    index = CodeIndex.from_table(pipeline["embed"])
    code = index.codes[index.ids.to_pylist().index("eczbrwg")][None, :]
    res = index.search(code, k=len(index.codes)).to_pydict()
    want = dict(zip(res["id"], res["hamming"]))
    assert {r["id"]: r["h"] for r in rows} == want and all(r["n"] is None for r in rows)


# -- data dictionary ------------------------------------------------------------------------------------------------
def test_describe_names_every_column_the_spec_and_the_counts(pipeline, tmp_path):
    emb = describe.describe(pipeline["embed"])
    for col in pq.read_schema(sorted((pipeline["embed"] / "embeddings").glob("*.parquet"))[0]).names:
        assert f"| `{col}` |" in emb
    assert "| written | 5,000 |" in emb and "all-MiniLM-L6-v2" in emb and "48 bytes" in emb
    assert "| `duplicate_id` | 0 |" in emb
    pred = describe.describe(pipeline["pred"])
    for col in pq.read_schema(sorted((pipeline["pred"] / "predictions").glob("*.parquet"))[0]).names:
        assert f"| `{col}` |" in pred
    assert "positive label `neutral`" in pred and "(from the embedding table)" in pred
    with pytest.raises(InputError, match="not a published"):
        describe.describe(tmp_path)
    assert describe.main([str(pipeline["pred"]), "--output", str(tmp_path / "d.md")]) == 0
    assert (tmp_path / "d.md").read_text() == pred
