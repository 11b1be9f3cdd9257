"""Atomic folder replacement: a kill at any step leaves the old or the new folder whole, never neither."""
import subprocess
import sys
from pathlib import Path

import pytest

from slimcv._io import atomic_dir, check_owned, recover_dir
from slimcv.errors import SlimcvError

SRC = Path(__file__).resolve().parents[1] / "src"

# Fills the new folder, then dies (os._exit: no cleanup, like SIGKILL) at the Nth os.rename / rmtree call.
KILLER = r"""
import os, shutil, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from slimcv import _io
n, calls = int(sys.argv[2]), [0]
def dying(real):
    def f(*a, **k):
        calls[0] += 1
        if calls[0] == n:
            os._exit(9)
        return real(*a, **k)
    return f
_io.os.rename = dying(os.rename)
_io.shutil.rmtree = dying(shutil.rmtree)
with _io.atomic_dir(Path(sys.argv[1])) as tmp:
    (tmp / "a.txt").write_text("new")
    (tmp / "b.txt").write_text("new")
print("finished")
"""


def _contents(folder: Path) -> dict:
    return {p.name: p.read_text() for p in folder.iterdir()}


@pytest.mark.parametrize("kill_at", [1, 2, 3, 99])
def test_a_kill_at_each_step_of_the_swap_leaves_one_whole_folder(tmp_path, kill_at):
    final = tmp_path / "out"
    final.mkdir()
    (final / "a.txt").write_text("old")
    (final / "b.txt").write_text("old")
    r = subprocess.run([sys.executable, "-c", KILLER, str(final), str(kill_at), str(SRC)], capture_output=True,
                       text=True)
    assert (r.returncode == 0) == (kill_at == 99), r.stderr
    recover_dir(final)
    assert _contents(final) in ({"a.txt": "old", "b.txt": "old"}, {"a.txt": "new", "b.txt": "new"})
    if kill_at >= 3:  # the new folder was renamed in before the kill
        assert _contents(final) == {"a.txt": "new", "b.txt": "new"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no orphaned temporaries after recovery


def test_the_next_atomic_dir_recovers_a_folder_set_aside_by_a_crash(tmp_path):
    final = tmp_path / "out"
    aside = tmp_path / ".out.ab12cd_9.old"
    (aside / "out").mkdir(parents=True)
    (aside / "out" / "keep.txt").write_text("old")
    (tmp_path / ".out.zz34yx_1.tmp").mkdir()
    (tmp_path / ".out.notes.tmp").mkdir()  # the user's, only named alike: kept
    with pytest.raises(RuntimeError):
        with atomic_dir(final):
            raise RuntimeError("fails before the swap")
    assert _contents(final) == {"keep.txt": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.notes.tmp", "out"]


def test_a_failure_inside_leaves_the_old_folder(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "a.txt").write_text("old")
    with pytest.raises(ValueError):
        with atomic_dir(final) as tmp:
            (tmp / "a.txt").write_text("new")
            raise ValueError
    assert _contents(final) == {"a.txt": "old"}


def test_owned_by_refuses_a_folder_slimcv_did_not_write(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("user's")
    with pytest.raises(SlimcvError, match="did not write"):
        with atomic_dir(mine, owned_by="quantize.json"):
            pass
    assert (mine / "notes.txt").read_text() == "user's"
    (tmp_path / "empty").mkdir()
    with atomic_dir(tmp_path / "empty", owned_by="quantize.json") as tmp:
        (tmp / "quantize.json").write_text('{"stage": "quantize", "models": [], "recommendation": {}}')
    check_owned(tmp_path / "empty", "quantize.json")  # now slimcv's: replacing it is allowed
    (tmp_path / "empty" / "quantize.json").write_text("{}")  # the name alone is not slimcv's record
    with pytest.raises(SlimcvError, match="did not write"):
        check_owned(tmp_path / "empty", "quantize.json")
