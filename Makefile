# The two commands of the README: `make demo` runs the main job, `make test` the tests.
.PHONY: install demo test test-unit test-integration soak broker-start broker-stop lint clean

install:
	scripts/bootstrap.sh

demo:
	scripts/demo.sh

# two test processes, each with its own broker (tests/conftest.py): most of the suite waits on
# real workers, so two share 2 cores well
PYTEST_PROCESSES ?= 2
test: install
	.venv/bin/python -m pytest -q -n $(PYTEST_PROCESSES) --dist worksteal

test-unit: install
	.venv/bin/python -m pytest -q tests/unit

test-integration: install
	.venv/bin/python -m pytest -q -n $(PYTEST_PROCESSES) --dist worksteal tests/integration

# kill -9 / restart cycles for MINUTES minutes; prints events in, outputs, duplicates, losses
MINUTES ?= 10
soak: install
	.venv/bin/python -m tests.soak --minutes $(MINUTES)

lint: install
	.venv/bin/pyflakes app agents tables tests

broker-start: install
	.venv/bin/weir broker start

broker-stop:
	.venv/bin/weir broker stop

clean:
	-.venv/bin/weir broker stop
	rm -rf .weir
