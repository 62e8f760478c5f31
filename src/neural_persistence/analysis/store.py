"""The results database of an analysis: SQLite in the output directory, written one tensor at a time.

What is stored is each matrix's raw spanning-tree values (|w|, exact: in the narrowest of bfloat16, float32 and
float64 that holds them exactly) and its max |w|: the tree does not depend on the normalization, so any
normalization (global, per layer, per role) and any p is applied when the table is read. Results are committed
at least every ``COMMIT_SECONDS``, a tensor's rows together with its completion mark (which records how many
matrices its plan has, and a signature of the plan and of the tensor's file), so a run killed at any point loses
at most the last moments of work, which a rerun computes again, and a checkpoint saved again under the same name
is measured again.

A matrix is keyed by run, checkpoint, tensor, role, head, expert and the options that change what is measured
(``per_head``, ``embeddings``): everything that tells two matrices apart, so that the q, k and v cut from one
fused tensor are three rows. A run is identified by its resolved path; its name is a label, made unique in the
database when two runs' folders share a name. Databases of schema 1 (whose key lacked the role and expert, so
that fused q, k and v overwrote each other) are migrated when written to: their results are dropped and measured
again. Read without writing, they are refused with the command to run.
"""

from __future__ import annotations

import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DB_NAME", "MatrixResult", "OldSchemaError", "Store", "StoredTree", "pack_tree", "unpack_tree"]

DB_NAME = "results.sqlite"
SCHEMA_VERSION = 2
_APP = "neural-persistence"
#: Most seconds between commits (a commit per tensor would cost more than measuring a small one).
COMMIT_SECONDS = 0.5
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_ROWS_PER_STATEMENT = 256  # 12 parameters a row, well under SQLite's limit of 32,766 parameters a statement

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (run TEXT PRIMARY KEY, path TEXT UNIQUE);
CREATE TABLE IF NOT EXISTS checkpoints (
    run TEXT, checkpoint TEXT, step INTEGER, tokens INTEGER, path TEXT, PRIMARY KEY (run, checkpoint));
CREATE TABLE IF NOT EXISTS trees (
    run TEXT, checkpoint TEXT, tensor TEXT, role TEXT, head INTEGER, expert INTEGER, options TEXT,
    block INTEGER, rows INTEGER, cols INTEGER, max_abs REAL, tree BLOB,
    PRIMARY KEY (run, checkpoint, tensor, role, head, expert, options));
CREATE TABLE IF NOT EXISTS done (
    run TEXT, checkpoint TEXT, tensor TEXT, options TEXT, planned INTEGER, signature TEXT, error TEXT,
    PRIMARY KEY (run, checkpoint, tensor, options));
