"""SLO classes, per-request resolution, validation, deadlines and the attainment test (core/slo.py)."""

from __future__ import annotations

import json
import math

import pytest

from hyperflexis_sglang.core.slo import (DEFAULT_CLASSES, MAX_TARGET_MS, SLO, SLOCatalog, SLOError, avg_tpot,
                                         meets_slo)

CAT = SLOCatalog()


# ---- class defaults ----------------------------------------------------------
@pytest.mark.parametrize("name, ttft_ms, tpot_ms, priority, on_miss", [
    ("interactive", 450, 40, 2, "reject"),
    ("standard", 2000, 200, 1, "best_effort"),
    ("batch", 15000, 200, 0, "best_effort"),
])
def test_class_defaults(name, ttft_ms, tpot_ms, priority, on_miss):
    slo = CAT.resolve({"class": name})
    assert (slo.ttft_ms, slo.tpot_ms, slo.priority, slo.cls, slo.on_miss, slo.tpot_mode) == \
        (ttft_ms, tpot_ms, priority, name, on_miss, "average")
    assert slo == DEFAULT_CLASSES[name] == CAT.get(name)
    assert slo.ttft_s == pytest.approx(ttft_ms / 1000) and slo.tpot_s == pytest.approx(tpot_ms / 1000)


@pytest.mark.parametrize("spec", [None, {}])
def test_no_spec_gives_default_class(spec):
    assert CAT.resolve(spec) == DEFAULT_CLASSES["standard"]


def test_catalog_default_class_is_configurable():
    assert SLOCatalog(default="batch").resolve() == DEFAULT_CLASSES["batch"]
    with pytest.raises(SLOError, match="default class 'gold'"):
        SLOCatalog(default="gold")


# ---- per-request overrides, field by field ---------------------------------------
@pytest.mark.parametrize("override, field, value", [
    ({"ttft_ms": 300}, "ttft_ms", 300),
    ({"tpot_ms": 25.5}, "tpot_ms", 25.5),
    ({"priority": 7}, "priority", 7),
    ({"priority": -3}, "priority", -3),
    ({"tpot_mode": "per_token"}, "tpot_mode", "per_token"),
    ({"on_miss": "best_effort"}, "on_miss", "best_effort"),
    ({"ttft": 123}, "ttft_ms", 123),  # alias
    ({"tpot": 17}, "tpot_ms", 17),  # alias
])
def test_override_one_field_keeps_the_others(override, field, value):
    base = DEFAULT_CLASSES["interactive"]
    slo = CAT.resolve({"class": "interactive", **override})
    assert getattr(slo, field) == value
    for other in ("ttft_ms", "tpot_ms", "priority", "cls", "tpot_mode", "on_miss"):
        if other != field:
            assert getattr(slo, other) == getattr(base, other), other


@pytest.mark.parametrize("spec, top, expected", [
    ({"class": "batch"}, 5, 5),  # spec has no priority: top-level applies
    ({"class": "batch", "priority": 1}, 5, 1),  # spec wins
    ({"class": "batch", "priority": 0}, 5, 0),  # a falsy spec priority still wins
    ({"class": "batch"}, None, 0),  # no top-level: class default
    (None, 3, 3),
    ({"class": "interactive"}, 0, 0),  # a zero top-level priority is applied, not ignored
])
def test_top_level_priority_applies_only_without_spec_priority(spec, top, expected):
    assert CAT.resolve(spec, priority=top).priority == expected


@pytest.mark.parametrize("spec, cls", [
    ({"class": "batch"}, "batch"),
    ({"cls": "batch"}, "batch"),
    ({"class": "interactive", "ttft": 100, "tpot": 10}, "interactive"),
])
def test_aliases(spec, cls):
    slo = CAT.resolve(spec)
    assert slo.cls == cls
    if "ttft" in spec:
        assert (slo.ttft_ms, slo.tpot_ms) == (100, 10)


# ---- errors ------------------------------------------------------------------
def test_unknown_class_names_known_classes():
    with pytest.raises(SLOError) as e:
        CAT.resolve({"class": "gold"})
    msg = str(e.value)
    assert "'gold'" in msg
    for known in ("batch", "interactive", "standard"):
        assert known in msg


