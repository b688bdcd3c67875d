"""The layered layout behind the rule-graph figure, on tiny hand-made graphs."""

import pytest
from wormgnn import layout


def test_layers_are_longest_paths():
    edges = [("a", "b"), ("b", "c"), ("a", "c"), ("c", "d"), ("x", "d")]
    layers = layout.longest_path_layers(["a", "b", "c", "d", "x"], edges)
    assert layers == {"a": 0, "b": 1, "c": 2, "d": 3, "x": 0}


def test_a_cycle_is_an_error():
    with pytest.raises(ValueError, match="cycle"):
        layout.longest_path_layers(["a", "b"], [("a", "b"), ("b", "a")])


def test_a_long_edge_gets_a_slot_in_every_layer_it_crosses():
    edges = [("a", "b"), ("b", "c"), ("c", "d"), ("a", "d")]
    lay = layout.layered_layout(["a", "b", "c", "d"], edges)
    assert lay.routes["a", "d"] == ["a", ("a", "d", 1), ("a", "d", 2), "d"]
    assert lay.routes["a", "b"] == ["a", "b"]
    for k in (1, 2):  # the dummy sits beside the real node, at least half a box away
        real = "b" if k == 1 else "c"
        assert abs(lay.x["a", "d", k] - lay.x[real]) >= (1.0 + 0.25) / 2 - 1e-9


def test_the_order_removes_avoidable_crossings():
    # drawn in name order, a->y and b->x cross; swapping one layer removes the crossing
    edges = [("a", "y"), ("b", "x")]
    lay = layout.layered_layout(["a", "b", "x", "y"], edges)
    assert lay.crossings == 0
    assert (lay.x["a"] < lay.x["b"]) == (lay.x["y"] < lay.x["x"])


def test_placement_keeps_order_and_spacing_nearest_to_the_wish():
    placed = layout._place([0.0, 0.0, 5.0], [1.0, 1.0])
    assert placed == pytest.approx([-0.5, 0.5, 5.0])
    assert layout._isotonic([3.0, 1.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])


def test_a_child_sits_under_its_parents():
    lay = layout.layered_layout(["p", "q", "c"], [("p", "c"), ("q", "c")])
    assert lay.x["c"] == pytest.approx((lay.x["p"] + lay.x["q"]) / 2)
