"""The README's commands are the ones CI runs, and every Python example in it runs (docs/*.md: tests/test_docs.py)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def readme_commands():
    """The commands of the README's first bash block, without their comments."""
    block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_starts_with_the_main_job_and_the_tests():
    """The first block holds two commands: the main job (fastdiff sample) and the test suite (pytest)."""
    main_job, tests = readme_commands()
    assert "fastdiff sample" in main_job and "pip install" in main_job
    assert "pytest" in tests and "pip install" in tests


def test_ci_runs_the_readme_commands():
    """.ci/run runs both README commands verbatim, so CI checks what a new user types."""
    ci = (ROOT / ".ci" / "run").read_text()
    ci_lines = [line.strip() for line in ci.splitlines()]
    for command in readme_commands():
        assert command in ci_lines


@pytest.mark.parametrize("index", range(len(re.findall(r"```python\n", README))))
def test_python_examples_run(index, tmp_path, monkeypatch):
    """Each ```python block of the README runs as written."""
    monkeypatch.chdir(tmp_path)
    code = re.findall(r"```python\n(.*?)```", README, re.S)[index]
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})


def test_readme_has_python_examples():
    """Guard: the parametrized example test above must not silently run zero cases (the tour has four)."""
    assert len(re.findall(r"```python\n", README)) >= 4
