"""Pictures beside the reports: the training report's confusion matrices and the predictions report (label counts and
score histograms), checked against counts made independently from the Parquet tables with pyarrow. What a chart
plots is read from its matplotlib figure (the heat map's cells, the bars' lengths) as it is saved."""
from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from heads.metrics import confusion_counts
from jobs import apply_heads, embed, train_heads
from jobs.charts import PNG_SIGNATURE, confusion_png, distribution_png
from jobs.common import load_config
from jobs.prediction_report import BINS, NO_LABEL, PredictionSummary, TaskSummary, report_markdown, write_report

TOPICS = {"money": ["stock", "market", "fell", "today"], "music": ["man", "playing", "guitar", "strumming"],
          "film": ["good", "bad", "movie", "very"]}
FILLER = ["the", "a", "is", "it", "was", "and", "of", "to", "in", "i", "you", "someone", "hello", "world"]
TAGS = ("good", "bad", "hello")
TASKS = ("[{name: topic, kind: multiclass, columns: [topic], labels: [money, music, film]}, "
         "{name: flag, kind: binary, columns: [flag], labels: ['no', 'yes']}, "
         "{name: tags, kind: multilabel, columns: ['tags__*']}]")


def label_table(n: int = 300) -> pa.Table:
    """Texts from the tiny model's vocabulary: a topic (3 classes; every 7th row unlabelled, a fifth of the others
    labelled with the next topic, so the confusion matrix has cells off its diagonal), a binary flag ('not' in the
    text) and three tags (words present). 20% test rows, 10% validation."""
    rng = np.random.default_rng(7)
    names = list(TOPICS)
    rows: dict[str, list] = {"id": [], "text": [], "topic": [], "flag": [], "split": [],
                             **{f"tags__{t}": [] for t in TAGS}}
    for i in range(n):
        k = int(rng.integers(3))
        words = list(rng.choice(TOPICS[names[k]], 3)) + list(rng.choice(FILLER, 3))
        if rng.random() < 0.3:
            words.append("not")
        rng.shuffle(words)
        rows["id"].append(f"r{i:04d}")
        rows["text"].append(" ".join(words))
        noisy = rng.random() < 0.2
        rows["topic"].append(-1 if i % 7 == 0 else (k + 1) % 3 if noisy else k)
        rows["flag"].append(int("not" in words))
        rows["split"].append("test" if i % 10 < 2 else "validation" if i % 10 == 2 else "train")
        for t in TAGS:
            rows[f"tags__{t}"].append(int(t in words))
    return pa.table(rows)


def plotted(fig) -> dict:
    """What a chart shows, read from its figure: a confusion heat map's cells, cell texts and axis labels, or a
    distribution chart's label names, bar lengths (rows per label) and histogram bar heights."""
    ax = fig.axes[0]
    if ax.images:
        return {"cells": np.asarray(ax.images[0].get_array()).tolist(), "texts": [t.get_text() for t in ax.texts],
                "true": [t.get_text() for t in ax.get_yticklabels()],
                "predicted": [t.get_text() for t in ax.get_xticklabels()]}
    left, right = fig.axes[:2]
    return {"names": [t.get_text() for t in left.get_yticklabels()],
            "counts": [round(r.get_width()) for r in left.containers[0]],
            "histogram": [round(r.get_height()) for r in right.containers[0]]}


@contextlib.contextmanager
def charts_drawn():
    """{file name: plotted(figure)} for every figure saved inside the block (Figure.savefig wrapped, then restored)."""
    from matplotlib.figure import Figure

    seen: dict[str, dict] = {}
    save = Figure.savefig

    def savefig(self, fname, *args, **kwargs):
        seen[Path(fname).name] = plotted(self)
        return save(self, fname, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Figure, "savefig", savefig)
        yield seen


@pytest.fixture(scope="module")
def pipeline(spark, tiny_model_dir, tmp_path_factory):
    """embed (tiny model) -> train_heads (multiclass, binary, multilabel; with test rows) -> apply_heads; ``drawn``:
    what each chart the jobs saved plots."""
    root = tmp_path_factory.mktemp("report_charts")
    data, emb, hd, pred = root / "data.parquet", root / "embed", root / "heads", root / "pred"
    pq.write_table(label_table(), data)
    embed.run(load_config(embed.EmbedConfig, "conf/embed.yaml", [
        f"input.path={data}", f"output.path={emb}", f"encoder.model={tiny_model_dir}", "encoder.layers=last",
        "encoder.quantization=fp32"]))
    with charts_drawn() as drawn:
        train_heads.run(load_config(train_heads.TrainHeadsConfig, "conf/train_heads.yaml", [
            f"embeddings={emb}", f"labels.path={data}", f"output.path={hd}", f"tasks={TASKS}", "train.epochs=30",
            "train.lr=0.2", "train.patience=8"]))   # a high rate: the tiny model's features need it to tell topics apart
        manifest = apply_heads.run(load_config(apply_heads.ApplyHeadsConfig, "conf/apply_heads.yaml", [
            f"embeddings={emb}", f"heads={hd}", f"output.path={pred}"]))
    return {"data": data, "heads": hd, "pred": pred, "manifest": manifest, "drawn": drawn}


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path


