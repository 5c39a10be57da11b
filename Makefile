# Two targets do all the set-up on a fresh machine: `make run` and `make test`; `make bench` re-measures bench/.
PYTHON ?= python3
VENV   ?= .venv
FAISS  ?= cpu            # `make run FAISS=gpu` installs faiss-gpu instead of faiss-cpu
# The torch build. Empty: the pyproject pin from PyPI, which on Linux is the CUDA 13 build (GPUs need NVIDIA driver
# >= 580; with an older driver torch sees no GPU and peft-ir refuses to start). cu126 / cu128 (CUDA 12, older
# drivers), cu130 or cpu: that build of the same version, from the PyTorch wheel index. `make clean` before switching.
TORCH  ?=
TORCH_INDEX   ?= https://download.pytorch.org/whl
TORCH_VERSION := $(shell sed -n 's/^ *"torch==\([^"]*\)".*/\1/p' pyproject.toml)
TORCH_BUILD   := $(strip $(TORCH))
BIN    := $(VENV)/bin
ifneq ($(TORCH_BUILD),)
ifeq ($(shell printf '%s' '$(TORCH_BUILD)' | grep -Ex 'cpu|cu[0-9]+'),)
$(error TORCH=$(TORCH_BUILD): choose a PyTorch build name such as cu126, cu128, cu130 or cpu (empty: PyPI's default))
endif
endif
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test bench gpu-check install install-test clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, when a build is named: the package's torch==VERSION is then met by VERSION+BUILD and left alone
$(VENV)/.torch-$(or $(TORCH_BUILD),pypi): pyproject.toml | $(BIN)/activate
ifneq ($(TORCH_BUILD),)
	$(BIN)/pip install -q --index-url $(TORCH_INDEX)/$(TORCH_BUILD) "torch==$(TORCH_VERSION)+$(TORCH_BUILD)"
endif
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch-$(or $(TORCH_BUILD),pypi) | $(BIN)/activate
	$(BIN)/pip install -q -e ".[$(strip $(FAISS))]"
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.torch-$(or $(TORCH_BUILD),pypi) | $(BIN)/activate
	$(BIN)/pip install -q -e ".[$(strip $(FAISS)),test]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(BIN)/peft-ir run configs/quickstart.yaml

# The benchmark scripts behind bench/results/, with the commands recorded there; fresh results go to runs/bench/
# (git-ignored) so that the committed, annotated ones are compared, not overwritten. rerank_throughput reads
# ../shared/data.
bench: install
	mkdir -p runs/bench
	$(BIN)/python bench/encode_throughput.py --docs 256 --batch-size 32 --max-length 256 --rounds 5 \
		--output runs/bench/encode_throughput.md
	$(BIN)/python bench/rerank_throughput.py --pairs 384 --rounds 5 --passage-max-length 192 \
		--output runs/bench/rerank_throughput.md
	$(BIN)/python bench/cpu_bf16.py --docs 256 --batch-size 32 --rounds 5 --output runs/bench/cpu_bf16.md
	$(BIN)/python bench/cpu_roofline.py --docs 256 --batch-size 32 --rounds 5 --output runs/bench/cpu_roofline.md
	$(BIN)/python bench/bm25_scifact.py --dense --work runs/bench/bm25-scifact --output runs/bench/bm25_scifact.md
	$(BIN)/python bench/train_step.py --rounds 3 --steps 5 --output runs/bench/train_step.md
	$(BIN)/python bench/faiss_search.py --embeddings runs/bench/bm25-scifact/minilm-emb --synthetic 200000 \
		--rounds 5 --output runs/bench/faiss_search.md

test: install-test
	$(BIN)/python -m pytest -q tests

# The GPU check (bench/gpu_check.py; CUDA only, offline, sized for < 12 minutes on one large GPU): every GPU path
# once, PASS / FAIL / SKIP per step into bench/results/gpu_check.md; exit code 1 if a step failed, 3 without a CUDA
# GPU. Installs with FAISS=gpu, i.e. PyPI's faiss-gpu-cu12 (the `gpu` extra; its CUDA 12 runtime comes from PyPI too).
# An existing .venv is not reinstalled: after `make run` / `make test` (faiss-cpu) run `make clean` first; for a
# driver older than 580 add TORCH=cu126 (see README, GPUs).
gpu-check: FAISS = gpu
gpu-check: install
	$(BIN)/python bench/gpu_check.py --output bench/results/gpu_check.md

clean:
	rm -rf $(VENV) runs/quickstart-iaa-l
