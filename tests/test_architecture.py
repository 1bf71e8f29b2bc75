"""The layout as checks anyone can rerun: no import cycles, torch-free layers, module sizes, no copies."""

import ast
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

SRC = REPO / "src" / "emodet"
MAX_LINES = 300  # a longer module says why at its top ("longer than 300 lines because ...")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every module of emodet and the emodet modules it imports, at top level or inside functions."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:  # importing a.b.c runs the __init__ of a and a.b first
                parts = t.split(".")
                deps |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)} & set(modules)
        graph[name] = deps - {name} - {p for p in deps if name.startswith(p + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles():
    graph = import_graph()
    assert "emodet.runs" in graph and graph["emodet.workflows.cv"]  # the graph was read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("code", [
    "import emodet.runtime",
    "import emodet.core.audio, emodet.core.files, emodet.data.corpora, emodet.data.splits",
    "from emodet.cli import main; main(['data', 'prepare', '--help'])",
])
def test_torch_free_layers(code):
    probe = f"import sys\ntry:\n    {code}\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False", f"{code!r} imported torch"


def test_data_prepare_imports_no_torch(tmp_path):
    from emodet.data.synth import generate_corpus

    generate_corpus(tmp_path / "c", per_class=1, speakers=2, seed=0)
    probe = ("import sys\nfrom emodet.cli import main\n"
             f"code = main(['data', 'prepare', '--corpus', 'folder', '--root', {str(tmp_path / 'c')!r}, '--out', "
             f"{str(tmp_path / 'm.csv')!r}, '--val', '0', '--test', '1'])\n"
             "print(code, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "0 False", out.stdout + out.stderr


def test_modules_are_short_or_say_why():
    long = []
    for path in SRC.rglob("*.py"):
        lines = path.read_text().splitlines()
        head = "\n".join(lines[:15])
        if len(lines) > MAX_LINES and not re.search(r"longer than \d+ lines because", head):
            long.append(f"{path.relative_to(SRC)} ({len(lines)} lines)")
    assert not long, "modules over 300 lines without a reason at their top: " + ", ".join(long)


def _blocks(path: Path, size: int = 6):
    """Windows of ``size`` consecutive meaningful lines (stripped; imports, decorators, docstring and
    closing-bracket lines skipped), with the line each starts on."""
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if len(text) < 12 or text.startswith(("#", "import ", "from ", "@", '"""', "return ", ")", "]", "}")):
            continue
        lines.append((number, text))
    for i in range(len(lines) - size + 1):
        window = [t for _, t in lines[i:i + size]]
        yield hashlib.sha1("\n".join(window).encode()).hexdigest(), lines[i][0]


def test_no_repeated_blocks_of_code():
    seen, repeats = {}, []
    for path in sorted(SRC.rglob("*.py")):
        for digest, line in _blocks(path):
            where = f"{path.relative_to(SRC)}:{line}"
            if digest in seen and seen[digest].split(":")[0] != where.split(":")[0]:
                repeats.append(f"{seen[digest]} and {where}")
            seen.setdefault(digest, where)
    assert not repeats, "the same 6 lines in two modules (make one serve): " + "; ".join(repeats[:5])
