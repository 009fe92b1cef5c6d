# Two commands do all set-up: `make demo` and `make test`. Both build .venv on first use.
# On a machine whose Python already has the dependencies (the GPU machine): make test PY=python3 SETUP=
VENV  ?= .venv
PY    ?= $(VENV)/bin/python
SETUP ?= $(VENV)/.installed
# `make stress` also installs MLX's CPU build (mlx[cpu]), the reference of tests/test_mlx_differential.py;
# without it (no network, or MLX= on a machine of its own) that test skips.
MLX   ?= $(VENV)/.mlx

.PHONY: demo test stress lint bench cuda-check clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test,distributed]'
	touch $@

# `make cuda-check` compiles every kind of umx's CUDA kernel with NVRTC and imports the CUDA backend, with no GPU:
# CuPy and NVIDIA's NVRTC and header wheels, in a venv of their own.
CUDA_VENV ?= .venv-cuda

$(CUDA_VENV)/.installed: pyproject.toml
	python3 -m venv $(CUDA_VENV)
	$(CUDA_VENV)/bin/python -m pip install -q --upgrade pip
	$(CUDA_VENV)/bin/python -m pip install -q -e '.[test]' cupy-cuda12x nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12
	touch $@

$(VENV)/.mlx: $(VENV)/.installed
	-$(VENV)/bin/python -m pip install -q "mlx[cpu]"
	touch $@

demo: $(SETUP)
	$(PY) bench/seed.py

test: $(SETUP)
	$(PY) -m pytest

stress: $(SETUP) $(MLX)
	UMX_STRESS_PROGRAMS=5000 $(PY) -m pytest tests/test_stress.py -q
	UMX_STRESS_GRAD_PROGRAMS=3000 $(PY) -m pytest tests/test_stress_grad.py -q
	UMX_BAD_INPUT_EXAMPLES=200 $(PY) -m pytest tests/test_bad_input.py -q
	UMX_IO_FUZZ_EXAMPLES=3000 $(PY) -m pytest tests/test_io_fuzz.py tests/test_export.py -k fuzz -q
	UMX_MLX_DIFF_PROGRAMS=20000 $(PY) -m pytest tests/test_mlx_differential.py -q

cuda-check: $(CUDA_VENV)/.installed
	$(CUDA_VENV)/bin/python -m pytest tests/test_cuda_sources.py

lint: $(SETUP)
	$(PY) -m ruff check umx tests bench

bench: $(SETUP)
	$(PY) bench/streams.py
	$(PY) bench/overhead.py
	$(PY) bench/seed.py

clean:
	rm -rf $(VENV) $(CUDA_VENV) build *.egg-info