"""


class OldSchemaError(ValueError):
    """The database was written by an older version whose results cannot be read as they are."""


@dataclass(frozen=True)
class MatrixResult:
    """One measured matrix of a tensor, as a worker sends it to the database: its key within the tensor (role,
    head, expert), where it sits, and its spanning-tree values (an array, or bytes packed by :func:`pack_tree`)."""

    role: str
    head: int
    expert: int
    block: int
    rows: int
    cols: int
    max_abs: float
    tree: np.ndarray | bytes


@dataclass(frozen=True)
class StoredTree:
    """One measured matrix as stored."""

    run: str
    checkpoint: str
    step: int | None
    tokens: int | None
    tensor: str
    head: int
    expert: int
    block: int
    role: str
    rows: int
    cols: int
    max_abs: float
    tree: np.ndarray


class Store:
    """The analysis database; a tensor's results and its completion mark are committed together.

    ``write=False`` opens an existing database to read (``load_table``, ``report``): an old schema is then
    refused instead of migrated. ``migrated`` says what a migration did (empty when none was needed)."""

    def __init__(self, out: str | Path, *, write: bool = True) -> None:
        self.out = Path(out)
        self.path = self.out / DB_NAME
        if write:
            self.out.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_file():
            raise FileNotFoundError(f"{out}: no {DB_NAME} here; run `neural-persistence analyze ... --out {out}` first")
        self.migrated = ""
        self.db = sqlite3.connect(self.path)
        try:
            self._open(write)
        except BaseException:
            self.db.close()
            raise
        self._last_commit = time.monotonic()

    def _open(self, write: bool) -> None:
        version = self._schema_version()
        if version is not None and version > SCHEMA_VERSION:
            raise OldSchemaError(f"{self.path}: written by a newer version of neural-persistence (schema {version}, "
                                 f"this one reads {SCHEMA_VERSION}); upgrade the package")
        if version == 1 and not write:
            raise OldSchemaError(
                f"{self.path}: written by an older version of neural-persistence (schema 1), whose table can lack "
                "the q and k matrices of fused attention tensors; measure again with "
                f"`neural-persistence analyze RUN ... --out {self.out}` (the old results are replaced)")
        if not write:
            return
        self.db.execute("PRAGMA page_size=16384")  # a tree fills a few pages, not dozens (new databases only)
        self.db.execute("PRAGMA journal_mode=WAL")
        # With WAL, NORMAL skips the fsync per commit: a killed process loses nothing committed (only a power
        # failure could cost the last transactions), and commits stay cheap.
        self.db.execute("PRAGMA synchronous=NORMAL")
        # One transaction: a migration killed half-way leaves the old database as it was.
        drop = "DROP TABLE IF EXISTS trees; DROP TABLE IF EXISTS done; DROP TABLE IF EXISTS meta;" if version == 1 else ""
        self.db.executescript(
            f"BEGIN; {drop} {_SCHEMA} INSERT OR REPLACE INTO meta VALUES ('schema', '{SCHEMA_VERSION}'); "
            f"INSERT OR REPLACE INTO meta VALUES ('app', '{_APP}'); COMMIT;")
        if version == 1:
            self.migrated = (f"{self.path}: written by an older version (schema 1, whose key could not tell the q, k "
                             "and v of a fused tensor apart); its results were dropped and are measured again")

    def _schema_version(self) -> int | None:
        """The schema of an existing database (None for a new, empty file); ValueError for a foreign one."""
        try:
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as err:
            raise ValueError(f"{self.path}: not a readable SQLite database ({err})") from None
        if not tables:
            return None
        if "meta" not in tables or "trees" not in tables:
            raise ValueError(f"{self.path}: an SQLite database, but not one written by neural-persistence "
                             f"(tables {sorted(tables)}); give another --out folder")
        row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        return int(row[0]) if row else 1

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

    def run_labels(self) -> dict[str, str]:
        """Resolved path -> label of every run the database knows."""
        return {path: run for run, path in self.db.execute("SELECT run, path FROM runs")}

    def add_run(self, run: str, path: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO runs VALUES (?, ?)", (run, path))
        self.db.commit()

    def add_checkpoint(self, run: str, checkpoint: str, step: int | None, tokens: int | None, path: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?)", (run, checkpoint, step, tokens, path))
        self.db.commit()

    def complete(self, options: str) -> dict[tuple[str, str, str], str]:
        """(run, checkpoint, tensor) -> the plan's signature, for every tensor marked done without error whose
        stored matrices number as many as its plan had. A tensor with fewer rows than planned is not complete."""
        rows = self.db.execute(
            "SELECT d.run, d.checkpoint, d.tensor, d.signature FROM done d JOIN "
            "(SELECT run, checkpoint, tensor, COUNT(*) AS n FROM trees WHERE options = ? "
            " GROUP BY run, checkpoint, tensor) t "
            "ON d.run = t.run AND d.checkpoint = t.checkpoint AND d.tensor = t.tensor "
            "WHERE d.options = ? AND d.error IS NULL AND d.planned = t.n",
            (options, options))
        return {(run, ckpt, tensor): signature for run, ckpt, tensor, signature in rows}

    def stored_counts(self, options: str) -> dict[tuple[str, str, str], int]:
        """(run, checkpoint, tensor) -> number of matrices stored."""
        rows = self.db.execute("SELECT run, checkpoint, tensor, COUNT(*) FROM trees WHERE options = ? "
                               "GROUP BY run, checkpoint, tensor", (options,))
        return {(run, ckpt, tensor): n for run, ckpt, tensor, n in rows}

    def save(self, run: str, checkpoint: str, tensor: str, options: str, results: Iterable[MatrixResult],
             signature: str = "") -> None:
        """All matrices of one tensor, and its completion mark (with the signature of its plan), in the same
        transaction."""
        values = [(run, checkpoint, tensor, r.role, r.head, r.expert, options, r.block, r.rows, r.cols, r.max_abs,
                   r.tree if isinstance(r.tree, bytes) else pack_tree(r.tree))
                  for r in results]
        self.db.execute("DELETE FROM trees WHERE run=? AND checkpoint=? AND tensor=? AND options=?",
                        (run, checkpoint, tensor, options))
        # One statement for many rows: executemany would step once per row (per head), releasing and taking back
        # the interpreter lock each time, which the measuring threads make slow to get back.
        for start in range(0, len(values), _ROWS_PER_STATEMENT):
            chunk = values[start : start + _ROWS_PER_STATEMENT]
            self.db.execute(
                "INSERT INTO trees VALUES " + ", ".join([_ROW] * len(chunk)),
                [field for row in chunk for field in row],
            )
        self.db.execute("INSERT OR REPLACE INTO done VALUES (?, ?, ?, ?, ?, ?, NULL)",
                        (run, checkpoint, tensor, options, len(values), signature))
        self._commit_soon()

    def save_error(self, run: str, checkpoint: str, tensor: str, options: str, message: str) -> None:
        """A tensor that could not be measured: its message, and none of its rows."""
        self.db.execute("DELETE FROM trees WHERE run=? AND checkpoint=? AND tensor=? AND options=?",
                        (run, checkpoint, tensor, options))
        self.db.execute("INSERT OR REPLACE INTO done VALUES (?, ?, ?, ?, NULL, NULL, ?)",
                        (run, checkpoint, tensor, options, message))
        self._commit_soon()

    def errors(self) -> list[tuple[str, str, str, str]]:
        """(run, checkpoint, tensor, message) of every tensor that could not be measured."""
        return self.db.execute("SELECT run, checkpoint, tensor, error FROM done WHERE error IS NOT NULL").fetchall()

    def trees(self, options: str | None = None) -> Iterator[StoredTree]:
        query = (
            "SELECT t.run, t.checkpoint, c.step, c.tokens, t.tensor, t.head, t.expert, t.block, t.role, t.rows, "
            "t.cols, t.max_abs, t.tree "
            "FROM trees t LEFT JOIN checkpoints c ON t.run = c.run AND t.checkpoint = c.checkpoint"
            + (" WHERE t.options = ?" if options is not None else "")
            + " ORDER BY t.run, c.step, t.checkpoint, t.block, t.tensor, t.expert, t.role, t.head"
        )
        for row in self.db.execute(query, (options,) if options is not None else ()):
            run, ckpt, step, tokens, tensor, head, expert, block, role, rows, cols, max_abs, blob = row
            yield StoredTree(run, ckpt, step, tokens, tensor, head, expert, block, role, rows, cols, max_abs,
                             unpack_tree(blob))

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
