"""The package's modules import one another without a cycle, function-level imports included;
frame counts come from each feature extractor (no type switch on one backbone)."""

import ast
from pathlib import Path

import pytest
import torch
from speechbrain.lobes.features import Fbank

from qieemo_sb.encoders.whisper import WhisperFeatures
from qieemo_sb.features import feature_frames

PACKAGE = Path(__file__).resolve().parents[1] / "qieemo_sb"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph():
    """{module: the qieemo_sb modules it imports}, from every import statement of its source."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from package import submodule` imports the submodule.
                targets.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                               for a in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        state[module] = "done"
        stack.pop()
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "qieemo_sb.features" in graph and "qieemo_sb.encoders.output" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_each_feature_extractor_counts_its_frames():
    samples = torch.tensor([16000, 8001])
    assert feature_frames(Fbank(), samples).tolist() == [101, 51]
    assert feature_frames(WhisperFeatures(), samples).tolist() == WhisperFeatures.num_frames(samples).tolist()
    with pytest.raises(TypeError, match="Linear has no num_frames"):
        feature_frames(torch.nn.Linear(2, 2), samples)
