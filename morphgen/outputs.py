"""Output paths of a command: checked before any work starts (`check_writable`), and what
the command created removed again when it fails before its outputs are final
(`NewOutputs`). A refused input then leaves nothing behind, and never touches what was
there before (a refused `--resume` leaves its run resumable)."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

from .errors import ConfigError


def check_writable(path: str | Path, what: str, folder: bool = True) -> Path:
    """`path` if it can be written as a folder (`folder`) or a file, else a one-line
    ConfigError naming the option `what`: an existing path must be of that kind, and the
    nearest existing folder on its way must be writable. Checked up front, so a bad
    `--out` fails before minutes of work instead of at the first write."""
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise ConfigError(f"{what} {path} is a file, not a folder: give a folder")
        if not folder and path.is_dir():
            raise ConfigError(f"{what} {path} is a folder: give a file name")
    parent = path if folder and path.is_dir() else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{what} {path} cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.is_file() and not os.access(path, os.W_OK)):
        raise ConfigError(f"{what} {path} cannot be written: no write permission in {parent}")
    try:  # what os.access cannot tell: a read-only or virtual file system (/proc), or root's access to it
        os.rmdir(tempfile.mkdtemp(prefix=".morphgen-check-", dir=parent))
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be written: {parent} takes no new files ({exc.strerror})") from None
    return path


_TMP_SUFFIX = ".tmp"


def is_temporary(name: str) -> bool:
    """Whether a file name is one of :func:`replace_atomically`'s temporary files (hidden,
    ``.tmp``): a cache that removes those a killed writer left asks this."""
    return name.startswith(".") and name.endswith(_TMP_SUFFIX)


def replace_atomically(path: str | Path, data: bytes | str) -> None:
    """Write `data` to `path` through a temporary file beside it, renamed over it: a reader,
    or a kill in the middle, never meets half a file. The temporary file is this process's
    and thread's own, so concurrent writers of one file (shards updating one manifest,
    commands sharing the decimation cache) never write into each other's: the last rename
    wins, whole. A write that fails removes it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{_TMP_SUFFIX}")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def check_image_path(path: str | Path, what: str) -> Path:
    """`check_writable` for an image file whose format OpenCV can write (from its suffix),
    so that a sheet or plot is not rendered only to fail at the last step."""
    import cv2

    path = check_writable(path, what, folder=False)
    if not cv2.haveImageWriter(str(path)):
        raise ConfigError(f"{what} {path}: cannot write images of that type: end the name in .png or .jpg")
    return path


def desktop_junk(name: str) -> bool:
    """A file a file browser leaves in any folder it shows (macOS .DS_Store and ._ files,
    Windows Thumbs.db and desktop.ini): no obstacle to writing outputs there."""
    return name in (".DS_Store", "Thumbs.db", "desktop.ini") or name.startswith("._")


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (what creating it adds)."""
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove_but(path: Path, spared: list[Path]) -> None:
    """Remove `path`, except the `spared` paths inside it (and the folders holding them)."""
    inside = [q for q in spared if q == path or path in q.parents]
    if not inside:
        _remove(path)
    elif path not in inside and path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            _remove_but(child, inside)
        if not any(path.iterdir()):  # the spared path was never made: nothing to hold
            path.rmdir()


class NewOutputs:
    """Context manager: if the block raises an Exception before `keep()`, remove what it
    created under `paths` -- a path that did not exist (with the folders made for it),
    and inside a folder that did, the entries that were not there -- except what `spare()`
    named (a cache worth keeping). Entries that existed are never removed. A
    KeyboardInterrupt keeps everything (the work done is resumable)."""

    def __init__(self, *paths: str | Path | None):
        self.new: list[Path] = []
        self.spared: list[Path] = []
        self.folders: list[tuple[Path, set[str]]] = []
        for p in paths:
            if p is None:
                continue
            p = Path(p).absolute()
            if p.is_dir():
                self.folders.append((p, set(os.listdir(p))))
            elif (top := _first_missing(p)) is not None:
                self.new.append(top)
        self.active = True

    def keep(self) -> None:
        """The outputs are final from here on: later errors leave them in place."""
        self.active = False

    def spare(self, path: str | Path) -> None:
        """Leave `path` in place if the block fails later (its other new outputs still go)."""
        self.spared.append(Path(path).absolute())

    def __enter__(self) -> NewOutputs:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.active and exc_type is not None and issubclass(exc_type, Exception):
            for p in self.new:
                _remove_but(p, self.spared)
            for folder, before in self.folders:
                if folder.is_dir():
                    for name in set(os.listdir(folder)) - before:
                        _remove_but(folder / name, self.spared)
        return False
