"""The docs speak to users: no issue numbers, no references to the team's internal notes."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
INTERNAL = re.compile(r"\bissues? #?\d+|FINDINGS|STYLE\.md|the mission|the lead'?s?\b|\bsessions? \d|"
                      r"\bthis session\b|the first session|lent to",
                      re.IGNORECASE)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_no_work_process_wording(doc):
    hits = [f"{i}: {line.strip()[:80]}" for i, line in enumerate(doc.read_text().splitlines(), 1)
            if INTERNAL.search(line)]
    assert not hits, hits
