# kiroku: two commands matter. `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kiroku-installed

.PHONY: run test install services-up services-down clean-state bench score intake-check

$(STAMP): pyproject.toml deploy/bootstrap.sh
	bash deploy/bootstrap.sh $(VENV)
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/kiroku run

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

services-up: $(STAMP)
	$(VENV)/bin/kiroku services up

services-down: $(STAMP)
	$(VENV)/bin/kiroku services down

score: $(STAMP)
	$(PY) ../shared/eval/score.py --corpus ../shared/samples --cmd '$(VENV)/bin/kiroku process {inputs} --out {out}'

bench: $(STAMP)
	$(PY) bench/throughput.py

# by hand: a good scan, a link to /etc/passwd, a Shift_JIS name, a zero-byte file... into a test inbox
intake-check: $(STAMP)
	$(PY) bench/intake_check.py
