"""The Extensions Index catalog entry (``MRISynthesis.json``) is formatted as the index's lint leaves it.

Slicer/ExtensionsIndex lints with pre-commit: prettier 3.5.3 with ``prettier-plugin-multiline-arrays`` 4.0.3
(``.pre-commit-config.yaml``), plus end-of-file-fixer, trailing-whitespace and forbid-tabs. Prettier prints
JSON with 2-space indentation, ``"key": value`` and objects one member per line; with that plugin an array
written one item per line stays so, which is the form asked for here. ``json.dumps(indent=2)`` prints exactly
that (arrays one item per line, ``[]`` when empty, keys in file order), so the canonical text is computed.
"""

from __future__ import annotations

import json
from pathlib import Path

CATALOG = Path(__file__).resolve().parents[1] / "MRISynthesis.json"


def canonical(text: str) -> str:
    return json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"


def test_catalog_entry_is_in_its_canonical_lint_format():
    text = CATALOG.read_text(encoding="utf-8")
    assert text == canonical(text), "reformat with: python -c \"import json,sys; p='MRISynthesis.json'; " \
        "open(p,'w').write(json.dumps(json.load(open(p)), indent=2, ensure_ascii=False) + '\\n')\""


def test_canonical_format_puts_array_items_on_their_own_lines():
    inline = '{"build_dependencies": ["PyTorch"], "tier": 1}'
    assert canonical(inline) == '{\n  "build_dependencies": [\n    "PyTorch"\n  ],\n  "tier": 1\n}\n'
    assert canonical(canonical(inline)) == canonical(inline)  # a fixed point, as a lint's output must be
