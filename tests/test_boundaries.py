"""Import boundaries: pure modules stay pure, and nothing upstream in the pipeline imports what comes after it.

Two kinds of check. A pure module (cost maths, shapes, threshold parsing, the render kit...) is
imported in a fresh interpreter, and what that pulls in is listed: never the load generator
(Locust, gevent), psutil, gRPC, ONNX Runtime, the engine, a command or the reference server (but
for its gRPC message classes, ``MESSAGE_SCHEMA``), and for the maths not matplotlib either. And
every module's source is parsed, so imports inside functions count too: a subpackage imports only
its own stage of the pipeline and the stages before it, only the edges (engine, commands, CLI)
import the reference server beyond its message classes, and no module imports another module's
``_private`` name.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "loadtest"

NEVER = (
    "locust",
    "gevent",
    "psutil",
    "loadtest.engine",
    "loadtest.commands",
    "reference_server",
    "grpc",
    "onnxruntime",
)
# The one part of the reference server a pure stage may import: OIP v2's gRPC message classes, generated from
# its .proto. They are the protocol's message schema (as the OIP's JSON shapes are), not the server, and load
# protobuf alone; importing them loads the ``reference_server`` package itself, whose __init__ holds only its
# version and must stay that light. Names, not prefixes: the stubs (``oip_v2_pb2_grpc``, grpc) stay out.
MESSAGE_SCHEMA = ("reference_server", "reference_server.oip_grpc", "reference_server.oip_grpc.oip_v2_pb2")
SERVER_EDGES = ("loadtest.engine", "loadtest.commands", "loadtest.cli")  # they start, stop and measure the server
PURE_MATHS = (
    "loadtest.analysis.cost",
    "loadtest.analysis.projection",
    "loadtest.analysis.search",
    "loadtest.analysis.bootstrap",
    "loadtest.analysis.saturation",
    "loadtest.analysis.fidelity",
    "loadtest.analysis.agreement",
    "loadtest.traffic.shapes",
    "loadtest.traffic.arrivals",
    "loadtest.config.scenario",
    "loadtest.config.profile",
    "loadtest.gates.thresholds",
    "loadtest.messy.kinds",
    "loadtest.traffic.grpc_messages",
    "loadtest.replay.describe",
    "loadtest.results.server_split",
    "loadtest.traffic.sse",
    "loadtest.traffic.token_latency",
    "loadtest.results.tokens",
)
# Free of the engine and the server, though they may draw (matplotlib is imported only to draw).
PURE = (
    "loadtest.report.kit",
    "loadtest.report.cost",
    "loadtest.report.cost_chart",
    "loadtest.report.capacity",
    "loadtest.report.compare",
    "loadtest.report.messy",
    "loadtest.report.study",
    "loadtest.analysis.cost_inputs",
    "loadtest.results.capacity_file",
    "loadtest.results.reader",
)

# The pipeline's stages in order. A subpackage may import its own stage and those before it, never one
# after. Stages on one line are siblings: neither comes before the other, and they may import each other.
STAGES = (
    ("config", "traffic", "messy", "replay"),  # what to send, and how
    ("results",),  # the results directory's formats: written by the engine, read by everything after
    ("engine",),
    ("analysis", "gates"),  # both read results; a search's SLO is parsed as a gate is
    ("report",),
    ("commands",),
    ("cli",),
)
RANK = {f"loadtest.{name}": rank for rank, stage in enumerate(STAGES) for name in stage}

# -- what importing a module pulls in --------------------------------------------------------------


@pytest.fixture(scope="module")
def imported() -> dict[str, tuple[list[str], str]]:
    """For each module checked: every module a fresh interpreter has after importing it, and its import trace.

    All interpreters start at once, so the checks take about as long as the slowest import.
    """
    code = "import json, sys; import {}; print(json.dumps(sorted(sys.modules)))"
    started = {
        module: subprocess.Popen(
            [sys.executable, "-X", "importtime", "-c", code.format(module)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for module in (*PURE_MATHS, *PURE)
    }
    found = {}
    for module, process in started.items():
        out, trace = process.communicate(timeout=120)
        assert process.returncode == 0, f"import {module} failed:\n{trace[-2000:]}"
        found[module] = (json.loads(out), trace)
    return found


def _is_within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _chain(trace: str, name: str) -> str:
    """Who imported ``name``, from ``-X importtime``'s trace: each import is listed after those it made, indented."""
    lines = [line.split("|")[-1] for line in trace.splitlines() if line.startswith("import time:") and "|" in line]
    entries = [(len(text) - len(text.lstrip()), text.strip()) for text in lines[1:]]  # [0] is the header
    at = next((i for i, (_, module) in enumerate(entries) if module == name), None)
    if at is None:
        return name
    chain, depth = [name], entries[at][0]
    for level, module in entries[at + 1 :]:
        if level < depth:
            chain.append(module)
            depth = level
    return " <- ".join(chain)


