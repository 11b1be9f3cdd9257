"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename."""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from slimcv.errors import SlimcvError
from slimcv.run_folder import MANIFEST_JSON, holds_record


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``; a crash leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: Path(p).write_text(text))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def atomic_write_safetensors(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda p: save_file(tensors, p, metadata=metadata))


@contextmanager
def atomic_dir(final: str | Path, owned_by: str | None = None) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces ``final``, on error it is removed.

    The swap is two renames (old aside, new in) and then the old copy is deleted, so a crash at any moment
    leaves either the old or the new folder complete; :func:`recover_dir` (called here first) puts an old copy
    back that a crash left aside and removes half-written temporaries. With ``owned_by``, an existing non-empty
    ``final`` that lacks that file was not written by slimcv and is refused instead of replaced.
    """
    final = Path(final)
    if final.is_symlink() and final.is_dir():
        final = final.resolve()  # write through a symlinked folder: the link stays, its target gets the files
    final.parent.mkdir(parents=True, exist_ok=True)
    with _writer_lock(final):
        recover_dir(final)  # under the lock: the temporaries it removes are no live writer's
        if owned_by is not None:
            check_owned(final, owned_by)
        yield from _fill_and_swap(final)


@contextmanager
def _writer_lock(final: Path) -> Iterator[None]:
    """One writer at a time for ``final``: a second process writing there at once is refused in one sentence
    (an advisory lock the system releases when its holder dies, so a killed run never blocks the next)."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows): writers are not serialised
        yield
        return
    lock = final.parent / f".{final.name}.lock"
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SlimcvError(f"Another slimcv process is writing {final} right now; wait for it to finish or "
                              "choose another output folder.") from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _fill_and_swap(final: Path) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=_TMP, dir=final.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        if final.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=_OLD, dir=final.parent))
            os.rename(final, aside / final.name)
            os.rename(tmp, final)
            _fsync_dir(final.parent)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(tmp, final)
            _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_TMP, _OLD = ".tmp", ".old"


def recover_dir(final: str | Path) -> None:
    """Finish what an interrupted :func:`atomic_dir` left: restore an old copy set aside, drop temporaries.

    Only folders named exactly as :func:`atomic_dir` names them (``.<name>.<8 random chars>.tmp|.old``, from
    ``tempfile.mkdtemp``) are touched: never a user's folder that merely looks similar."""
    final = Path(final)
    if not final.parent.is_dir():
        return
    _drop_stale_lock(final)
    for aside in sorted(_ours(final, _OLD)):
        kept = aside / final.name
        if not final.exists() and kept.is_dir():
            os.rename(kept, final)  # crashed between the two renames: the old folder is still whole
        shutil.rmtree(aside, ignore_errors=True)
    for tmp in _ours(final, _TMP):
        shutil.rmtree(tmp, ignore_errors=True)


def _drop_stale_lock(final: Path) -> None:
    """Remove the writer lock file a killed writer left (nobody holds it: the system released its lock)."""
    lock = final.parent / f".{final.name}.lock"
    if not lock.is_file():
        return
    try:
        import fcntl
    except ImportError:
        return
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # a live writer holds it
    else:
        lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _ours(final: Path, suffix: str) -> list[Path]:
    pattern = re.compile(rf"\.{re.escape(final.name)}\.[a-z0-9_]{{8}}{re.escape(suffix)}")
    return [p for p in final.parent.iterdir() if p.is_dir() and pattern.fullmatch(p.name)]


def check_owned(folder: str | Path, marker: str) -> None:
    """Refuse to replace a non-empty folder that has no ``marker`` record of slimcv's (nor a recipe stage's
    manifest): slimcv did not write it. A file of that name with other contents is the user's."""
    folder = Path(folder)
    if folder.is_file():
        raise SlimcvError(f"{folder} is a file, not a folder; choose another output folder.")
    ours = holds_record(folder, marker) or holds_record(folder, MANIFEST_JSON)
    if folder.is_dir() and any(p.name != ".lock" for p in folder.iterdir()) and not ours:
        raise SlimcvError(f"{folder} already holds files that slimcv did not write (no {marker}); move them away "
                          "or choose another output folder.")


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory
    finally:
        os.close(fd)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines log; a half-written last line is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
