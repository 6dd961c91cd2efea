"""Facts the README states that the code can check."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_zoo_counts_in_the_readme_are_the_registrys():
    from ncap.models.zoo import ZOO

    m = re.search(r"the self-pretrained zoo \((\d+) entries, (\d+) architectures, (\d+) source datasets\)",
                  README.read_text())
    assert m, "the README's zoo line is gone"
    assert tuple(map(int, m.groups())) == (len(ZOO), len({e.arch for e in ZOO.values()}),
                                           len({e.source for e in ZOO.values()}))


def test_every_relative_link_in_the_readme_and_docs_resolves():
    root = README.parent
    broken = []
    for md in [README, *sorted((root / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", md.read_text()):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = target.split("#", 1)[0]
            if path and not (md.parent / path).exists():
                broken.append(f"{md.relative_to(root)} -> {target}")
    assert not broken, broken


def test_the_readme_layout_names_every_package_module():
    """Every module of the installed package (the layer folders and ncap/) appears by name in the README's
    Layout block, so the map does not drift from the tree."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    section = text[text.index("## Layout"):]
    block = section[section.index("```"):section.index("```", section.index("```") + 3)]
    missing = [str(f.relative_to(root)) for d in ("capacitance", "network", "models", "bench", "service", "ncap")
               for f in (root / d).rglob("*.py") if f.name != "__init__.py" and "__pycache__" not in f.parts
               and not re.search(rf"(?<![\w]){re.escape(f.stem)}(\.py)?(?![\w])", block)]
    assert missing == []
