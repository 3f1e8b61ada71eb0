"""Persistent cache of judge verdicts, keyed by a hash of the exact request.

`cache_key` hashes the provider, model, exact request content, sampling parameters and rubric version as
canonical JSON (sorted keys, no whitespace, UTF-8), so the key is stable across processes and Python
versions. Values are hashed as given: `1` and `1.0` give different keys, so pass the parameters as sent.

`VerdictCache` keeps a bounded in-memory LRU (`lru_size` entries, default 65,536) in front of one SQLite
file in WAL mode. `get` serves repeated keys from memory without touching disk; a miss in memory reads
SQLite and fills the LRU; `put` writes both and commits at once, so another `VerdictCache` on the same
file (another process) sees the verdict on its next `get` of that key. Only hits are kept in memory,
never misses, so a verdict written elsewhere is never hidden; a verdict *replaced* elsewhere may still be
served from this LRU (keys hash the whole request, so replacement means the same request, judged again).
Commits use `synchronous=NORMAL`: a power loss can drop the last verdicts, never corrupt the file.
With `path=None` there is no SQLite at all: the LRU is the whole cache, and verdicts it evicts are
simply judged again.

Verdicts are stored as JSON text: `put` rejects a verdict that is not a JSON-able dict (TypeError /
ValueError), and every `get` returns a fresh dict, so callers may mutate it freely.

Thread safety: one lock guards the LRU and the single connection (`check_same_thread=False`), so one
instance may be shared by threads. Each call is short (microseconds from memory, well under a
millisecond from SQLite), so it is called synchronously from an asyncio event loop. A writer in another
process holding the file makes SQLite wait up to `busy_timeout_s` (default 5 s, blocking the caller),
then raise `CacheError`.

A file at `path` that is not a SQLite database, or a SQLite database that is not a verdict cache, raises
`CacheError` at construction, naming the path and the fix.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from rlaif.errors import RlaifError

DEFAULT_LRU_SIZE = 65_536

_T = TypeVar("_T")
_GET = "SELECT verdict FROM verdicts WHERE key = ?"
_PUT = "INSERT OR REPLACE INTO verdicts (key, verdict) VALUES (?, ?)"


class CacheError(RlaifError):
    """The verdict cache file cannot be used; the message names the path and the fix."""


def cache_key(provider: str, model: str, prompt: object, sampling: dict, rubric_version: str = "") -> str:
    """The sha256 hex digest of the canonical JSON of the five parts of a judge request.

    `prompt` is the exact request content sent (a string or a list of message dicts); it and `sampling`
    must be JSON-able (TypeError otherwise).
    """
    canonical = json.dumps(
        {
            "provider": provider,
            "model": model,
            "prompt": prompt,
            "sampling": sampling,
            "rubric_version": rubric_version,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


class VerdictCache:
    """Verdicts by `cache_key`: an in-memory LRU in front of an optional SQLite file (see module docstring)."""

    def __init__(
        self,
        path: str | Path | None,
        *,
        lru_size: int = DEFAULT_LRU_SIZE,
        busy_timeout_s: float = 5.0,
    ) -> None:
        if lru_size < 0:
            raise ValueError(f"lru_size must be >= 0, got {lru_size}")
        if path is None and lru_size == 0:
            raise ValueError("an in-memory VerdictCache (path=None) needs lru_size > 0")
        self.path = None if path is None else Path(path)
        self._lru_size = lru_size
        self._lru: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._closed = False
        self._conn: sqlite3.Connection | None = None
        if self.path is not None:
            self._conn = self._open(self.path, busy_timeout_s)

    @staticmethod
    def _open(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
        fix = "delete it or choose another cache path (judge.cache)"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            message = f"cannot create the directory of judge cache {path} ({exc}); choose another path (judge.cache)"
            raise CacheError(message) from exc
        conn: sqlite3.Connection | None = None
        try:
            # Autocommit (isolation_level=None): each put is its own committed transaction.
            conn = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, verdict TEXT NOT NULL)")
            conn.execute("SELECT key, verdict FROM verdicts LIMIT 1").fetchall()  # an existing table of another shape
        except sqlite3.DatabaseError as exc:  # "file is not a database", "no such column", "unable to open"...
            if conn is not None:
                conn.close()
            raise CacheError(f"judge cache {path} is not a usable verdict cache ({exc}); {fix}") from exc
        return conn

    @property
    def hits(self) -> int:
        """`get` calls that found a verdict (memory or SQLite)."""
        return self._hits

    @property
    def misses(self) -> int:
        """`get` calls that found none."""
        return self._misses

    def count(self) -> int:
        """Verdicts in the cache: rows of the SQLite file, or entries of the LRU without one (reads the file)."""
        with self._lock:
            self._check_open()
            if self._conn is None:
                return len(self._lru)
            return int(self._sql(lambda c: c.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]))

    def get(self, key: str) -> dict | None:
        """The stored verdict for `key` (a fresh dict), or None."""
        with self._lock:
            self._check_open()
            text = self._lru.get(key)
            if text is not None:
                self._lru.move_to_end(key)
            elif self._conn is not None:
                row = self._sql(lambda c: c.execute(_GET, (key,)).fetchone())
                if row is not None:
                    text = row[0]
                    self._remember(key, text)
            if text is None:
                self._misses += 1
                return None
            self._hits += 1
        return json.loads(text)

    def put(self, key: str, verdict: dict) -> None:
        """Store `verdict` under `key` (insert or replace), committed before returning."""
        if not isinstance(verdict, dict):
            raise TypeError(f"a verdict must be a dict, got {type(verdict).__name__}")
        text = json.dumps(verdict, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        with self._lock:
            self._check_open()
            if self._conn is not None:
                self._sql(lambda c: c.execute(_PUT, (key, text)))
            self._remember(key, text)

    def close(self) -> None:
        """Close the file; later `get`/`put` raise RuntimeError. Closing twice is harmless."""
        with self._lock:
            self._closed = True
            self._lru.clear()
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> VerdictCache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # Callers hold self._lock.

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("VerdictCache is closed")

    def _remember(self, key: str, text: str) -> None:
        if self._lru_size == 0:
            return
        self._lru[key] = text
        self._lru.move_to_end(key)
        while len(self._lru) > self._lru_size:
            self._lru.popitem(last=False)

    def _sql(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        assert self._conn is not None
        try:
            return op(self._conn)
        except sqlite3.DatabaseError as exc:  # locked past busy_timeout_s, or the file damaged after opening
            raise CacheError(
                f"judge cache {self.path} failed ({exc}); if it persists, delete it or choose another cache path"
            ) from exc
