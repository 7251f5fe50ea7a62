"""Readers for files that may be damaged or hostile: bounded YAML, JSON, restricted unpickling.

Every file ganforge reads comes from outside the program (a config someone sent, a data set
from the web, a run directory on a shared disk). These readers fail with one exception type
per format, never run code, and bound what a small file may expand to:

- YAML: ``yaml.SafeLoader`` with a nesting limit (deep nesting exhausts Python's recursion)
  and a limit on the size of the document with every alias expanded (an "alias bomb" of a few
  hundred bytes expands to billions of nodes). Failures are ``YamlLimitError`` (a YAMLError).
- JSON: ``json.loads`` whose deep-nesting RecursionError becomes a ValueError like any other
  parse failure.
- pickle: ``restricted_loads`` admits only the globals a plain data pickle (CIFAR-10's python
  batches) needs: builtin containers, bytes, str, numbers and numpy arrays. Anything else (a
  function, a class, ``os.system``) is an ``UnpicklingError`` before it can be called.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_YAML_DEPTH = 64  # nesting levels of a YAML document (configs use 3)
MAX_YAML_NODES = 100_000  # nodes with aliases expanded (a config has a few hundred)


class YamlLimitError(yaml.YAMLError):
    """A YAML document nested too deeply or too large once its aliases are expanded."""


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _expanded_size(root: Node, limit: int) -> int:
    """Nodes of the document with every alias expanded (shared nodes counted once per use).

    Iterative and memoised, so an alias bomb is measured without being expanded; a recursive
    alias (an anchor used inside itself) is refused, as it would expand forever.
    """
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in _children(node))
            if sizes[key] > limit:
                raise YamlLimitError(
                    f"the document expands to more than {limit:,} values (aliases); "
                    "write it out without nested aliases"
                )
            continue
        if key in sizes:
            continue
        if key in open_:
            raise YamlLimitError("an alias refers to the node that contains it")
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


class BoundedSafeLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader (plain data only) with nesting and alias-expansion limits."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YamlLimitError(f"nested deeper than {MAX_YAML_DEPTH} levels")
            return super().compose_node(parent, index)  # pyright: ignore[reportArgumentType]
        finally:
            self._depth -= 1

    def compose_document(self) -> Node | None:
        node = super().compose_document()
        if node is not None:
            _expanded_size(node, MAX_YAML_NODES)
        return node


def load_yaml(text: str | bytes) -> Any:
    """Parse YAML as plain data within the limits; raises ``yaml.YAMLError`` on any failure.

    Only YAMLError escapes: a RecursionError or a value error of a constructor (a date like
    2024-13-45) is reported as one.
    """
    try:
        return yaml.load(text, Loader=BoundedSafeLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError:
        raise
    except (RecursionError, ValueError, TypeError, OverflowError) as e:
        raise yaml.YAMLError(f"{type(e).__name__}: {e}") from None


def finite_number(value: Any) -> bool:
    """Whether ``value`` is an int or float (not a bool) that is finite as a float; a JSON
    integer too large for a float (10**400) is not."""
    if type(value) not in (int, float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def load_json(text: str | bytes) -> Any:
    """``json.loads`` where every failure, deep nesting included, is a ValueError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


# ---------------------------------------------------------------- pickle, restricted

# (module, name) pairs a plain-data pickle may name: numpy's array reconstruction and dtypes.
# The builtin containers, str, bytes and numbers are opcodes of the pickle format itself and
# need no global; "_codecs.encode" is how protocol 2 writes bytes (latin-1 text back to bytes).
PICKLE_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("builtins", "bytearray"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("__builtin__", "bytearray"),
        ("__builtin__", "set"),
        ("__builtin__", "frozenset"),
    }
)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only ``PICKLE_GLOBALS``: data comes out, code never runs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: only plain data (containers, bytes, str, "
                "numbers, numpy arrays) is read from a pickle"
            )
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused a persistent id: only plain data is read")


def restricted_loads(data: bytes, encoding: str = "ASCII") -> Any:
    """Unpickle ``data`` admitting only plain data (see ``RestrictedUnpickler``).

    Raises ``pickle.UnpicklingError`` for anything else, and for any parse failure.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
    except pickle.UnpicklingError:
        raise
    except Exception as e:  # truncated or malformed bytes: any failure is an unreadable file
        raise pickle.UnpicklingError(f"{type(e).__name__}: {e}") from None
