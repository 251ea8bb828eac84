# Two entry points for a fresh machine: `make run` and `make test`. Both create .venv when it is missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_PROGRESS_BARS := 1
export TOKENIZERS_PARALLELISM := false
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: setup run embed train_heads apply_heads train_encoder study crossover costs plan neighbours cluster-up cluster-down embed-cluster apply-cluster nightly-bench test test-fast bench gpu-pack clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip check
	touch $(STAMP)

# The default pipeline on the shipped sample: embed -> train heads -> apply heads.
run: embed train_heads apply_heads
	@echo ""
	@echo "embeddings:  out/embed/embeddings   (quarantine: out/embed/quarantine, manifest: out/embed/manifest.json)"
	@echo "heads:       out/heads              (report: out/heads/report.md, metrics: out/heads/metrics.json)"
	@echo "predictions: out/predictions/predictions   (report: out/predictions/report.md, manifest: out/predictions/manifest.json)"

# make embed RESCORE=int8: also store the int8 rescoring column (output.rescore); make neighbours then rescores
embed: $(STAMP)
	$(BIN)/python -m jobs.embed --config conf/embed.yaml $(if $(RESCORE),--set output.rescore=$(RESCORE))

train_heads: $(STAMP)
	$(BIN)/python -m jobs.train_heads --config conf/train_heads.yaml

apply_heads: $(STAMP)
	$(BIN)/python -m jobs.apply_heads --config conf/apply_heads.yaml

# Fine-tune the shared encoder on several labelled tables (the shipped samples: a short demonstration run) and
# publish the model folder out/encoder; embed with it: python -m jobs.embed --set encoder.model=out/encoder
train_encoder: $(STAMP)
	$(BIN)/python -m jobs.train_encoder --config conf/train_encoder.yaml

# The transfer study (needs ../shared/data; under an hour on 2 cores): out/study/report.md + charts
study: $(STAMP)
	$(BIN)/python bench/transfer.py

# Shared encoder or one model per task (needs ../shared/data; under an hour on 2 cores): per-task teachers and
# students against the shared encoder's heads, cost per 1M texts for N = 1..20 tasks, N*; out/crossover/report.md
crossover: $(STAMP)
	$(BIN)/python bench/costs.py
	$(BIN)/python bench/crossover.py --costs out/crossover/costs.json

# Re-measure the per-text costs the planner reads (docs/costs.json) on this machine: ~7 minutes on 2 cores
costs: $(STAMP)
	$(BIN)/python bench/costs.py --write

# The planner on your numbers: make plan TASKS=12 TEXTS=5e6 TOKENS=60 [BACKEND=onnx_int8] (costs: docs/costs.json)
TASKS  ?= 12
TEXTS  ?= 5e6
TOKENS ?= 60
BACKEND ?= torch
plan: $(STAMP)
	$(BIN)/python -m jobs.plan --tasks $(TASKS) --texts-per-day $(TEXTS) --mean-tokens $(TOKENS) --backend $(BACKEND)

# Nearest neighbours of the queries in examples/queries.csv and near-duplicate pairs, over out/embed (make embed);
# rescored by int8 cosine when the table has the int8 column (make embed RESCORE=int8; search.rescore: auto).
neighbours: $(STAMP)
	$(BIN)/python -m jobs.neighbours --config conf/neighbours.yaml
	@echo ""
	@echo "search:      out/neighbours/search       (query_id, rank, id, hamming, similarity[, cosine when rescored])"
	@echo "duplicates:  out/neighbours/duplicates   (id_a, id_b, hamming, similarity; manifest: out/neighbours/manifest.json)"

# A Spark standalone cluster on this machine (master + 2 workers, 1 core each; logs and pids in out/cluster/), and the
# jobs submitted to it with the project shipped as a wheel (README "Running nightly").
cluster-up: $(STAMP)
	$(BIN)/python -m jobs.cluster up --workers 2 --cores 1

cluster-down: $(STAMP)
	$(BIN)/python -m jobs.cluster down

embed-cluster: $(STAMP)
	$(BIN)/python -m jobs.cluster submit jobs/embed.py --config conf/embed.yaml

apply-cluster: $(STAMP)
	$(BIN)/python -m jobs.cluster submit jobs/apply_heads.py --config conf/apply_heads.yaml

nightly-bench: $(STAMP)
	$(BIN)/python bench/nightly.py

# Everything (CI). test-fast: no JVM (markers spark and cluster left out; tests/conftest.py fails a test that starts
# one unmarked), about 30 s on 2 cores.
test: $(STAMP)
	$(BIN)/python -m pytest -q tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests -m "not spark and not cluster"

bench: $(STAMP)
	$(BIN)/pip install -q -r bench/requirements.txt
	$(BIN)/python bench/encode.py --per-set 1000 --repeats 3
	$(BIN)/python bench/heads.py
	$(BIN)/python bench/heads_accuracy.py
	$(BIN)/python bench/heads_input_scale.py
	$(BIN)/python bench/long_texts.py
	$(BIN)/python bench/search.py

# The GPU pack (needs ../shared/data; about a minute on 2 cores): the fp16-rounded model, texts and CPU reference
# codes in out/gpu_pack, for bench/gpu_encode.py run on a device (docs/gpu.md has the device command)
gpu-pack: $(STAMP)
	$(BIN)/python bench/gpu_encode.py pack --out out/gpu_pack

clean:
	rm -rf out spark-warehouse metastore_db .pytest_cache
