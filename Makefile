# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODELS := models/manifest.json

.PHONY: demo llm-demo test models lint bench clean proto

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

$(MODELS): $(STAMP)
	$(BIN)/reference-server build-models

models: $(MODELS)

# Third-party model servers the tests aim at (tests/targets.py), each in a virtualenv of its own under
# .venv-targets/, never in .venv: MLServer 1.7.1 pins fastapi < 0.116 (so starlette 0.46), which cannot
# share a venv with the starlette 1.x the reference server runs on, and KServe brings 30-odd packages
# (a Kubernetes client among them) the harness has no use for. The pins are in the stamps' names, so a
# new pin installs again. MLServer 1.7.1 needs Python 3.9 to 3.12: set TARGET_PYTHON where python3 is newer.
TARGET_PYTHON ?= $(PYTHON)
TARGETS := .venv-targets
MLSERVER := $(TARGETS)/mlserver/.installed-mlserver-1.7.1
KSERVE := $(TARGETS)/kserve/.installed-kserve-0.21.0

$(MLSERVER):
	@test -x $(@D)/bin/python || $(TARGET_PYTHON) -m venv $(@D)
	$(@D)/bin/python -m pip install --quiet --disable-pip-version-check mlserver==1.7.1 mlserver-sklearn==1.7.1
	@touch $@

$(KSERVE):
	@test -x $(@D)/bin/python || $(TARGET_PYTHON) -m venv $(@D)
	$(@D)/bin/python -m pip install --quiet --disable-pip-version-check kserve==0.21.0
	@touch $@

# Every test, slow ones included; the ten slowest are listed so the suite's time stays in view.
test: $(MODELS) $(MLSERVER) $(KSERVE)
	$(BIN)/python -m pytest -q --durations=10

# The headline job, 10 to 17 minutes on 2 cores: capacity of MiniLM fp32 and int8 under a latency SLO
# (each server on core 0, the load generator on core 1), the two compared on the same traffic, the
# cost projected, and one report: results/demo/report.html.
DEMO := results/demo
DEMO_SLO := p95<100ms
demo: $(MODELS)
	$(BIN)/reference-server selftest --model minilm --variant fp32 --variant int8
	rm -rf $(DEMO)
	$(BIN)/loadtest capacity scenarios/queries.toml --profile minilm-fp32 --slo "$(DEMO_SLO)" --resolution 10% --out $(DEMO)/capacity-fp32
	$(BIN)/loadtest capacity scenarios/queries.toml --profile minilm-int8 --slo "$(DEMO_SLO)" --resolution 10% --out $(DEMO)/capacity-int8
	$(BIN)/loadtest compare scenarios/queries.toml minilm-fp32 minilm-int8 --rounds 3 --agreement 128 \
		--capacity $(DEMO)/capacity-fp32 $(DEMO)/capacity-int8 --out $(DEMO)/compare
	$(BIN)/loadtest cost $(DEMO)/capacity-fp32 $(DEMO)/capacity-int8 --managed example-openai-embeddings \
		--managed example-openai-embeddings-large --forecast "mean=20/s peak=3x growth=1,10,100" --out $(DEMO)/cost
	$(BIN)/loadtest report $(DEMO)

# The same study for a generative endpoint, 30 to 45 minutes on 2 cores once installed: SmolLM2-135M fp32 and
# int8 on the reference server's generative target, capacity under token SLOs (time to first token and time
# per output token), the two compared (with greedy-output agreement), cost per 1M output tokens against a
# per-token API, and one report: results/llm/report.html. See docs/llm-endpoints.md.
LLM := results/llm
LLM_SLO := --slo "ttft_p90<2s" --slo "tpot_p90<150ms"
llm-demo: $(MODELS)
	rm -rf $(LLM)
	$(BIN)/loadtest capacity scenarios/chat.toml --profile smollm2-fp32 $(LLM_SLO) --resolution 10% --max-step 180s \
		--no-class --out $(LLM)/capacity-fp32
	$(BIN)/loadtest capacity scenarios/chat.toml --profile smollm2-int8 $(LLM_SLO) --resolution 10% --max-step 180s \
		--no-class --out $(LLM)/capacity-int8
	$(BIN)/loadtest compare scenarios/chat.toml smollm2-fp32 smollm2-int8 --rounds 2 --rate 0.4 --duration 40s \
		--agreement 16 --capacity $(LLM)/capacity-fp32 $(LLM)/capacity-int8 --out $(LLM)/compare
	$(BIN)/loadtest cost $(LLM)/capacity-fp32 $(LLM)/capacity-int8 --managed example-openai-gpt-4o-mini \
		--forecast "mean=2/s peak=3x growth=1,10,100" --out $(LLM)/cost
	$(BIN)/loadtest report $(LLM)

lint: $(STAMP)
	$(BIN)/ruff check loadtest reference_server tests benchmarks
	$(BIN)/ruff format --check loadtest reference_server tests benchmarks

bench: $(MODELS)
	$(BIN)/python benchmarks/server_throughput.py
	$(BIN)/python benchmarks/generator.py
	$(BIN)/python benchmarks/sampler.py
	$(BIN)/python benchmarks/replay_memory.py
	$(BIN)/python benchmarks/sustained_open_load.py

clean:
	rm -rf $(VENV) $(TARGETS) models build *.egg-info

# The OIP v2 gRPC modules, from reference_server/oip_grpc/oip_v2.proto. grpcio-tools 1.78.2 makes
# protobuf 6.31 code (which protobuf 6 and 7 both run); it is kept out of the venv because newer
# releases require protobuf 7, which tritonclient's gRPC client does not accept. Imports are made
# relative, and the messages go in a pool of their own, so a process may also import tritonclient's
# or MLServer's modules, which define the same names in the default pool.
PROTO := reference_server/oip_grpc
proto:
	@test -x build/protoc-venv/bin/python || $(PYTHON) -m venv build/protoc-venv
	build/protoc-venv/bin/python -m pip install --quiet --disable-pip-version-check grpcio-tools==1.78.2
	cd $(PROTO) && ../../build/protoc-venv/bin/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. oip_v2.proto
	sed -i 's/^import oip_v2_pb2 as/from . import oip_v2_pb2 as/' $(PROTO)/oip_v2_pb2_grpc.py
	sed -i 's/_descriptor_pool.Default().AddSerializedFile/_descriptor_pool.DescriptorPool().AddSerializedFile/' $(PROTO)/oip_v2_pb2.py
