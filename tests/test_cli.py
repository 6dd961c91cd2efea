"""The `ncap` entry point: --version, and no abbreviated flags."""
import subprocess
import sys

import pytest

import ncap
from ncap.service.cli import main


def test_version_is_the_installed_distributions(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"ncap {ncap.__version__}"
    out = subprocess.run([sys.executable, "-m", "ncap.service.cli", "--version"], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == f"ncap {ncap.__version__}"


@pytest.mark.parametrize("argv", [["rank", "--epoch", "1"], ["rank", "--trainab", "top"], ["powerlaw", "-", "--boot", "2"]])
def test_an_abbreviated_flag_is_an_error_not_a_guess(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
