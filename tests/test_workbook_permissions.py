"""A workbook sheetops may not write is one sentence and exit 2, never a traceback, and a
read-only file is never replaced behind the user's back by a rename."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from test_cli import cli


def _chattr(flag: str, path: Path) -> bool:
    chattr = shutil.which("chattr")
    return bool(chattr) and subprocess.run([chattr, flag, str(path)],
                                           capture_output=True).returncode == 0


@pytest.fixture
def immutable_dir(tmp_path: Path):
    """A folder no new file can be created in (not even by root), removed again after."""
    folder = tmp_path / "locked"
    folder.mkdir()
    result = cli("init", "--sheet", str(folder / "ops.xlsx"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    if not _chattr("+i", folder):
        pytest.skip("chattr +i is not available here")
    yield folder
    _chattr("-i", folder)


def _one_sentence(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize("command", [["validate"], ["init"], ["run", "--for", "2"]])
def test_a_read_only_workbook_is_refused_and_left_as_it_is(tmp_path, command):
    path = tmp_path / "ops.xlsx"
    assert cli("init", "--sheet", str(path), cwd=tmp_path).returncode == 0
    path.chmod(0o444)
    before = (path.stat().st_ino, path.read_bytes())
    result = cli(*command, "--sheet", str(path), cwd=tmp_path)
    _one_sentence(result, "ops.xlsx is read-only", "chmod u+w")
    assert (path.stat().st_ino, path.read_bytes()) == before  # not replaced by a rename
    assert stat.S_IMODE(path.stat().st_mode) == 0o444


@pytest.mark.parametrize("command", [["validate", "--sheet", "ops.xlsx"],
                                     ["init", "--sheet", "new.xlsx"],
                                     ["init", "--sheet", "sub/new.xlsx"]])
def test_a_folder_that_takes_no_new_files_is_one_sentence(immutable_dir, command):
    args = [*command[:-1], str(immutable_dir / command[-1])]
    result = cli(*args, cwd=immutable_dir.parent)
    _one_sentence(result, str(immutable_dir))
