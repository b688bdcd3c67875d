import pytest
from wormgnn.names import (
    matches_class,
    normalise_name,
    resolve_identity,
    resolve_worm,
    shared_names,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("VB01", "VB1"),
        ("DB02", "DB2"),
        ("AS10", "AS10"),
        ("vb01 ", "VB1"),
        ("AVAL", "AVAL"),
        ("RMED", "RMED"),
        ("17", ""),
        ("", ""),
        ("---", ""),
        ("OLQ?", ""),
    ],
)
def test_normalise_name(raw, expected):
    assert normalise_name(raw) == expected


def test_ambiguous_and_unidentified_rois_are_unnamed():
    assert resolve_identity(["OLQDR", "URYDR"]) == ""
    assert resolve_identity(["RIBR", "---"]) == "RIBR"
    assert resolve_identity(["VB01", "VB1"]) == "VB1"  # the same neuron twice
    assert resolve_identity([]) == ""
    assert resolve_identity("12") == ""


def test_a_name_claimed_by_two_rois_is_ambiguous():
    assert resolve_worm([["AVAL"], ["AVAL"], ["AVAR"], []]) == ["", "", "AVAR", ""]


def test_shared_names_and_label_classes():
    assert shared_names([["AVAL", "", "VB1"], ["VB1", "AVAL", "RIS"]]) == ["AVAL", "VB1"]
    assert shared_names([]) == []
    assert matches_class("AVAL", ["AVA"]) and matches_class("SMDVR", ["SMDV"])
    assert not matches_class("AVBL", ["AVA"]) and not matches_class("AVAL", ["AV"])
    assert not matches_class("", ["AVA"])
