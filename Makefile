# ssmbench: `make demo` on a fresh machine installs everything and runs the main benchmark.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SSM    := $(VENV)/bin/ssmbench
STAMP  := $(VENV)/.installed
# CPU builds where there is no NVIDIA GPU (an unpinned torch pulls GBs of CUDA wheels)
GPU    := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo yes)
TORCH  ?= $(if $(GPU),torch,torch==2.13.0)
JAX    ?= $(if $(GPU),jax[cuda13],jax[cpu])
# the fused scan's kernels: CUDA torch wheels bring Triton; on CPU its interpreter runs the tests
TRITON ?= $(if $(GPU),,triton==3.6.0)
TF     ?= $(if $(GPU),tensorflow[and-cuda],$(if $(filter Darwin,$(shell uname -s)),tensorflow,tensorflow-cpu))
# ci-smoke: every suite on every backend, at the fewest points that still exercise it (< 5 min on
# 2 cores). Train runs in throughput; forward in throughput and depth-scaling; decode in latency
# and seqlen; the scan alone (fwd+bwd) vs attention in scan; every scan, dtype and path against
# the reference in `make test` (parity: float32 here); the other implementations (--impl) each path once.
SMOKE_OUT := reports/ci-smoke
SMOKE_BASE := --backend all --quick --out $(SMOKE_OUT)/results --timeout 300
SMOKE  := $(SMOKE_BASE) --arch all

.PHONY: install browser demo test ci-smoke lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" "$(JAX)" "optax>=0.2.3" "$(TF)" $(TRITON) "transformers>=4.46,<6"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: install
	$(SSM) backends
	$(SSM) run throughput --backend auto --arch both --out reports/results
	$(SSM) report reports/results --format markdown --output reports/demo.md

# Debian's Chromium for the HTML report's rendering test (installed where we may; skipped otherwise)
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "no Chromium: the HTML rendering test will be skipped (install Debian's chromium package)"; }

test: install browser
	$(PY) -m pytest -q

ci-smoke: install
	rm -rf $(SMOKE_OUT)
	$(SSM) run parity $(SMOKE) --dtype float32
	$(SSM) run throughput $(SMOKE)
	$(SSM) run latency $(SMOKE) --mode decode
	$(SSM) run depth-scaling $(SMOKE_BASE) --layers-list 1,2 --mode forward
	$(SSM) run seqlen $(SMOKE) --max-len 64 --mode decode
	$(SSM) run scan $(SMOKE) --max-len 64 --mode train --scan sequential
	$(SSM) run memory-ceiling $(SMOKE_BASE) --memory-limit 300MB
	$(SSM) run throughput --backend torch-cpu --quick --out $(SMOKE_OUT)/results --timeout 300 --arch mamba,mamba2 --impl hf,mamba-ssm --mode train,forward,decode
	$(SSM) report $(SMOKE_OUT)/results --format markdown --output $(SMOKE_OUT)/report.md
	$(SSM) report $(SMOKE_OUT)/results --format html --output $(SMOKE_OUT)/report.html
	@echo "ci-smoke report: $(SMOKE_OUT)/report.md, $(SMOKE_OUT)/report.html"

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) tools/overhead.py

clean:
	rm -rf $(VENV) reports/results reports/ci-smoke reports/demo.md *.egg-info
