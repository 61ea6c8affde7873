# The two README commands: `make demo` and `make test`. Both create or update .venv themselves.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO := .demo
SAMPLE_IMAGE := tfds_rarespecies/rare_species/dummy_data/arthropoda_apidae/20647903_1065369_eol-full-size-copy.jpg
# What `tfds build` prints that nobody needs: TensorFlow's C++ start-up lines (printed while TensorFlow is
# imported, before TF_CPP_MIN_LOG_LEVEL applies: tensorflow/tensorflow#100442), Beam's note on GCP clients,
# TFDS' INFO lines, its "Unknown size" line (a manual download has no size TFDS knows) and its repr of the
# DatasetInfo (the build report says what was written, and where). Our own commands keep their console quiet
# themselves (trainer/cli.py); `make demo TF_LOGS=1` shows everything.
NATIVE_NOISE := ^(WARNING: All log messages before absl::InitializeLog|[IEW][0-9]{4} |To enable the following instructions|WARNING:root:apitools not found)
TFDS_NOISE := /^(INFO\[|WARNING\[file_utils.py\]: Variant folder|.*Downloading and preparing dataset Unknown size)/d; /^tfds.core.DatasetInfo\(/,/^\)$$/d
ifdef TF_LOGS
QUIET_BUILD :=
export TF_CPP_MIN_LOG_LEVEL := 0
else
QUIET_BUILD := 2> >(grep --line-buffered -v -E '$(NATIVE_NOISE)' >&2) | sed -u -E '$(TFDS_NOISE)'
endif

.PHONY: venv demo test clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --quiet --upgrade pip
	$(PY) -m pip install --quiet --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO)
	$(VENV)/bin/tfds build tfds_rarespecies/rare_species --config=small_128 \
	  --manual_dir=tfds_rarespecies/rare_species/dummy_data --data_dir=$(DEMO)/data \
	  --download_dir=$(DEMO)/downloads $(QUIET_BUILD)
	$(PY) -m trainer.main --flagfile=configs/demo.flags --data_dir=$(DEMO)/data --model_dir=$(DEMO)/run
	$(PY) -m trainer.evaluate --model_dir=$(DEMO)/run --data_dir=$(DEMO)/data --split=test
	$(PY) -m trainer.export --model_dir=$(DEMO)/run
	$(PY) -m trainer.predict --model_dir=$(DEMO)/run --top_k=3 $(SAMPLE_IMAGE)
	@echo "demo done: dataset $(DEMO)/data, run $(DEMO)/run (eval/test/, saved_model/), report above"

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -q --durations=25

clean:
	rm -rf $(DEMO) .pytest_cache