def linked_images(report: Path) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text())


def report_counts(text: str) -> dict[str, dict[str, int]]:
    """report.md's tables: task -> label -> rows (the '## <task> (<kind>)' sections)."""
    out: dict[str, dict[str, int]] = {}
    task = None
    for line in text.splitlines():
        if m := re.fullmatch(r"## (\S+) \((\w+)\)", line):
            task = m.group(1)
            out[task] = {}
        elif task and (m := re.fullmatch(r"\| (.+) \| ([\d,]+) \| (.+) \|", line)):
            out[task][m.group(1)] = int(m.group(2).replace(",", ""))
    return out


def histogram(values: np.ndarray) -> list[int]:
    """BINS bins over [0, 1], [k/BINS, (k+1)/BINS) with 1.0 in the last: numpy on the float32 scores."""
    b = np.clip(np.floor(values.astype(np.float64) * BINS), 0, BINS - 1).astype(np.int64)
    return np.bincount(b, minlength=BINS).tolist()


def all_scores(column: pa.ChunkedArray) -> np.ndarray:
    """Every score of a multilabel score column, as a list<float> or a struct<label: float, ...> (pyarrow)."""
    arr = column.combine_chunks()
    if pa.types.is_struct(arr.type):
        return np.concatenate([arr.field(j).to_numpy() for j in range(arr.type.num_fields)])
    return pc.list_flatten(arr).to_numpy()


def other_layout(column: pa.ChunkedArray, labels: list[str]) -> pa.Array:
    """The same multilabel scores in the other layout: struct -> list<float>, list -> struct (labels' order)."""
    arr = column.combine_chunks()
    if pa.types.is_struct(arr.type):
        values = np.stack([arr.field(j).to_numpy() for j in range(arr.type.num_fields)], axis=1)
        offsets = np.arange(0, values.size + 1, values.shape[1], dtype=np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.ravel()))
    return pa.StructArray.from_arrays([pc.list_element(arr, j) for j in range(len(labels))], names=labels)


# -- no Spark -----------------------------------------------------------------------------------------------------
def test_confusion_counts_by_hand():
    got = confusion_counts(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 4)
    assert got == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    assert isinstance(got[0][0], int)   # plain ints: json.dumps takes them


def test_confusion_png_plots_its_counts(tmp_path):
    with charts_drawn() as drawn:
        assert_png(confusion_png(tmp_path / "c.png", [[3, 1], [0, 5]], ["no", "yes"], "t: true vs predicted"))
    assert drawn["c.png"] == {"cells": [[3, 1], [0, 5]], "texts": ["3", "1", "0", "5"], "true": ["no", "yes"],
                              "predicted": ["no", "yes"]}     # rows true, columns predicted, every cell written


@pytest.mark.parametrize("log_scores", [False, True])
def test_distribution_png_plots_its_counts_and_histogram(tmp_path, log_scores):
    histogram = [0] * (BINS - 3) + [2, 0, 1_234]
    with charts_drawn() as drawn:
        assert_png(distribution_png(tmp_path / "d.png", ["a", "b", NO_LABEL], [6, 2, 3], histogram, "t", "p",
                                    log_scores=log_scores))
    assert drawn["d.png"] == {"names": ["a", "b", NO_LABEL], "counts": [6, 2, 3], "histogram": histogram}


def test_prediction_report_markdown_by_hand():
    summary = PredictionSummary(8, [
        TaskSummary("topic", "multiclass", {"a": 6, "b": 2}, None, [0] * BINS, "topic_score"),
        TaskSummary("tags", "multilabel", {"x": 4, "y": 0}, 3, [0] * BINS, "tags_scores")])
    text = report_markdown(summary)
    assert "| a | 6 | 75.0% |" in text and "| b | 2 | 25.0% |" in text
    assert "| x | 4 | 50.0% |" in text and "| y | 0 | 0.0% |" in text and f"| {NO_LABEL} | 3 | 37.5% |" in text
    assert report_counts(text) == {"topic": {"a": 6, "b": 2}, "tags": {"x": 4, "y": 0, NO_LABEL: 3}}
    assert "(task_topic.png)" in text and "(task_tags.png)" in text


# -- end to end (Spark) -------------------------------------------------------------------------------------------
@pytest.mark.spark
def test_confusion_matrix_counts_the_evaluated_rows(pipeline):
    metrics = json.loads((pipeline["heads"] / "metrics.json").read_text())
    topic = metrics["topic"]
    conf = np.asarray(topic["confusion"])
    labels = pipeline["manifest"]["tasks"]["topic"]["labels"]
    src = pq.read_table(pipeline["data"]).to_pydict()
    test = [i for i, s in enumerate(src["split"]) if s == "test" and src["topic"][i] >= 0]
    assert topic["split"] == "test" and conf.shape == (3, 3)
    assert conf.sum() == topic["rows"] == len(test) == 51    # 60 test rows, 9 of them without a topic
    pred = pq.read_table(pipeline["pred"] / "predictions", columns=["id", "topic"]).to_pydict()
    predicted = dict(zip(pred["id"], pred["topic"]))
    expected = np.zeros((3, 3), np.int64)
    for i in test:
        expected[src["topic"][i], labels.index(predicted[src["id"][i]])] += 1
    assert (conf != conf.T).any()    # not symmetric: rows (true) and columns (predicted) swapped would fail
    assert conf.tolist() == expected.tolist()
    chart = pipeline["drawn"]["confusion_topic.png"]          # and the chart plots those counts, the same way round
    assert chart["cells"] == expected.tolist() and chart["true"] == chart["predicted"] == labels
    assert "confusion" not in metrics["flag"] and "confusion" not in metrics["tags"]


