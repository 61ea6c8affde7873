# The two README commands: `make demo` and `make test`. Both create or update .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO := .demo
SAMPLE_IMAGE := tfds_rarespecies/rare_species/dummy_data/arthropoda_apidae/20647903_1065369_eol-full-size-copy.jpg
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv demo test clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO)
	$(VENV)/bin/tfds build tfds_rarespecies/rare_species --config=small_128 \
	  --manual_dir=tfds_rarespecies/rare_species/dummy_data --data_dir=$(DEMO)/data \
	  --download_dir=$(DEMO)/downloads
	$(PY) -m tfds_rarespecies.summary --data_dir=$(DEMO)/data --config=small_128
	$(PY) -m trainer.main --flagfile=configs/demo.flags --data_dir=$(DEMO)/data --model_dir=$(DEMO)/run
	$(PY) -m trainer.evaluate --model_dir=$(DEMO)/run --data_dir=$(DEMO)/data --split=test
	$(PY) -m trainer.serving --model_dir=$(DEMO)/run
	$(PY) -m trainer.predict --model_dir=$(DEMO)/run --top_k=3 $(SAMPLE_IMAGE)
	@echo "demo done: dataset $(DEMO)/data, run $(DEMO)/run (eval/test/, saved_model/), report above"

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -q

clean:
	rm -rf $(DEMO) .pytest_cache
