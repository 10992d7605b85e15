"""Atomic writes and output ownership (layer 1).

A reader never sees a half-written file, and edgeseg only replaces what it wrote: a folder output
is assembled in a staging folder and then installed name by name (``install_staged``), never by
swapping or removing the user's folder.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

from edgeseg.errors import EdgesegError


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it onto ``dest``.

    On any exception the temporary file or folder is removed and ``dest`` is left as it was.
    Works for files and for folders (e.g. a ``.mlpackage``).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _clean_dead_temporaries(dest.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TEMP_MARK}{os.getpid()}-", suffix=".tmp", dir=dest.parent))
    target = tmp / dest.name
    try:
        if is_dir:
            target.mkdir()
        yield target
        if is_dir and dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(dest, old)
            os.replace(target, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# atomic_path's temporary folders: .edgeseg-<pid>-<random>.tmp (the file inside carries the name, so the
# folder adds no length to it)
_TEMP_MARK = ".edgeseg-"
# how old a dead process's temporary folder must be before it is removed: a process id says nothing across
# machines sharing the folder (NFS) or PID namespaces (containers), while no atomic write takes that long
_TEMP_MAX_AGE_S = 3600


def _clean_dead_temporaries(folder: Path) -> None:
    """Remove ``atomic_path`` temporary folders in ``folder`` of processes that no longer run (a killed run's),
    once they are an hour old."""
    now = time.time()
    for p in folder.glob(f"{_TEMP_MARK}*-*.tmp"):
        pid = p.name[len(_TEMP_MARK):].partition("-")[0]
        try:
            old = now - p.lstat().st_mtime > _TEMP_MAX_AGE_S
        except OSError:
            continue
        if old and pid.isdigit() and int(pid) != os.getpid() and p.is_dir() and not p.is_symlink() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 (hex) of a file's bytes, read in 1 MB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_holds(path: str | os.PathLike, sha256: str) -> bool:
    """Whether ``path`` is a file (symlinks followed) whose bytes have this sha256; False when it cannot be read."""
    try:
        return Path(path).is_file() and sha256_file(path) == sha256
    except OSError:
        return False


def write_bytes_atomic(dest: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``dest`` atomically and return the path."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``folder`` (``flock`` on its descriptor; nothing is written in it)
    for a read-modify-write of a file there that concurrent edgeseg processes share. A no-op where
    ``fcntl`` does not exist (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_text_atomic(dest: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (utf-8) to ``dest`` atomically and return the path."""
    return write_bytes_atomic(dest, text.encode("utf-8"))


def check_output(path: str | os.PathLike, *, is_dir: bool, what: str = "output") -> Path:
    """Refuse an output location that cannot be written, before any work starts; leaves nothing behind.

    Refused (EdgesegError naming the path and the fix): a name longer than file systems allow
    (255 bytes per component), a symlink that points nowhere (the output or an ancestor), a file
    where a folder is needed or a folder where a file is needed, an ancestor that is a file, and a
    location whose nearest existing folder is not writable (permissions or a read-only file system, or
    a file system that takes no new files: an empty file is created there and removed at once).
    """
    path = Path(path)
    shown = str(path) if len(str(path)) <= 120 else f"{str(path)[:60]}...{str(path)[-30:]}"
    name_max = 255  # bytes in one path component (ext4, xfs, btrfs, tmpfs, APFS, NTFS)
    long_part = next((part for part in path.parts if len(os.fsencode(part)) > name_max), None)
    if long_part is not None:
        raise EdgesegError(f"{what} {shown}: a name in it is {len(os.fsencode(long_part))} bytes, longer than file "
                           f"systems allow ({name_max}); choose a shorter name")

    def dangling(link: Path) -> str:
        return f"{link} is a symlink to {os.readlink(link)}, which does not exist; remove the link or choose another path"

    try:
        if path.is_symlink() and not path.exists():
            raise EdgesegError(f"{what} {dangling(path)}")
        if path.exists():
            if is_dir and not path.is_dir():
                raise EdgesegError(f"{what} {path} is a file, not a folder; choose a folder path")
            if not is_dir and path.is_dir():
                raise EdgesegError(f"{what} {path} is a folder; give a file path")
        parent = path if (is_dir and path.is_dir()) else path.parent
        probe = parent
        while not probe.exists():
            if probe.is_symlink():
                raise EdgesegError(f"{what} {path}: {dangling(probe)}")
            probe = probe.parent
        writable = probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)
    except OSError as exc:  # e.g. the whole path is longer than PATH_MAX, or a folder on the way cannot be searched
        raise EdgesegError(f"{what} {shown}: cannot be used ({exc.strerror or exc}); choose another path") from None
    if not probe.is_dir():
        raise EdgesegError(f"{what} {path}: {probe} is a file, so no folder can be made there; choose another path")
    if not writable:
        raise EdgesegError(f"{what} {path}: {probe} is not writable (permissions or a read-only file system); "
                           "choose a writable location")
    _probe_write(probe, path, what)
    return path