def test_unknown_field_is_named():
    with pytest.raises(SLOError, match=r"unknown SLO field 'deadline'.*allowed"):
        CAT.resolve({"class": "batch", "deadline": 3})


@pytest.mark.parametrize("spec", [[("class", "batch")], "batch", 3])
def test_spec_must_be_an_object(spec):
    with pytest.raises(SLOError, match="JSON object"):
        CAT.resolve(spec)


BAD_TARGETS = [
    (-1, "positive"), (0, "positive"), (0.0, "positive"), (-0.0, "positive"),
    (math.nan, "positive"), (math.inf, "positive"), (-math.inf, "positive"),
    (True, "number"), (False, "number"), ("450", "number"), (None, "number"), ([450], "number"),
    (MAX_TARGET_MS + 1, "over one hour"), (1e9, "over one hour"),
]


@pytest.mark.parametrize("field", ["ttft_ms", "tpot_ms"])
@pytest.mark.parametrize("value, why", BAD_TARGETS, ids=[repr(v) for v, _ in BAD_TARGETS])
def test_bad_targets_rejected(field, value, why):
    with pytest.raises(SLOError, match=why) as e:
        CAT.resolve({"class": "standard", field: value})
    assert field in str(e.value)
    with pytest.raises(SLOError):
        SLO(**{"ttft_ms": 100, "tpot_ms": 10, field: value})


@pytest.mark.parametrize("value", [1e-3, 1, 450, MAX_TARGET_MS])
def test_edge_targets_accepted(value):
    assert CAT.resolve({"ttft_ms": value, "tpot_ms": value}).ttft_ms == value


@pytest.mark.parametrize("field, value, match", [
    ("priority", 1.5, "priority must be an integer"),
    ("priority", "2", "priority must be an integer"),
    ("priority", True, "priority must be an integer"),
    ("tpot_mode", "mean", "tpot_mode must be one of"),
    ("on_miss", "drop", "on_miss must be one of"),
])
def test_bad_other_fields(field, value, match):
    with pytest.raises(SLOError, match=match):
        CAT.resolve({field: value})


@pytest.mark.parametrize("cls", ["", None, 3])
def test_bad_class_name_in_slo(cls):
    with pytest.raises(SLOError, match="class name"):
        SLO(ttft_ms=1, tpot_ms=1, cls=cls)


def test_bad_top_level_priority():
    with pytest.raises(SLOError, match="priority"):
        CAT.resolve({"class": "batch"}, priority="high")


def test_slo_is_frozen():
    with pytest.raises(AttributeError):
        DEFAULT_CLASSES["batch"].ttft_ms = 1  # type: ignore[misc]


# ---- token deadlines -----------------------------------------------------------
AVG = SLO(ttft_ms=500, tpot_ms=100, tpot_mode="average")
PER = SLO(ttft_ms=500, tpot_ms=100, tpot_mode="per_token")


@pytest.mark.parametrize("slo, i, arrival, ftt, expected", [
    # token 1 is always due at arrival + TTFT
    (AVG, 1, 10.0, None, 10.5), (AVG, 1, 10.0, 10.2, 10.5), (PER, 1, 10.0, 11.0, 10.5),
    (AVG, 0, 10.0, None, 10.5),
    # before the first token: arrival-anchored in both modes
    (AVG, 3, 10.0, None, 10.7), (PER, 3, 10.0, None, 10.7),
    # average mode: anchored at the first token (early first token banks slack, a late one is forgiven)
    (AVG, 3, 10.0, 10.1, 10.3), (AVG, 3, 10.0, 12.0, 12.2),
    # per-token mode: anchored at arrival, a late start never catches up
    (PER, 3, 10.0, 10.1, 10.7), (PER, 3, 10.0, 12.0, 10.7),
    (PER, 11, 0.0, 0.2, 1.5),
])
def test_token_deadline(slo, i, arrival, ftt, expected):
    assert slo.token_deadline(i, arrival, ftt) == pytest.approx(expected)
    assert slo.ttft_deadline(arrival) == pytest.approx(arrival + 0.5)


# ---- attainment -------------------------------------------------------------------
S = SLO(ttft_ms=450, tpot_ms=40)