@pytest.mark.spark
def test_training_report_links_one_confusion_png_per_multiclass_head(pipeline):
    hd = pipeline["heads"]
    report = (hd / "report.md").read_text()
    assert "![topic: confusion matrix on the test split](confusion_topic.png)" in report
    assert linked_images(hd / "report.md") == ["confusion_topic.png"]
    assert_png(hd / "confusion_topic.png")
    assert sorted(p.name for p in hd.glob("*.png")) == ["confusion_topic.png"]


@pytest.mark.spark
def test_prediction_report_counts_equal_the_table(pipeline):
    pred, tasks = pipeline["pred"], pipeline["manifest"]["tasks"]
    table = pq.read_table(pred / "predictions")
    got = report_counts((pred / "report.md").read_text())
    expected: dict[str, dict[str, int]] = {}
    for name, task in tasks.items():
        col = table.column(name)
        values = pc.list_flatten(col) if task["kind"] == "multilabel" else col
        seen = {d["values"]: d["counts"] for d in pc.value_counts(values).to_pylist()}
        expected[name] = {lab: seen.get(lab, 0) for lab in task["labels"]}
        if task["kind"] == "multilabel":
            expected[name][NO_LABEL] = pc.sum(pc.equal(pc.list_value_length(col), 0)).as_py()
    assert got == expected
    assert all(sum(n > 0 for n in got[t].values()) > 1 for t in got)   # more than one label predicted per task
    assert sum(got["topic"].values()) == sum(got["flag"].values()) == table.num_rows == 300
    assert f"{table.num_rows:,} rows." in (pred / "report.md").read_text()
    assert linked_images(pred / "report.md") == [f"task_{n}.png" for n in tasks]
    for name in tasks:
        assert_png(pred / f"task_{name}.png")
        chart = pipeline["drawn"][f"task_{name}.png"]         # the chart plots the table's counts, in report order
        assert dict(zip(chart["names"], chart["counts"])) == expected[name] and chart["names"] == list(got[name])


@pytest.mark.spark
def test_score_histograms_for_list_and_struct_scores(pipeline, spark, tmp_path):
    pred = pipeline["pred"]
    table = pq.read_table(pred / "predictions")
    summary = write_report(spark.read.parquet(str(pred / "predictions")), _heads(pipeline), tmp_path / "list")
    by = {t.name: t for t in summary.tasks}
    assert by["topic"].histogram == histogram(table.column("topic_score").to_numpy())
    assert by["flag"].histogram == histogram(table.column("flag_score").to_numpy())
    assert sum(by["flag"].histogram[:BINS // 2]) == 0     # a binary head's chosen label has p >= 0.5
    scores = all_scores(table.column("tags_scores"))
    assert len(scores) == 3 * table.num_rows and by["tags"].histogram == histogram(scores)
    drawn = pipeline["drawn"]                                 # the charts plot those histograms
    assert drawn["task_topic.png"]["histogram"] == histogram(table.column("topic_score").to_numpy())
    assert drawn["task_flag.png"]["histogram"] == histogram(table.column("flag_score").to_numpy())
    assert drawn["task_tags.png"]["histogram"] == histogram(scores)
    # the other layout of the multilabel scores (list<float> <-> struct<label: float, ...>): same figures, same report
    labels = pipeline["manifest"]["tasks"]["tags"]["labels"]
    other = table.set_column(table.schema.get_field_index("tags_scores"), "tags_scores",
                             other_layout(table.column("tags_scores"), labels))
    assert other.schema.field("tags_scores").type != table.schema.field("tags_scores").type
    # without the Spark schema the published files carry (it names the published layout), so Spark reads this one
    pq.write_table(other.replace_schema_metadata(None), tmp_path / "other.parquet")
    again = write_report(tmp_path / "other.parquet", _heads(pipeline), tmp_path / "other")
    assert again == summary
    assert (tmp_path / "other" / "report.md").read_text() == (pred / "report.md").read_text()
    assert_png(tmp_path / "other" / "task_tags.png")


@pytest.mark.spark
def test_a_score_column_of_another_type_is_refused(pipeline, spark, tmp_path):
    df = spark.read.parquet(str(pipeline["pred"] / "predictions"))
    df = df.withColumn("topic_score", df["topic_score"].cast("string"))
    with pytest.raises(TypeError, match="topic_score"):
        write_report(df, _heads(pipeline), tmp_path)


def _heads(pipeline):
    from heads.io import load_heads

    return load_heads(pipeline["heads"])
