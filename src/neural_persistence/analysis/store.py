"""The results database of an analysis: SQLite in the output directory, written one tensor at a time.

What is stored is each matrix's raw spanning-tree values (|w|, exact: in the narrowest of bfloat16, float32 and
float64 that holds them exactly) and its max |w|: the tree does not depend on the normalization, so any
normalization (global, per layer, per role) and any p is applied when the table is read. Results are committed
at least every ``COMMIT_SECONDS``, a tensor's rows together with its completion mark, so a run killed at any point
loses at most the last moments of work, which a rerun computes again. Keys: checkpoint, tensor, head, and the
options that change what is measured (``per_head``).
"""

from __future__ import annotations

import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DB_NAME", "Store", "StoredTree", "pack_tree", "unpack_tree"]

DB_NAME = "results.sqlite"
SCHEMA_VERSION = 1
#: Most seconds between commits (a commit per tensor would cost more than measuring a small one).
COMMIT_SECONDS = 0.5
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_ROWS_PER_STATEMENT = 256  # 11 parameters a row, well under SQLite's limit of 32,766 parameters a statement

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS checkpoints (
    run TEXT, checkpoint TEXT, step INTEGER, tokens INTEGER, path TEXT, PRIMARY KEY (run, checkpoint));
CREATE TABLE IF NOT EXISTS trees (
    run TEXT, checkpoint TEXT, tensor TEXT, head INTEGER, options TEXT,
    block INTEGER, role TEXT, rows INTEGER, cols INTEGER, max_abs REAL, tree BLOB,
    PRIMARY KEY (run, checkpoint, tensor, head, options));
CREATE TABLE IF NOT EXISTS done (
    run TEXT, checkpoint TEXT, tensor TEXT, options TEXT, error TEXT,
    PRIMARY KEY (run, checkpoint, tensor, options));
"""


@dataclass(frozen=True)
class StoredTree:
    """One measured matrix as stored."""

    run: str
    checkpoint: str
    step: int | None
    tokens: int | None
    tensor: str
    head: int
    block: int
    role: str
    rows: int
    cols: int
    max_abs: float
    tree: np.ndarray


class Store:
    """The analysis database; a tensor's results and its completion mark are committed together."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = self.out / DB_NAME
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA page_size=16384")  # a tree fills a few pages, not dozens (new databases only)
        self.db.execute("PRAGMA journal_mode=WAL")
        # With WAL, NORMAL skips the fsync per commit: a killed process loses nothing committed (only a power
        # failure could cost the last transactions), and commits stay cheap.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        self.db.commit()
        self._last_commit = time.monotonic()

    def close(self) -> None:
        self.db.commit()
        self.db.close()

    def _commit_soon(self) -> None:
        if time.monotonic() - self._last_commit >= COMMIT_SECONDS:
            self.db.commit()
            self._last_commit = time.monotonic()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_checkpoint(self, run: str, checkpoint: str, step: int | None, tokens: int | None, path: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?)", (run, checkpoint, step, tokens, path))
        self.db.commit()

    def is_done(self, run: str, checkpoint: str, tensor: str, options: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM done WHERE run=? AND checkpoint=? AND tensor=? AND options=? AND error IS NULL",
            (run, checkpoint, tensor, options),
        ).fetchone()
        return row is not None

    def save(self, run: str, checkpoint: str, tensor: str, options: str, rows: Iterable[tuple]) -> None:
        """All matrices of one tensor, and its completion mark, in the same transaction.

        ``rows``: (head, block, role, rows, cols, max_abs, tree), the tree as values or packed by :func:`pack_tree`.
        """
        values = [(run, checkpoint, tensor, head, options, block, role, r, c, max_abs,
                   tree if isinstance(tree, bytes) else pack_tree(tree))
                  for head, block, role, r, c, max_abs, tree in rows]
        # One statement for many rows: executemany would step once per row (per head), releasing and taking back
        # the interpreter lock each time, which the measuring threads make slow to get back.
        for start in range(0, len(values), _ROWS_PER_STATEMENT):
            chunk = values[start : start + _ROWS_PER_STATEMENT]
            self.db.execute(
                "INSERT OR REPLACE INTO trees VALUES " + ", ".join([_ROW] * len(chunk)),
                [field for row in chunk for field in row],
            )
        self.db.execute("INSERT OR REPLACE INTO done VALUES (?, ?, ?, ?, NULL)", (run, checkpoint, tensor, options))
        self._commit_soon()

    def save_error(self, run: str, checkpoint: str, tensor: str, options: str, message: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO done VALUES (?, ?, ?, ?, ?)", (run, checkpoint, tensor, options, message))
        self._commit_soon()

    def errors(self) -> list[tuple[str, str, str, str]]:
        """(run, checkpoint, tensor, message) of every tensor that could not be measured."""
        return self.db.execute("SELECT run, checkpoint, tensor, error FROM done WHERE error IS NOT NULL").fetchall()

    def trees(self, options: str | None = None) -> Iterator[StoredTree]:
        query = (
            "SELECT t.run, t.checkpoint, c.step, c.tokens, t.tensor, t.head, t.block, t.role, t.rows, t.cols, t.max_abs, t.tree "
            "FROM trees t LEFT JOIN checkpoints c ON t.run = c.run AND t.checkpoint = c.checkpoint"
            + (" WHERE t.options = ?" if options is not None else "")
            + " ORDER BY c.step, t.checkpoint, t.block, t.tensor, t.head"
        )
        for row in self.db.execute(query, (options,) if options is not None else ()):
            run, ckpt, step, tokens, tensor, head, block, role, rows, cols, max_abs, blob = row
            yield StoredTree(run, ckpt, step, tokens, tensor, head, block, role, rows, cols, max_abs, unpack_tree(blob))

    def option_sets(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT options FROM trees ORDER BY options")]


def pack_tree(tree: np.ndarray) -> bytes:
    """The values in the narrowest exact format, tagged: b"b" bfloat16 bits, b"f" float32, b"d" float64.

    Trees of bfloat16 layers take 2 bytes a value and need no compression (which cost more than measuring)."""
    as32 = tree.astype("<f4")
    if not np.array_equal(as32, tree):
        return b"d" + np.ascontiguousarray(tree, dtype="<f8").tobytes()
    bits = as32.view("<u4")
    if not (bits & 0xFFFF).any():
        return b"b" + (bits >> 16).astype("<u2").tobytes()
    return b"f" + as32.tobytes()


def unpack_tree(blob: bytes) -> np.ndarray:
    tag, body = blob[:1], blob[1:]
    if tag == b"b":
        return (np.frombuffer(body, "<u2").astype("<u4") << 16).view("<f4").astype(np.float64)
    if tag == b"f":
        return np.frombuffer(body, "<f4").astype(np.float64)
    if tag == b"d":
        return np.frombuffer(body, "<f8").copy()
    return np.frombuffer(zlib.decompress(blob), dtype="<f8")  # databases written before the tags: zlib'd float64
