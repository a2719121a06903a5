"""Canonical JSON of journal payloads (what is hashed): the fast paths for plain values give
the text of the general rules (NaN/inf to null, tuples to lists, keys to text, enum keys and
values by their value, numpy scalars as numbers), for any nesting."""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.model import Side, Site
from app.record import entries as E


def reference_clean(obj):
    """The rules as first written, with only the general checks."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.floating):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, Mapping):
        return {str(k.value if isinstance(k, enum.Enum) else k): reference_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [reference_clean(v) for v in obj]
    return obj


def reference_json(obj) -> str:
    return json.dumps(reference_clean(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False, default=E._default)


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.sampled_from(list(Side) + list(Site)),
    st.floats(allow_nan=True, width=32).map(np.float32), st.integers(-1000, 1000).map(np.int64),
)
_keys = st.one_of(st.text(max_size=6), st.integers(-5, 5), st.sampled_from(list(Side)), st.booleans())
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.lists(inner, max_size=4).map(tuple),
                            st.dictionaries(_keys, inner, max_size=4),
                            st.dictionaries(st.text(max_size=4), inner, max_size=3).map(MappingProxyType)),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_the_text_is_that_of_the_general_rules(value):
    assert E.canonical_json(value) == reference_json(value)


def test_keys_of_every_kind_become_text():
    text = E.canonical_json({Side.L: 1, 3: 2, True: 3, "x": {Site.VAGUS: float("nan")}})
    assert json.loads(text) == {"L": 1, "3": 2, "True": 3, "x": {Site.VAGUS.value: None}}
