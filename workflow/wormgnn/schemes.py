"""Label schemes and the behavioural states each source carries.

Plain Python with no third-party import, so that the Snakefile can check a config
against it before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterable

BUILTIN_SCHEMES: dict[str, dict[str, list[str]]] = {
    "kato8": {s.lower(): [s] for s in ("FWD", "SLOW", "DT", "VT", "REV1", "REV2", "REVSUS")},
    "kato4": {
        "forward": ["FWD", "SLOW"],
        "reversal": ["REV1", "REV2", "REVSUS", "REV"],
        "turn": ["DT", "VT", "TURN"],
    },
    "fwdrev": {
        "forward": ["FWD", "SLOW"],
        "reversal": ["REV1", "REV2", "REVSUS", "REV"],
    },
}
EXCLUDED_STATES = ("NOSTATE",)
#: States a built-in scheme leaves out on purpose (label -1), beside ``EXCLUDED_STATES``.
SCHEME_EXCLUDES: dict[str, tuple[str, ...]] = {"fwdrev": ("DT", "VT", "TURN")}

#: The behavioural states each kind of file carries. Kato's files carry Kato's states; an
#: NWB recording of another lab carries forward and reversal (bouts or signed velocity).
KATO_STATES = ("FWD", "SLOW", "DT", "VT", "REV1", "REV2", "REVSUS", "NOSTATE", "REV", "TURN")
NWB_STATES = ("FWD", "REV")
#: The states of each dataset ``source``, known before anything is read (the synthetic
#: worm carries Kato's states in either file format).
STATES_BY_SOURCE = {
    "osf": KATO_STATES,
    "local": KATO_STATES,
    "synthetic": KATO_STATES,
    "nwb": NWB_STATES,
    "dandi": NWB_STATES,
}


def scheme_classes(name: str, custom: dict[str, dict[str, list[str]]] | None = None):
    """The classes (name -> states) of a built-in or custom scheme."""
    table = {**BUILTIN_SCHEMES, **(custom or {})}
    if name not in table:
        raise ValueError(f"labels.scheme {name!r} is unknown; choose one of {sorted(table)}")
    return table[name]


def unsupported_classes(states: Iterable[str], classes: dict[str, list[str]]) -> list[str]:
    """The classes of a scheme that recordings carrying ``states`` can never show: a
    class none of whose states they carry (Kato's turns in a Flavell NWB file)."""
    carried = {s.upper() for s in states}
    return [name for name, members in classes.items() if not carried & {m.upper() for m in members}]