def _offenders(module: str, imported: dict, forbidden: tuple[str, ...]) -> list[str]:
    names, trace = imported[module]
    return [_chain(trace, name) for name in names if _is_within(name, forbidden) and name not in MESSAGE_SCHEMA]


@pytest.mark.parametrize("module", PURE_MATHS)
def test_pure_maths_imports_no_engine_load_generator_server_or_plotting(module, imported):
    assert _offenders(module, imported, (*NEVER, "matplotlib")) == []


@pytest.mark.parametrize("module", PURE)
def test_reports_and_readers_import_no_engine_load_generator_or_server(module, imported):
    assert _offenders(module, imported, NEVER) == []


# -- what each module's source imports ---------------------------------------------------------------


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """Every import in the file, at any depth: (line, module, names taken from it)."""
    name = _name(path)
    return _imports_in(path.read_text(), name if path.name == "__init__.py" else name.rpartition(".")[0])


def _imports_in(source: str, package: str) -> list[tuple[int, str, list[str]]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: from the package, or one of its parents
                base = package.rsplit(".", node.level - 1)[0]
                module = f"{base}.{module}".rstrip(".")
            found.append((node.lineno, module, [alias.name for alias in node.names]))
    return found


def _stage(module: str) -> int | None:
    return RANK.get(".".join(module.split(".")[:2]))


def _relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


@pytest.mark.parametrize("path", [p for p in _modules() if _stage(_name(p)) is not None], ids=_relative)
def test_nothing_upstream_imports_a_later_stage_of_the_pipeline(path):
    stage = _stage(_name(path))
    later = [
        f"line {line}: {module}"
        for line, module, _ in _imports(path)
        if module.startswith("loadtest.") and (_stage(module) or 0) > stage
    ]
    assert later == [], f"{_name(path)} is in stage {STAGES[stage]}; it imports later stages"


@pytest.mark.parametrize("path", [p for p in _modules() if not _is_within(_name(p), SERVER_EDGES)], ids=_relative)
def test_only_the_edges_import_the_reference_server_and_the_rest_at_most_its_message_schema(path):
    """Imports inside functions count too, which a fresh interpreter's list of modules does not see."""
    taken = _server_imports(_imports(path))
    assert [f"line {line}: {name}" for line, name in taken if name not in MESSAGE_SCHEMA] == []


def _server_imports(imports: list[tuple[int, str, list[str]]]) -> list[tuple[int, str]]:
    """What ``imports`` take from the reference server: ``from reference_server import launch`` is
    ``reference_server.launch``; a name taken from the message module is that module."""
    found = []
    for line, module, names in imports:
        if _is_within(module, ("reference_server",)):
            whole = not names or module == MESSAGE_SCHEMA[-1]
            found += [(line, module)] if whole else [(line, f"{module}.{name}") for name in names]
    return found


@pytest.mark.parametrize("path", _modules(), ids=_relative)
def test_no_module_imports_another_modules_private_names(path):
    private = [
        f"line {line}: {name} from {module}"
        for line, module, names in _imports(path)
        for name in names
        if name.startswith("_") and not name.startswith("__") and module != _name(path)
    ]
    assert private == []


def test_the_stages_name_every_subpackage():
    """A new subpackage gets a place in the pipeline, or the layering checks would skip it."""
    subpackages = {f"loadtest.{p.name}" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert subpackages <= set(RANK)


def test_the_server_check_sees_a_server_module_taken_by_name_from_an_allowed_package():
    source = "from reference_server.oip_grpc import oip_v2_pb2\nfrom reference_server.oip_grpc.oip_v2_pb2 import X\n"
    source += (
        "def f():\n    from reference_server import launch\n    import reference_server.oip_grpc.oip_v2_pb2_grpc\n"
    )
    found = [name for _, name in _server_imports(_imports_in(source, "loadtest.traffic")) if name not in MESSAGE_SCHEMA]
    assert found == ["reference_server.launch", "reference_server.oip_grpc.oip_v2_pb2_grpc"]


def test_the_layering_check_sees_imports_inside_functions_and_relative_ones():
    source = "def f():\n    from loadtest.commands.run import run\n    import loadtest.engine.users\n"
    source += "from . import kit\n"
    found = [module for _, module, _ in _imports_in(source, "loadtest.report")]
    assert sorted(found) == ["loadtest.commands.run", "loadtest.engine.users", "loadtest.report"]
