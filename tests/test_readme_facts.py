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
