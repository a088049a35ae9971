"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.kernels
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if "distributed.init()" in BLOCKS[index]:
        pytest.importorskip("mpi4py", reason="the data-parallel example needs the mpi extra")
    code = BLOCKS[index].replace("/tmp/model.npz", str(tmp_path / "model.npz"))
    exec(compile(code, f"README.md block {index}", "exec"), {"__name__": "readme"})
