# The two commands a user needs: `make run` and `make test`. Both set themselves up from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench lint mutate clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	CRAMP_PROFILE=local $(BIN)/cramp-cds serve

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

lint: $(STAMP)
	$(BIN)/ruff check plugin cds_hooks tests benchmarks tools

# Mutation testing (not part of `make test`: it takes an hour or more on 2 cores). Incremental: results are kept in
# mutants/, functions that changed are retested, and the survivors are retried against the current tests.
# One module: `make mutate MUTANTS='plugin.units*'`. MUTATE_JOBS parallel workers (default 2), niced.
MUTANTS ?=
MUTATE_JOBS ?= 2
mutate: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,mutate]'
	nice -n 19 $(BIN)/mutmut run --max-children $(MUTATE_JOBS) $(foreach m,$(MUTANTS),'$(m)') > mutants.log 2>&1 \
	  || { tail -40 mutants.log; exit 1; }
	survivors="$$($(BIN)/python tools/mutation_score.py --survivor-names $(subst *,,$(MUTANTS)))"; \
	if [ -n "$$survivors" ]; then nice -n 19 $(BIN)/mutmut run --max-children $(MUTATE_JOBS) $$survivors \
	  >> mutants.log 2>&1 || { tail -40 mutants.log; exit 1; }; fi
	$(BIN)/python tools/mutation_score.py $(subst *,,$(MUTANTS))

clean:
	rm -rf $(VENV) var build *.egg-info mutants mutants.log
