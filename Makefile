# shiftq: `make setup` once, then `make test`. `make help` lists everything.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SHIFTQ := $(VENV)/bin/shiftq
TORCH_VERSION ?= 2.13.0
MODEL ?= digitnet
BOARD ?= icebreaker
STAMP := $(VENV)/.shiftq-setup

.PHONY: help setup test test-all bench export clean bitstream flash accel-bitstream layer-bitstream

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e '.[dev]'
	@bash .ci/apt-tools.sh
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv and install shiftq with every tool it uses

# The hardware tests (accelerator, HLS on the trained model) read these exports; a fresh
# clone makes them once (digitnet: PPQ on digits, ~2 min; resnet20: the dry run, ~1 min).
TEST_EXPORTS := build/digitnet/model.json build/resnet20/model.json

build/%/model.json: | $(STAMP)
	$(MAKE) --no-print-directory export MODEL=$*

test: $(STAMP) $(TEST_EXPORTS)  ## the fast test suite (what CI runs; first run also exports digitnet and resnet20)
	$(PY) -m pytest -q -m "not slow" -n 2

test-all: $(STAMP) $(TEST_EXPORTS)  ## every test, the slow ones too
	$(PY) -m pytest -q -n 2

CKPT ?= runs/$(MODEL)/compressed.pt
DATA ?=
RECIPE ?= ppq

export: $(STAMP)  ## export MODEL to build/MODEL (CKPT=, DATA= override; digitnet compresses on digits first)
	@if [ -f "$(CKPT)" ]; then \
	  $(SHIFTQ) export --ckpt $(CKPT) --out build/$(MODEL) $(if $(DATA),--data $(DATA)); \
	elif [ -n "$(DATA)" ] || [ "$(MODEL)" = digitnet ]; then \
	  data=$${DATA:-digits}; [ -n "$(DATA)" ] && data=$(DATA); \
	  echo "no $(CKPT): compressing $(MODEL) on $$data with $(RECIPE) first"; \
	  $(SHIFTQ) compress --model $(MODEL) --data $$data --recipe $(RECIPE) --out $(dir $(CKPT)) && \
	  $(SHIFTQ) export --ckpt $(CKPT) --out build/$(MODEL); \
	else \
	  $(SHIFTQ) export --dry-run $(MODEL) --out build/$(MODEL); \
	fi

bench: $(STAMP)  ## run the benchmarks (ONLY="train ..." to pick; QUICK=1 for a smoke run)
	$(PY) -m bench.run $(if $(QUICK),--quick) $(ONLY)

.PHONY: bench-compress
bench-compress: $(STAMP)  ## digits: ppq, spq, jptp, djpq, picpq at matched BOPs -> docs/results-methods.md (+ .png)
	$(PY) -m bench.bench_methods $(if $(FRESH),--fresh)

SEED ?= 1

# The whole-network accelerator (issue 8): PE array per board in boards/accel_top.py's
# PARALLELISM; on the iCEBreaker the weights go to SPRAM and a weight image (weights.bin) is
# written next to the bitstream, which `make flash` writes into the SPI flash.
bitstream: $(STAMP)  ## bitstream of build/MODEL's whole-network accelerator + UART for BOARD (icebreaker, ulx3s-85f) -> build/MODEL/synth-accel/BOARD; SEED=, CLOCK_MHZ= (ULX3S PLL; 0 = 25 MHz oscillator)
	@test -f build/$(MODEL)/model.json || $(MAKE) --no-print-directory export MODEL=$(MODEL)
	$(SHIFTQ) synth --accel --build build/$(MODEL) --board $(BOARD) --seed $(SEED) $(if $(CLOCK_MHZ),--clock-mhz $(CLOCK_MHZ))

accel-bitstream: bitstream  ## the same as `make bitstream` (its old name)

flash: $(STAMP)  ## program BOARD with build/MODEL's accelerator bitstream (+ its weight image on the iCEBreaker); openFPGALoader or iceprog
	@$(SHIFTQ) flash --accel --build build/$(MODEL) --board $(BOARD)

# Issue 6's one-layer top (a layer on the layer engine behind the UART); flash it with
# `shiftq flash --build build/MODEL --board BOARD` (no --accel).
layer-bitstream: $(STAMP)  ## bitstream of ONE layer of build/MODEL (LAYER=, default the first conv) + UART -> build/MODEL/synth/BOARD; SEED=
	@test -f build/$(MODEL)/model.json || $(MAKE) --no-print-directory export MODEL=$(MODEL)
	$(SHIFTQ) synth --build build/$(MODEL) --board $(BOARD) --seed $(SEED) $(if $(LAYER),--layer $(LAYER))

hls-csim: $(STAMP)  ## C-simulate build/MODEL/hls (g++) against the golden model, every layer
	$(SHIFTQ) hls-csim --build build/$(MODEL) --layers

clean:  ## remove build outputs (keeps .venv and runs/)
	rm -rf build .pytest_cache