@pytest.mark.parametrize("arrival, ftt, finish, out, met", [
    (0.1, 0.55, 0.55, 1, True),  # exactly on the TTFT boundary (0.55 - 0.1 is 0.45000000000000007)
    (0.0, 0.45, 0.45, 1, True),
    (0.0, 0.450002, 0.450002, 1, False),  # 2 us late
    (0.0, 0.1, 0.1, 1, True),  # one-token output: no TPOT
    (0.0, 0.1, 5.0, 1, True),  # one-token output: finish time does not matter
    (0.0, 0.5, 0.5, 1, False),  # one-token output with a late first token
    (0.0, 0.2, 0.2 + 9 * 0.04, 10, True),  # exactly on the average TPOT boundary
    (0.0, 0.2, 0.2 + 9 * 0.04 + 1e-4, 10, False),
    (0.0, 0.2, 0.2 + 0.04, 2, True),
    (0.0, 0.2, 0.2 + 0.0401, 2, False),
    (0.0, None, None, 10, False),  # never started
    (0.0, 0.2, None, 10, False),  # never finished
])
def test_meets_slo(arrival, ftt, finish, out, met):
    assert meets_slo(S, arrival, ftt, finish, out) is met


@pytest.mark.parametrize("ftt, finish, out, expected", [
    (1.0, 1.0, 0, 0.0), (1.0, 9.0, 1, 0.0), (1.0, 2.0, 2, 1.0), (1.0, 2.0, 11, 0.1),
])
def test_avg_tpot(ftt, finish, out, expected):
    assert avg_tpot(ftt, finish, out) == pytest.approx(expected)


# ---- class files --------------------------------------------------------------------
JSON_FILE = {"default": "gold", "classes": {
    "gold": {"ttft_ms": 300, "tpot": 30, "priority": 5, "on_miss": "reject"},
    "batch": {"ttft_ms": 60000},
}}
TOML_FILE = """default = "gold"

[classes.gold]
ttft_ms = 300
tpot = 30
priority = 5
on_miss = "reject"

[classes.batch]
ttft_ms = 60000
"""


@pytest.mark.parametrize("name, text", [("classes.json", json.dumps(JSON_FILE)), ("classes.toml", TOML_FILE)])
def test_from_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    cat = SLOCatalog.from_file(path)
    assert cat.default == "gold"
    gold = cat.resolve()
    assert (gold.cls, gold.ttft_ms, gold.tpot_ms, gold.priority, gold.on_miss) == ("gold", 300, 30, 5, "reject")
    assert gold.tpot_mode == "average"  # unspecified fields come from the built-in standard class
    batch = cat.get("batch")  # overriding a built-in class keeps its other fields
    assert (batch.ttft_ms, batch.tpot_ms, batch.priority) == (60000, 200, 0)
    assert cat.get("interactive") == DEFAULT_CLASSES["interactive"]  # built-ins kept
    assert SLOCatalog.from_file(str(path)).classes == cat.classes  # str path too


def test_from_file_without_default_uses_standard(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"classes": {"gold": {"ttft_ms": 100}}}))
    assert SLOCatalog.from_file(path).default == "standard"


BAD_FILES = [
    ("c.json", "{not json", "cannot read"),
    ("c.toml", "classes = [", "cannot read"),
    ("c.json", "[1, 2]", "expected an object"),
    ("c.json", json.dumps({"classes": [1]}), "expected an object"),
    ("c.json", json.dumps({"classes": {"gold": 3}}), "class 'gold' must be an object"),
    ("c.json", json.dumps({"classes": {"gold": {"ttft_ms": -1}}}), "class 'gold'.*ttft_ms"),
    ("c.json", json.dumps({"classes": {"gold": {"ttft_ms": 1, "colour": "x"}}}), "unknown SLO field 'colour'"),
    ("c.toml", '[classes.gold]\ntpot_ms = "fast"\n', "class 'gold'.*tpot_ms"),
]


@pytest.mark.parametrize("name, text, match", BAD_FILES)
def test_bad_file_names_the_path(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SLOError, match=match) as e:
        SLOCatalog.from_file(path)
    assert str(path) in str(e.value)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "absent.toml"
    with pytest.raises(SLOError) as e:
        SLOCatalog.from_file(path)
    assert str(path) in str(e.value)


def test_bad_default_in_file_names_the_path(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"default": "nope", "classes": {}}))
    with pytest.raises(SLOError) as e:
        SLOCatalog.from_file(path)
    assert str(path) in str(e.value)