def _probe_write(folder: Path, path: Path, what: str) -> None:
    """Create and remove an empty hidden file in ``folder``: ``os.access`` says yes to root everywhere and
    knows nothing of file systems that take no new files (``/proc``, ``/sys``), which a later write would
    find out only after the work is done."""
    try:
        fd, name = tempfile.mkstemp(prefix=".edgeseg-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise EdgesegError(f"{what} {path}: cannot write in {folder} ({exc.strerror or exc}); "
                           "choose a writable location") from None


JSON_MARK = "written_by"  # key of every JSON report edgeseg writes: "edgeseg <version>"


def check_json_output(path: str | os.PathLike, *, what: str = "--json") -> Path:
    """``check_output`` for a JSON report; an existing file there is replaced only if edgeseg wrote it.

    So ``--json`` can never overwrite a checkpoint, a manifest, a CSV or a model that the command
    reads: only a JSON object carrying ``JSON_MARK``, or a bench JSON of an earlier version
    (``schema_version``, ``host`` and ``results``).
    """
    path = check_output(path, is_dir=False, what=what)
    if (path.exists() or path.is_symlink()) and not _edgeseg_json(path):
        raise EdgesegError(f"{what} {path} exists and is not a JSON report edgeseg wrote; choose another path "
                           "(edgeseg only replaces what it wrote)")
    return path


def _edgeseg_json(path: Path) -> bool:
    import json

    try:
        if path.stat().st_size > 64 * 2**20:
            return False
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict):
        return False
    return str(doc.get(JSON_MARK, "")).startswith("edgeseg") or {"schema_version", "host", "results"} <= set(doc)


STAGING_PREFIX = ".edgeseg-staging-"


def folder_mode() -> int:
    """The mode a plain ``mkdir`` would give a new folder under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def staging_dir(dest: str | os.PathLike) -> Path:
    """A fresh staging folder on ``dest``'s file system, for ``install_staged``.

    Inside ``dest`` when it exists (a mount point or ``.`` work too), beside it otherwise. The
    name carries this process id, so ``clean_dead_staging`` can tell a dead run's leftovers.
    Dead runs' leftovers in that place are removed first.
    """
    dest = Path(dest)
    base = dest if dest.is_dir() else dest.parent
    base.mkdir(parents=True, exist_ok=True)
    clean_dead_staging(base)
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=base))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_dead_staging(folder: str | os.PathLike) -> list[Path]:
    """Remove staging folders in ``folder`` left by edgeseg processes that no longer run; returns them."""
    removed = []
    for p in Path(folder).glob(f"{STAGING_PREFIX}*"):
        pid = p.name[len(STAGING_PREFIX):].partition("-")[0]
        if p.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def is_staging(path: str | os.PathLike) -> bool:
    return Path(path).name.startswith(STAGING_PREFIX)


# What an install into a folder is putting in place (relative path -> sha256), written before the renames and
# removed after them: a run killed in between leaves files that no record of their owner lists yet, and
# ``being_installed`` tells the next run they are edgeseg's. Its name is a staging name: never a user's file.
INSTALLING = f"{STAGING_PREFIX}installing.json"


class InstallInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) that arrived while ``install_staged`` was putting files in place: held until the install
    had finished, then raised. ``dest`` is complete; ``signum`` is the signal; the message says both in one line
    (``interrupted after DEST was written (it is complete)``)."""

    def __init__(self, dest: Path, signum: int):
        self.dest, self.signum = Path(dest), signum
        verb = "interrupted" if signum == signal.SIGINT else "terminated"
        super().__init__(f"{verb} after {dest} was written (it is complete)")


DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class HeldSignals:
    """What ``signals_deferred`` held: ``arrived`` (signal numbers, in order) and ``handed`` (the last one handed
    to its previous handler after the block: the one whose handler raised, when one did)."""

    def __init__(self) -> None:
        self.arrived: list[int] = []
        self.handed: int | None = None


@contextlib.contextmanager
def signals_deferred(signums: Iterable[int] = DEFERRED_SIGNALS) -> Iterator[HeldSignals]:
    """Hold Ctrl-C and SIGTERM for a short critical section that must not stop half-way.

    Only in the main thread (the only one that runs Python signal handlers; elsewhere nothing is held), and
    only a signal whose handler was set from Python (``signal.getsignal`` is not None: another cannot be put
    back). A second signal while held ends the process by its default action (as a second Ctrl-C should). When
    the block ends (also when it raised), the previous handlers are restored and the signal that arrived is
    handed to its previous handler: ``default_int_handler`` raises KeyboardInterrupt,
    a handler the CLI set raises its own, SIG_DFL gets the signal again (its default action), SIG_IGN nothing.
    """
    held = HeldSignals()
    previous: dict = {}

    def hold(signum, _frame):
        if held.arrived:  # a second signal: the user insists, so the default action (the process ends now)
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        held.arrived.append(signum)

    if threading.current_thread() is threading.main_thread():
        for signum in signums:
            handler = signal.getsignal(signum)
            if handler is None:
                continue
            try:
                signal.signal(signum, hold)
            except (ValueError, OSError):  # e.g. not the main interpreter
                continue
            previous[signum] = handler
    try:
        yield held
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(held.arrived):
            held.handed, handler = signum, previous[signum]
            if handler is signal.SIG_DFL:
                signal.raise_signal(signum)
            elif callable(handler):
                handler(signum, None)


def install_staged(staging: Path, dest: Path, *, owned: Iterable[str] = (), last: str | None = None) -> None:
    """Move everything in ``staging`` into ``dest`` and remove ``staging``.

    ``dest`` is created (with a normal folder mode) when missing; an existing ``dest`` keeps its
    mode and every entry that is neither in ``staging`` nor in ``owned`` (names edgeseg wrote there
    before, e.g. the files an earlier manifest listed, which are removed when not written again).
    Each entry is replaced by a rename; ``last`` (e.g. the manifest) is moved after all others, so
    a reader that trusts it never sees it before the files it describes. Into an existing ``dest``, the
    files being installed are recorded first (``INSTALLING``, see ``being_installed``).

    Ctrl-C and SIGTERM are held while the files are put in place (``signals_deferred``: the record, the
    renames, the removals, the record's removal) and raised once the install has finished, as
    ``InstallInterrupted`` (``dest`` is complete); as they are when the install itself failed.
    """
    staging, dest = Path(staging), Path(dest)
    names = sorted(p.name for p in staging.iterdir())
    fresh = not dest.exists() and staging.parent == dest.parent
    files = {} if fresh else {p.relative_to(staging).as_posix(): sha256_file(p)
                              for p in sorted(staging.rglob("*")) if p.is_file()}
    installed, interrupted = False, None
    try:
        with signals_deferred() as held:
            if fresh:
                staging.chmod(folder_mode())
                os.replace(staging, dest)
            else:
                _install_into(staging, dest, names, files, owned, last)
            installed = True
    except KeyboardInterrupt as exc:
        if not installed:
            raise
        # the held signal's (or one that came as the handlers were put back: its own signum, else Ctrl-C)
        interrupted = getattr(exc, "signum", None) or held.handed or signal.SIGINT
    if not fresh:
        shutil.rmtree(staging, ignore_errors=True)
    if interrupted is not None:
        raise InstallInterrupted(dest, interrupted) from None


