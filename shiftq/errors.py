"""The one error type a user sees: a one-line message and exit code 2.

Anything that is the user's fault (bad flag, missing file, corrupt checkpoint) raises
`UserError`; the CLI prints its message and exits 2 without a traceback. Other
exceptions are bugs and keep their traceback.
"""
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


class UserError(Exception):
    """Bad input: the message says what is wrong and how to fix it."""


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it over `path` only on success.

    Nothing half-written is ever left at `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path):
    """Yield a temporary directory beside `path`; swap it in for `path` on success."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
