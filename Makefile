# The two commands of the README: `make up` (run the platform) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat setup.py | cksum | cut -d' ' -f1)

.PHONY: install up demo test bench down docs

# torch first: an unpinned torch would pull a multi-GB CUDA build; on a GPU host use e.g.
# `make install TORCH_SPEC=torch` (or the build matching your CUDA / JetPack)
TORCH_SPEC ?= torch==2.13.0
# FAISS: `cpu` (faiss-cpu) here; a GPU host uses `make install EXTRAS=dev,gpu` (faiss-gpu, the same module)
EXTRAS ?= dev,cpu

$(STAMP): setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

up: install            ## embedded PostgreSQL + sample data + dagster dev (:3000) + MLflow UI (:5000)
	$(VENV)/bin/tp up

demo: install          ## the same sample, materialized in one process; prints a summary and exits
	$(VENV)/bin/tp demo

down:
	$(VENV)/bin/tp down

test: install           ## the suite, tests/test_docs.py included (mkdocs build --strict: the dev extra has mkdocs)
	$(PY) -m pytest -q tests

docs: install           ## the manual (docs/, mkdocs.yml) on http://127.0.0.1:8000, rebuilt on every save
	$(VENV)/bin/mkdocs serve

bench: install
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/features.py
	$(PY) benchmarks/serving.py
	$(PY) benchmarks/gate.py
	$(PY) benchmarks/scale.py
	$(PY) benchmarks/models.py
	$(PY) benchmarks/rag.py
	$(PY) benchmarks/outputs.py
	$(PY) benchmarks/cli.py
