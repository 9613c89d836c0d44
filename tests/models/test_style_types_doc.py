"""docs/style-types.md's table is what the segmenter makes of the demo's customers."""
from __future__ import annotations

import re

from demo.generator.styles import demo_segmenter, style_table
from services.core.config import REPO_ROOT

PAGE = REPO_ROOT / "docs" / "style-types.md"


def test_the_docs_table_of_the_demo_s_style_types_is_the_segmenter_s() -> None:
    found = re.search(r"<!-- style-types:begin -->\n(.*?)\n<!-- style-types:end -->", PAGE.read_text(), re.DOTALL)
    assert found, "docs/style-types.md has lost its style-types markers"
    segmenter = demo_segmenter()
    expected = style_table(list(segmenter.types.values()))
    assert found.group(1) == expected, "run `python -m demo.generator.styles` and paste its table into docs/style-types.md"
    assert all(f"| {style.style_id} | {style.name} |" in found.group(1) for style in segmenter.types.values())
