"""A layered drawing layout for a directed acyclic graph (Sugiyama et al. 1981), so that
the rule graph can be drawn with matplotlib alone, without Graphviz.

1. **Layers:** each node sits in the layer of its longest path from a source, so every
   edge points downwards.
2. **Dummies:** an edge that spans several layers gets a dummy node in each layer it
   crosses. The dummy takes a slot of its own there, so the edge passes between the
   boxes of that layer instead of through one.
3. **Order:** barycentre sweeps, down and up, place each node under the mean position of
   its neighbours in the layer before; the order with the fewest crossings is kept.
4. **Coordinates:** each node goes as close as it can to the mean x of its neighbours,
   keeping the layer's order and a minimum distance between neighbours (a least-squares
   problem under order constraints, solved exactly by pool-adjacent-violators).

Node names are strings; a dummy is the tuple ``(source, target, layer)`` of its edge.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field

Node = Hashable


@dataclass
class Layout:
    """Where everything goes: ``x`` and ``layer`` of every node (dummies included), the
    nodes of each layer from left to right, and each edge's chain of nodes from its
    source to its target through its dummies."""

    layer: dict[Node, int]
    order: list[list[Node]]
    x: dict[Node, float]
    routes: dict[tuple[str, str], list[Node]] = field(default_factory=dict)
    crossings: int = 0


def longest_path_layers(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Layer of each node: the length of the longest path from a source to it."""
    children = defaultdict(list)
    indegree = dict.fromkeys(nodes, 0)
    for a, b in edges:
        children[a].append(b)
        indegree[b] += 1
    layer = dict.fromkeys(nodes, 0)
    ready = [n for n in nodes if indegree[n] == 0]
    seen = 0
    while ready:
        node = ready.pop()
        seen += 1
        for child in children[node]:
            layer[child] = max(layer[child], layer[node] + 1)
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if seen != len(nodes):
        raise ValueError("the graph has a cycle; a layered layout needs a DAG")
    return layer


def count_crossings(order: list[list[Node]], segments: list[tuple[Node, Node]]) -> int:
    """Pairs of segments that cross; each segment joins a node to one in the next layer."""
    pos = {n: i for row in order for i, n in enumerate(row)}
    layer_of = {n: k for k, row in enumerate(order) for n in row}
    by_layer = defaultdict(list)
    for a, b in segments:
        by_layer[layer_of[a]].append((pos[a], pos[b]))
    total = 0
    for pairs in by_layer.values():
        for i, (a1, b1) in enumerate(pairs):
            total += sum((a1 - a2) * (b1 - b2) < 0 for a2, b2 in pairs[i + 1 :])
    return total


def _isotonic(targets: list[float]) -> list[float]:
    """The non-decreasing sequence nearest to ``targets`` in least squares."""
    blocks: list[list[float]] = []  # [sum, count] of pooled runs
    for value in targets:
        blocks.append([value, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return [total / count for total, count in blocks for _ in range(int(count))]


def _place(wanted: list[float], gaps: list[float]) -> list[float]:
    """Positions nearest to ``wanted`` (least squares) that keep their order with at
    least ``gaps[i]`` between neighbours i and i+1."""
    offsets = [0.0]
    for gap in gaps:
        offsets.append(offsets[-1] + gap)
    shifted = _isotonic([w - o for w, o in zip(wanted, offsets, strict=True)])
    return [s + o for s, o in zip(shifted, offsets, strict=True)]


def _barycentre_order(
    row: list[Node], ref: list[Node], links: dict[Node, list[Node]]
) -> list[Node]:
    """``row`` sorted by the mean position of each node's ``links`` in the layer ``ref``
    (a node without links keeps its place; ties keep the current order)."""
    pos = {n: i for i, n in enumerate(ref)}
    here = {n: i for i, n in enumerate(row)}

    def key(n: Node) -> tuple[float, int]:
        linked = [pos[m] for m in links[n]]
        return (sum(linked) / len(linked) if linked else here[n], here[n])

    return sorted(row, key=key)


def layered_layout(
    nodes: list[str],
    edges: list[tuple[str, str]],
    node_width: float = 1.0,
    dummy_width: float = 0.25,
    sweeps: int = 8,
) -> Layout:
    """Layers, order and x coordinates of a DAG's nodes (see the module docstring).

    Args:
        nodes: node names.
        edges: (source, target) pairs.
        node_width: horizontal room of a node, its box and a margin.
        dummy_width: room of an edge passing through a layer.
        sweeps: rounds of ordering and of coordinate refinement.
    """
    layer: dict[Node, int] = dict(longest_path_layers(nodes, edges))
    n_layers = max(layer.values(), default=-1) + 1
    routes: dict[tuple[str, str], list[Node]] = {}
    segments: list[tuple[Node, Node]] = []
    for a, b in edges:
        chain: list[Node] = [a]
        for k in range(layer[a] + 1, layer[b]):
            dummy = (a, b, k)
            layer[dummy] = k
            chain.append(dummy)
        chain.append(b)
        routes[a, b] = chain
        segments += list(zip(chain, chain[1:], strict=False))
    up, down = defaultdict(list), defaultdict(list)
    for a, b in segments:
        down[a].append(b)
        up[b].append(a)

    # order: barycentre sweeps, keeping the best order seen
    order = [sorted((n for n in layer if layer[n] == k), key=str) for k in range(n_layers)]
    best, best_crossings = [row[:] for row in order], count_crossings(order, segments)
    for sweep in range(2 * sweeps):
        downward = sweep % 2 == 0
        layers = range(1, n_layers) if downward else range(n_layers - 2, -1, -1)
        for k in layers:
            ref = order[k - 1] if downward else order[k + 1]
            order[k] = _barycentre_order(order[k], ref, up if downward else down)
        crossings = count_crossings(order, segments)
        if crossings < best_crossings:
            best, best_crossings = [row[:] for row in order], crossings
    order = best

    # coordinates: pulled towards the neighbours, order and spacing kept
    def width(n: Node) -> float:
        return dummy_width if isinstance(n, tuple) else node_width

    x: dict[Node, float] = {}
    for row in order:
        left = 0.0
        for n in row:
            x[n] = left + width(n) / 2
            left += width(n)
    for sweep in range(3 * sweeps):
        neighbours = (up, down, None)[sweep % 3]
        for row in order:
            wanted = []
            for n in row:
                linked = up[n] + down[n] if neighbours is None else neighbours[n]
                wanted.append(sum(x[m] for m in linked) / len(linked) if linked else x[n])
            gaps = [(width(a) + width(b)) / 2 for a, b in zip(row, row[1:], strict=False)]
            x.update(zip(row, _place(wanted, gaps), strict=True))
    shift = min(x[n] - width(n) / 2 for n in x) if x else 0.0
    x = {n: v - shift for n, v in x.items()}
    return Layout(layer, order, x, routes, best_crossings)
