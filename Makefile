# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
WORKSPACE ?= demo
PORT   ?= 8501

.PHONY: install run test docs bench browser java clean

$(BIN)/abproxy: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/abproxy

run: install
	@test -f $(WORKSPACE)/abproxy.yaml || $(BIN)/abproxy demo --workspace $(WORKSPACE)
	$(BIN)/abproxy run --workspace $(WORKSPACE) || true
	@echo "abproxy report: http://localhost:$(PORT)"
	@# the demo keeps receiving new files (abproxy demo --live) while the scheduler and report run
	@if [ "$(WORKSPACE)" = demo ]; then $(BIN)/abproxy demo --workspace demo --live --every 60 & \
	  LIVE=$$!; trap 'kill $$LIVE 2>/dev/null' EXIT INT TERM; \
	  $(BIN)/abproxy serve --workspace $(WORKSPACE) --port $(PORT); \
	else $(BIN)/abproxy serve --workspace $(WORKSPACE) --port $(PORT); fi

browser:
	@command -v chromium >/dev/null 2>&1 || command -v /usr/bin/chromium >/dev/null 2>&1 || \
	  { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 || \
	    echo "warning: could not install Debian's chromium; browser tests will be skipped"; }

# engine: spark (pyspark, in the dev extra) needs a JRE: Debian's, only when no `java` is on the PATH
java:
	@command -v java >/dev/null 2>&1 || { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq default-jre-headless) >/dev/null 2>&1 || \
	  echo "warning: could not install Debian's default-jre-headless; Spark tests will be skipped"; }

test: install browser java
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# the README's screenshots and docs/review-example.html, from the browser tests (a plain test run
# writes them to a temp folder and leaves the checkout clean)
docs: install browser
	ABPROXY_WRITE_DOCS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile -m browser tests/test_browser.py tests/test_demo.py

bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/analyze.py

clean:
	rm -rf $(VENV) .pytest_cache
