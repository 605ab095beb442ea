"""The documentation holds together: links and images resolve, the README stays a front door, and
every node the pack registers has a node page (ComfyUI's node docs panel) and a line in the README.

Plain tier: nothing here imports ComfyUI. The registered node ids are read from the source of
``nodes/*.py`` (``nodes/__init__.py`` imports ``comfy_api``, so the package cannot be imported here).
"""

from __future__ import annotations

import ast
import pathlib
import re
import unicodedata
from urllib.parse import unquote

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NODE_PAGES = ROOT / "js" / "docs"  # <WEB_DIRECTORY>/docs: served as /extensions/<pack folder>/docs/
README_MAX_LINES = 260

# Absolute links into this repository (node pages use them: the docs panel serves js/docs/ only)
REPO_URL = re.compile(r"^https://(?:github\.com/dit-layer-lab/dit-layer-lab/(?:blob|tree)/main|"
                      r"raw\.githubusercontent\.com/dit-layer-lab/dit-layer-lab/main)/([^?#]*)(?:#(.*))?$")

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"""<(?:img|a|source|video)\b[^>]*?\s(?:src|href)=["']([^"']+)["']""", re.I)
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def pages() -> list[pathlib.Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md")), *sorted(NODE_PAGES.rglob("*.md"))]


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks, with inline code spans blanked."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            continue
        if fence is not None:
            if line.strip().startswith(fence[0] * len(fence)) and set(line.strip()) == {fence[0]}:
                fence = None
            continue
        yield number, CODE_SPAN.sub(lambda m: "code", line)


def links(text: str) -> list[tuple[int, str]]:
    found = []
    for number, line in prose_lines(text):
        found += [(number, m.group(1)) for m in LINK.finditer(line)]
        found += [(number, m.group(1)) for m in HTML_LINK.finditer(line)]
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: formatting dropped, lower case, punctuation removed, spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").lower()
    kept = "".join(c for c in text
                   if c in " -_" or unicodedata.category(c)[0] in "LMN" or unicodedata.category(c) == "Pc")
    return kept.replace(" ", "-")


def anchors(path: pathlib.Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    fence = None
    for line in path.read_text(encoding="utf-8").splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            continue
        if fence is not None:
            if set(line.strip()) == {fence[0]} and len(line.strip()) >= len(fence):
                fence = None
            continue
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def problems(page: pathlib.Path, root: pathlib.Path = ROOT) -> list[str]:
    """Every link or image of ``page`` that does not reach a file (or a heading) of the repository."""
    found = []
    served = root / "js" / "docs"
    for number, target in links(page.read_text(encoding="utf-8")):
        where = f"{page.relative_to(root)}:{number}: {target!r}"
        repo = REPO_URL.match(target)
        if repo:
            path, anchor = root / unquote(repo.group(1)), repo.group(2)
        elif re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
            continue  # another site, mailto:
        elif not target:
            found.append(f"{where}: empty link")
            continue
        else:
            file, _, anchor = target.partition("#")
            path = page if not file else (page.parent / unquote(file))
            if file and served in page.parents and served not in path.resolve().parents:
                found.append(f"{where}: a node page is served from js/docs/ alone; link outside it "
                             "with a https://github.com/dit-layer-lab/dit-layer-lab/blob/main/... URL")
                continue
        path = path.resolve()
        if root.resolve() not in [path, *path.parents]:
            found.append(f"{where}: leaves the repository")
        elif not path.exists():
            found.append(f"{where}: no such file {path.relative_to(root.resolve())}")
        elif anchor and path.suffix == ".md" and unquote(anchor) not in anchors(path):
            found.append(f"{where}: no heading #{anchor} in {path.relative_to(root.resolve())}")
    return found


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_and_image_resolves(page):
    found = problems(page)
    assert not found, "broken links:\n" + "\n".join(found)


def test_the_link_check_finds_broken_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("# A title, `code` and α\n\n## Twice\n\n## Twice\n")
    (tmp_path / "js" / "docs").mkdir(parents=True)
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/there.md#a-title-code-and-α) [ok](docs/there.md#twice-1) ![x](missing.png)\n"
                    "[bad anchor](docs/there.md#nowhere) `[in code](missing.md)`\n"
                    "```\n[in a fence](missing.md)\n```\n"
                    "[repo](https://github.com/dit-layer-lab/dit-layer-lab/blob/main/docs/gone.md) "
                    "[elsewhere](https://example.com/x.md)\n")
    node_page = tmp_path / "js" / "docs" / "Node.md"
    node_page.write_text("![pic](../../docs/there.md)\n")
    found = problems(page, tmp_path)
    assert len(found) == 3, found
    assert "missing.png" in found[0] and "#nowhere" in found[1] and "gone.md" in found[2]
    assert "served from js/docs/ alone" in problems(node_page, tmp_path)[0]


def test_readme_is_a_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (f"README.md has {len(lines)} lines: at most {README_MAX_LINES}; "
                                            "move the detail to a page under docs/")


def registered_node_ids() -> list[str]:
    """The node ids of the nodes the pack registers, read from nodes/*.py without importing them.

    A node class gets its id from ``node_id="..."`` in its schema, or from ``strategy_node("...", ...)``;
    the pack registers the classes listed in the ``*_NODES`` lists that ``nodes/__init__.py`` returns.
    """
    id_of, lists = {}, {}
    for file in sorted((ROOT / "nodes").glob("*.py")):
        tree = ast.parse(file.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                ids = [k.value.value for call in ast.walk(node) if isinstance(call, ast.Call)
                       for k in call.keywords if k.arg == "node_id" and isinstance(k.value, ast.Constant)]
                if ids:
                    id_of[node.name] = ids[0]
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                name, value = node.targets[0].id, node.value
                if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                        and value.func.id == "strategy_node" and isinstance(value.args[0], ast.Constant)):
                    id_of[name] = value.args[0].value
                elif name.endswith("_NODES") and isinstance(value, ast.List):
                    lists[name] = [element.id for element in value.elts if isinstance(element, ast.Name)]
    init = (ROOT / "nodes" / "__init__.py").read_text(encoding="utf-8")
    registered = [name for list_name, names in lists.items() if f"*{list_name}" in init for name in names]
    unknown = [name for name in registered if name not in id_of]
    assert unknown == [], f"registered nodes whose id this test cannot read: {unknown}"
    return [id_of[name] for name in registered]


NODE_IDS = registered_node_ids()


def test_node_ids_are_found():
    assert len(NODE_IDS) >= 12 and len(set(NODE_IDS)) == len(NODE_IDS)
    assert {"LayerLabPlan", "LayerLabSkip", "LayerLabPlanGuidance", "LayerLabImportanceSweep"} <= set(NODE_IDS)


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_every_node_has_a_page_and_a_readme_line(node_id):
    page = NODE_PAGES / f"{node_id}.md"
    assert page.is_file(), f"no node page {page.relative_to(ROOT)} (shown in ComfyUI's node docs panel)"
    assert page.read_text(encoding="utf-8").startswith("# "), f"{page.name} starts with its title"
    readme = README.read_text(encoding="utf-8")
    node_list = readme.split("\n## Nodes\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in node_list.splitlines()
             if line.startswith("- ") and f"(js/docs/{node_id}.md)" in line and f"`{node_id}`" in line]
    assert len(lines) == 1, f"README's node list needs one line linking js/docs/{node_id}.md and naming `{node_id}`"


def test_no_node_page_without_a_node():
    stems = {path.relative_to(NODE_PAGES).parts[0].removesuffix(".md") for path in NODE_PAGES.rglob("*.md")}
    assert stems - set(NODE_IDS) == set()
