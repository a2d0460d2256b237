.PHONY: test lint fmt bench
test:
	python -m pytest -q
lint:
	ruff check . && ruff format --check .
fmt:
	ruff format . && ruff check --fix .
bench:
	python benchmarks/bench_plan.py
