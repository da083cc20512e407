"""A command's ``--out`` folder, checked before any work and left clean after a failure.

- ``prepare()`` (before the command runs): the path must not be a file and its nearest existing
  folder must be writable; a non-empty folder is an error unless ``--overwrite`` (or the command
  resumes from what is there: ``report``, ``demo``, ``topology train``, ``train --resume``). With ``--overwrite`` the
  previous run's files move aside into ``.convlens-previous/`` inside the folder, so the new run
  never mixes with them (no old ``sweep.png`` beside new results).
- ``commit()`` (success): the set-aside files are deleted and a ``.convlens`` marker is written.
- ``rollback()`` (a user error): everything this run wrote is removed and the previous files are
  put back; a folder this run created is removed.
- ``interrupted()`` (Ctrl-C): what was written stays (to resume), the set-aside files too.

Only folders that convlens wrote (the marker) are cleared by ``--overwrite``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

MARKER = ".convlens"
ASIDE = ".convlens-previous"


class OutputFolder:
    def __init__(self, path: Path, *, overwrite: bool = False, resumable: bool = False):
        self.path = Path(path)
        self.overwrite = overwrite
        self.resumable = resumable
        self.existed = False
        self.before: set[str] = set()
        self.moved = False

    def prepare(self) -> None:
        p = self.path
        if p.exists() and not p.is_dir():
            raise FileExistsError(f"--out {p} is an existing file, not a folder: choose a folder path")
        parent = p
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise NotADirectoryError(f"--out {p} cannot be created: {parent} is a file")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise PermissionError(f"--out {p}: cannot write in {parent} (permission denied); "
                                  "choose a folder you can write to")
        self.existed = p.is_dir()
        if not self.existed:
            return
        entries = {e.name for e in p.iterdir()} - {MARKER, ASIDE}
        self.before = entries | ({MARKER} if (p / MARKER).exists() else set())
        if not entries or self.resumable:
            return
        if not self.overwrite:
            raise FileExistsError(
                f"--out {p} already holds {len(entries)} file(s) from an earlier run: pass --overwrite "
                "to replace them, or choose an empty folder")
        if not (p / MARKER).exists():
            raise FileExistsError(
                f"--out {p} is not empty and was not written by convlens (no {MARKER} file): "
                "--overwrite only replaces convlens results; choose an empty folder")
        aside = p / ASIDE
        if aside.exists():
            shutil.rmtree(aside)
        aside.mkdir()
        for name in entries:
            os.replace(p / name, aside / name)
        self.moved = True

    def _new_entries(self) -> list[Path]:
        if not self.path.is_dir():
            return []
        keep = {ASIDE} | (self.before if not self.moved else {MARKER} & self.before)
        return [e for e in self.path.iterdir() if e.name not in keep]

    def commit(self) -> None:
        if not self.path.is_dir():
            return
        if self.moved:
            shutil.rmtree(self.path / ASIDE, ignore_errors=True)
        (self.path / MARKER).write_text("written by convlens; --overwrite may replace this folder\n")

    def rollback(self) -> None:
        if not self.path.is_dir():
            return
        if self.resumable and self.existed:
            return  # a resumable folder keeps what was finished
        for e in self._new_entries():
            shutil.rmtree(e, ignore_errors=True) if e.is_dir() and not e.is_symlink() else e.unlink()
        if self.moved:
            aside = self.path / ASIDE
            for e in aside.iterdir():
                os.replace(e, self.path / e.name)
            aside.rmdir()
        if not self.existed:
            shutil.rmtree(self.path, ignore_errors=True)

    def interrupted(self) -> None:
        if self.path.is_dir():
            (self.path / MARKER).write_text("written by convlens (interrupted run)\n")
