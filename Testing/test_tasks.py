"""Task definitions: a lesion rule names its segment; the segment's Slicer terminology comes from one place."""

from __future__ import annotations

import dataclasses

from MRISynthesisLib.tasks import TASKS, LesionRule
from MRISynthesisLib.terminology import DEFAULT_LESION_TYPE, lesion_terminology


def test_lesion_rules_carry_no_terminology_codes_of_their_own():
    # Codes live in terminology.py (checked against Slicer's lists there); a second copy here went stale once
    # ("Lesion"/"Infarct", which Slicer's lists do not have).
    assert "terminology" not in {field.name for field in dataclasses.fields(LesionRule)}


def test_each_task_lesion_segment_gets_a_specific_terminology_type():
    rules = [task.lesion_rule for task in TASKS.values() if task.lesion_rule is not None]
    assert rules
    for rule in rules:
        kind = lesion_terminology(rule.segment_name).split("~")[2]
        assert kind != DEFAULT_LESION_TYPE[1], f"{rule.segment_name!r} falls back to the generic type"