def _install_into(staging: Path, dest: Path, names: list[str], files: dict, owned: Iterable[str], last: str | None) -> None:
    """``install_staged`` into a folder that may hold other files: the record, the renames, the removals."""
    dest.mkdir(parents=True, exist_ok=True)
    record = dest / INSTALLING
    # an earlier killed install's entries stay listed until one install finishes (its files may still be there)
    write_bytes_atomic(record, json.dumps({"files": {**_installing(dest), **files}, "pid": os.getpid()}).encode())
    order = [n for n in names if n != last] + ([last] if last in names else [])
    for name in order:
        src, dst = staging / name, dest / name
        if dst.is_dir() and not dst.is_symlink():
            os.replace(dst, staging / f".{name}.old")  # a folder (.mlpackage) cannot be renamed onto
        os.replace(src, dst)
    for name in set(owned) - set(names):
        _remove(dest / name)
    record.unlink(missing_ok=True)


def _installing(dest: str | os.PathLike) -> dict:
    """The ``INSTALLING`` record in ``dest`` (relative path -> sha256); {} when there is none or it is unreadable."""
    try:
        files = json.loads((Path(dest) / INSTALLING).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(files, dict) else {}


def unfinished_install(dest: str | os.PathLike) -> dict | None:
    """The ``INSTALLING`` record in ``dest``, left by an install that was stopped (killed, power loss) or one still
    under way: ``{"files": relative path -> sha256, or None when the record cannot be read, "running": whether
    the process that wrote it is another one that still runs}``; None when there is no record."""
    record = Path(dest) / INSTALLING
    if not (record.exists() or record.is_symlink()):
        return None
    try:
        doc = json.loads(record.read_text(encoding="utf-8"))
        files, pid = doc["files"], doc.get("pid")
    except (OSError, ValueError, KeyError, TypeError):
        return {"files": None, "running": False}
    if not (isinstance(files, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())):
        files = None
    running = isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 and pid != os.getpid() and _alive(pid)
    return {"files": files, "running": running}


def being_installed(dest: str | os.PathLike, rel: str) -> bool:
    """Whether ``dest / rel`` (a file, or a folder and every file in it) holds exactly what an install into
    ``dest`` that did not finish was putting there (``INSTALLING``): edgeseg's, though no manifest, marker or
    ledger lists it yet."""
    files = _installing(dest)
    path = Path(dest) / rel
    if not files or path.is_symlink():
        return False
    if path.is_file():
        return file_holds(path, files.get(Path(rel).as_posix(), ""))
    inside = [p for p in sorted(path.rglob("*")) if p.is_file()] if path.is_dir() else []
    return bool(inside) and all(file_holds(p, files.get(p.relative_to(dest).as_posix(), "")) for p in inside)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (it need not exist) is the existing ``folder`` or lies inside it, judged by file identity,
    so a case-insensitive file system (macOS, Windows) or a bind mount cannot hide it behind another name."""
    for p in (Path(path), *Path(path).parents):
        try:
            if os.path.samefile(p, folder):
                return True
        except OSError:  # not there (yet)
            continue
    return False
