# facesynth: `make demo` sets everything up and runs the main job; `make test` runs the suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= out/demo

.PHONY: demo test install bench clean

$(BIN)/facesynth: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 2>/dev/null || true
	# torch first and pinned: the CPU wheel on this disk (an unpinned torch pulls a CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/facesynth

demo: install
	$(BIN)/facesynth rotate assets/astronaut.png --yaw -60,-45,-30,-15,0,15,30,45,60 --size 256 --export-mesh glb --out $(OUT)
	@echo "Demo output: $(OUT)/ (PNG views, astronaut_mesh.glb, manifest.jsonl, rotate.json)"

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/pip install -q eos-py  # benchmark-only: the eos-py baseline of bench_real_photos
	cd benchmarks && for b in bench_fit_synthetic bench_real_photos bench_dense bench_render bench_rasterizer bench_identity; do ../$(BIN)/python $$b.py || exit 1; done

clean:
	rm -rf out .pytest_cache
