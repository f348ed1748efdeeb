# parotid-seg: every target bootstraps what it needs (virtual environment, Debian tools).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

# training / evaluation variables
DATA ?= .cache/openkbp/provided-data
TRAIN_DIR ?= $(DATA)/train-pats
VAL_DIR ?= $(DATA)/validation-pats
FORMAT ?= openkbp
ARCH ?= residual
FILTERS ?= 8
EPOCHS ?= 60
STEPS ?= 150
MINUTES ?= 125
LR ?= 2e-3
INIT ?=
TRAIN_ARGS ?=
RUN ?= runs/parotid-$(ARCH)
RUNS ?= $(RUN)
NAME ?= parotid-unet3d
VERSION ?= $(shell date +%Y.%m.%d)-$(ARCH)
BUNDLE ?= model_store/$(NAME)/$(VERSION)
EVAL_OUT ?= runs/eval-$(notdir $(BUNDLE))
OPENKBP_GIT ?= /work/.mirror/ababier+open-kbp/repo

.PHONY: compose-config venv tools lint typecheck test test-fast retrain export evaluate evaluate-update openkbp-data checkpoint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[service,train,test]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

tools:
	bash scripts/install-debian-tools.sh
	bash scripts/install-deploy-tools.sh

# Validate the compose stack with the example configuration.
compose-config: tools
	PAROTID_ENV_FILE=deploy/parotid.env.example docker-compose config -q

lint: venv
	$(BIN)/ruff check service training tests bench docker
	$(BIN)/ruff format --check service training tests bench docker

typecheck: venv
	$(BIN)/mypy

test: venv tools lint typecheck
	$(BIN)/python -m pytest -q -ra

test-fast: venv
	$(BIN)/python -m pytest -q -x -m "not slow"

# The HTTP API on http://127.0.0.1:8000 (PAROTID_HOST/PAROTID_PORT to change). Embedded worker pool and job store in
# var/ unless PAROTID_BROKER_URL is set; the first start creates var/api_keys and prints an API key once.
.PHONY: serve
serve: venv
	$(BIN)/parotid-seg serve

# Speed (docs/benchmarks.md): latency per path and stage, worker memory, throughput with 1 and 2 workers, ingest
# rate. QUICK=1: tiny input, one repeat (development). More options: BENCH_ARGS="--repeats 5 --model NAME:VERSION".
.PHONY: bench chaos
bench: venv
	$(BIN)/python -m bench.bench $(if $(QUICK),--quick) $(BENCH_ARGS)

# Faults (docs/benchmarks.md): workers killed mid-inference, Redis restart, disk at the watermark, aborted DICOM
# associations, return destination down; exit status 1 if a job was lost or ran twice. CHAOS_ARGS="--only NAME".
chaos: venv
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

# Export the OpenKBP train/validation splits from a git copy of github.com/ababier/open-kbp (never test-pats).
openkbp-data:
	scripts/export_openkbp.sh $(OPENKBP_GIT) $(DATA:/provided-data=)

# Train (resumable: run it again after an interruption), export the best-validation-Dice checkpoint as a bundle,
# evaluate it on the validation split and write the metrics into the bundle and its model card (evaluate-update).
retrain: venv
	KERAS_BACKEND=$${KERAS_BACKEND:-torch} $(BIN)/python -m training.train --train-dir $(TRAIN_DIR) \
	  --val-dir $(VAL_DIR) --format $(FORMAT) --output $(RUN) --architecture $(ARCH) --base-filters $(FILTERS) \
	  --epochs $(EPOCHS) --steps-per-epoch $(STEPS) --max-minutes $(MINUTES) --lr $(LR) \
	  $(if $(INIT),--init-weights $(INIT)) $(TRAIN_ARGS)
	$(MAKE) export evaluate-update RUN=$(RUN) VERSION=$(VERSION)

# A committable resume checkpoint of a run (float16 weights + state), replacing the previous one: a new machine
# resumes from it with `python -m training.train ... --resume-from checkpoints/<run>` (scripts/train-wide16.sh).
CHECKPOINT ?= checkpoints/$(notdir $(RUN))
checkpoint: venv
	KERAS_BACKEND=torch $(BIN)/python -m training.checkpoint $(RUN) $(CHECKPOINT)

export: venv
	KERAS_BACKEND=tensorflow $(BIN)/python -m training.export $(foreach r,$(RUNS),--run $(r)) --name $(NAME) --version $(VERSION)

# Evaluate a bundle on VAL_DIR into EVAL_OUT (per_patient.csv, summary.json, bland_altman.png); never writes into
# the bundle. evaluate-update also stores the summary in the bundle's metrics.json and MODEL_CARD.md, and is refused
# unless VAL_DIR/FORMAT are the split the bundle was selected on. A clinic's own patients: `parotid-seg evaluate`.
EVALUATE = KERAS_BACKEND=tensorflow $(BIN)/python -m training.evaluate --bundle $(BUNDLE) --data-dir $(VAL_DIR) \
	  --format $(FORMAT) --output $(EVAL_OUT)

evaluate: venv
	$(EVALUATE)

evaluate-update: venv
	$(EVALUATE) --update-bundle

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
