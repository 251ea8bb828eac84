"""Why heads see features on one scale (heads/inputs.py): OLID test macro-F1 of a linear head with the default
training settings on binary, int8 and fp32 codes of the same texts, decoded as stored ("raw") vs scaled from the spec.

    python bench/heads_input_scale.py        # ~1 minute on 2 cores; needs ../shared/data

tweeteval/offensive: first 3,000 train rows, first 500 validation rows (early stopping), all 860 test rows.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import require_data  # noqa: E402  (path, offline env)

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from encoder.build_spec import build_spec  # noqa: E402
from encoder.encode import FeatureExtractor  # noqa: E402
from encoder.encoder_config import EncoderConfig  # noqa: E402
from encoder.model import load_encoder  # noqa: E402
from encoder.quantize import calibrate_scales  # noqa: E402
from heads.data import Chunk  # noqa: E402
from heads.inputs import head_inputs  # noqa: E402
from heads.tasks import TaskConfig  # noqa: E402
from heads.train import TrainConfig, evaluate, train_heads  # noqa: E402


def main() -> None:
    torch.set_num_threads(2)
    d = require_data() / "tweeteval" / "offensive"
    tables = {"tr": pq.read_table(d / "train.parquet").slice(0, 3000),
              "va": pq.read_table(d / "validation.parquet").slice(0, 500), "te": pq.read_table(d / "test.parquet")}
    cfg = EncoderConfig()
    fx = FeatureExtractor(load_encoder("package", threads=2), cfg)
    t = time.perf_counter()
    feats = {k: fx.features(tb.column("text").to_pylist()).values for k, tb in tables.items()}
    labels = {k: np.asarray(tb.column("label").to_pylist()) for k, tb in tables.items()}
    print(f"encoded {sum(len(v) for v in feats.values())} texts in {time.perf_counter() - t:.0f} s")
    base = build_spec(cfg, fx)
    specs = {"binary": base, "int8": base.replace(quantization="int8", scales=calibrate_scales(feats["tr"])),
             "fp32": base.replace(quantization="fp32")}
    task = TaskConfig("t", "binary", ("y",))

    def chunk(k, x, val):
        return Chunk(np.array([f"{k}{i}" for i in range(len(x))]), x, {"y": labels[k]}, np.full(len(x), val))

    print("| codes | raw: test macro-F1 | scaled: test macro-F1 |")
    print("|---|---|---|")
    for name, s in specs.items():
        row = []
        for scaled in (False, True):
            x = {k: head_inputs(s, s.encode_features(v)) if scaled else s.decode(s.encode_features(v))
                 for k, v in feats.items()}

            def source(x=x):
                yield chunk("tr", x["tr"], False)
                yield chunk("va", x["va"], True)
            head = train_heads(source, [task], s.dim, TrainConfig())[0]
            m, _ = evaluate(head, chunk("te", x["te"], True))
            row.append(100 * m["macro_f1"])
        print(f"| {name} | {row[0]:.1f} | {row[1]:.1f} |")


if __name__ == "__main__":
    main()
