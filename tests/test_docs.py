"""Every code block the docs mark as runnable (an HTML comment ``<!-- runnable -->`` on the line
before the fence) runs as written: python blocks with this interpreter, bash blocks with bash,
from the repository root, offline."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- runnable -->\n```(python|bash)\n(.*?)\n```", re.S)


def runnable_blocks() -> list[tuple[str, str, str]]:
    out = []
    for page in sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]):
        for i, m in enumerate(BLOCK.finditer(page.read_text())):
            out.append((f"{page.name}#{i}", m.group(1), m.group(2)))
    return out


def test_the_docs_mark_blocks_to_run():
    assert runnable_blocks(), "no block is marked <!-- runnable -->"


@pytest.mark.integration
@pytest.mark.parametrize("where,lang,code", runnable_blocks(), ids=[b[0] for b in runnable_blocks()])
def test_runnable_block(where, lang, code):
    cmd = [sys.executable, "-c", code] if lang == "python" else ["bash", "-euo", "pipefail", "-c", code]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{where} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"


def test_the_design_contract_is_the_repos_own_and_every_citation_finds_its_section():
    """Code and docs cite docs/design.md (by section), never a design file the repo does not hold."""
    design = (ROOT / "docs" / "design.md").read_text()
    sections = set(re.findall(r"^#+ (.+)$", design, re.M)) | set(re.findall(r"^- \*\*(.+?)(?: \(|\*\*)", design, re.M))
    files = [*ROOT.joinpath("src").rglob("*.py"), *ROOT.joinpath("docs").rglob("*.md"), ROOT / "README.md",
             *ROOT.joinpath("bench").rglob("*.py"), *ROOT.joinpath("src", "softprompt", "configs").glob("*.yaml")]
    cited = []
    for path in files:
        text = path.read_text()
        assert "DESIGN.md" not in text, f"{path.relative_to(ROOT)} cites DESIGN.md, which the repo does not hold"
        cited += [(path.name, name) for name in re.findall(r'docs/design\.md,? "([^"]+)"', text)]
    assert len(cited) >= 5
    missing = [(where, name) for where, name in cited if name not in sections]
    assert not missing, f"citations of docs/design.md sections that do not exist: {missing}"
