"""Query texts -> codes, encoded exactly as a table's spec encoded its rows (the query encoder search takes)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from encoder.cache import cached
from encoder.spec import FeatureSpec, SpecMismatchError


class QueryEncoder:
    """Encodes query texts under one table's spec with ``model``; a model that would not reproduce the spec is
    refused (``SpecMismatchError``) before anything is encoded."""

    def __init__(self, spec: FeatureSpec, model: str = "package"):
        from encoder.encode import FeatureExtractor
        from encoder.model import load_encoder

        loaded = load_encoder(model)
        if dict(loaded.fingerprint) != dict(spec.model):   # before its layers are even tried against the spec
            raise SpecMismatchError(f"query encoder {model!r} is model {loaded.fingerprint['name']} "
                                    f"({loaded.fingerprint['sha256'][:12]}…), but the table was encoded with model "
                                    f"{spec.model['name']} ({spec.model['sha256'][:12]}…); search with that model")
        self.spec = spec
        self.extractor = FeatureExtractor(loaded, spec.encoder_config(model))
        self.extractor.check_spec(spec)

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """Query texts -> float32[q, dim] features (before quantization)."""
        return self.extractor.features(list(texts)).values

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Query texts -> codes uint8[q, n_bytes] under the spec."""
        return self.spec.encode_features(self.features(texts))


def query_encoder(spec: FeatureSpec, model: str = "package") -> QueryEncoder:
    """The process's query encoder for ``spec`` and ``model`` (built once, reused by the next call)."""
    return cached("query_encoder", (spec.fingerprint, model), lambda: QueryEncoder(spec, model))


def encode_queries(spec: FeatureSpec, model: str, texts: Sequence[str]) -> np.ndarray:
    """Query texts -> codes the way ``spec``'s table was encoded (see ``QueryEncoder``)."""
    return query_encoder(spec, model)(texts)
