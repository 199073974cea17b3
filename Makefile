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

# Mutation testing (not part of `make test`: an hour or more on 2 cores). mutmut copies the sources into mutants/
# once, so each run starts from a fresh copy; MUTATE_KEEP=1 resumes an interrupted run of unchanged code and
# retries its survivors against the current tests. One module: `make mutate MUTANTS='plugin.units*'`; a quick
# estimate: `make mutate MUTATE_SAMPLE=40` (a fixed random sample of 40 mutants per module). Niced.
MUTANTS ?=
MUTATE_JOBS ?= 2
MUTATE_SAMPLE ?=
MUTATE_KEEP ?=
MUTMUT = nice -n 19 $(BIN)/mutmut run --max-children $(MUTATE_JOBS)
SCORE = $(BIN)/python tools/mutation_score.py $(if $(MUTATE_SAMPLE),--sample $(MUTATE_SAMPLE)) $(subst *,,$(MUTANTS))
mutate: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,mutate]'
	$(if $(MUTATE_KEEP),,rm -rf mutants)
	: > mutants.log
	$(if $(MUTATE_SAMPLE),$(MUTMUT) 'just-generate-the-mutants*' >> mutants.log 2>&1 || true)
	$(MUTMUT) $(if $(MUTATE_SAMPLE),$$($(SCORE) --names),$(foreach m,$(MUTANTS),'$(m)')) >> mutants.log 2>&1 \
	  || { tail -40 mutants.log; exit 1; }
	$(if $(MUTATE_KEEP),survivors="$$($(SCORE) --survivor-names)"; [ -z "$$survivors" ] \
	  || $(MUTMUT) $$survivors >> mutants.log 2>&1 || { tail -40 mutants.log; exit 1; })
	$(SCORE)

clean:
	rm -rf $(VENV) var build *.egg-info mutants mutants.log
