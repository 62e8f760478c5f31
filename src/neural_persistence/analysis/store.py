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

import errno
import shutil
import sqlite3
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DB_NAME", "Completeness", "CorruptTreeError", "MatrixResult", "OldSchemaError", "Store", "StoredTree", "pack_tree", "unpack_tree"]

DB_NAME = "results.sqlite"
SCHEMA_VERSION = 2
_APP = "neural-persistence"
#: How long to wait for another process's write to the same database before giving up.
LOCK_TIMEOUT_SECONDS = 120.0
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
CREATE TABLE IF NOT EXISTS planned (
    run TEXT, checkpoint TEXT, tensor TEXT, options TEXT, PRIMARY KEY (run, checkpoint, tensor, options));
CREATE TABLE IF NOT EXISTS done (
    run TEXT, checkpoint TEXT, tensor TEXT, options TEXT, planned INTEGER, signature TEXT, error TEXT,
    PRIMARY KEY (run, checkpoint, tensor, options));
CREATE TABLE IF NOT EXISTS nulls (
    run TEXT, checkpoint TEXT, tensor TEXT, role TEXT, head INTEGER, expert INTEGER, options TEXT, seed INTEGER,
    samples INTEGER, trees BLOB, PRIMARY KEY (run, checkpoint, tensor, role, head, expert, options, seed));
CREATE TABLE IF NOT EXISTS statistics (
    run TEXT, checkpoint TEXT, tensor TEXT, role TEXT, head INTEGER, expert INTEGER, options TEXT, rms REAL,
    outlier_ratio REAL, excess_kurtosis REAL, spread REAL, frobenius REAL,
    PRIMARY KEY (run, checkpoint, tensor, role, head, expert, options));
"""

#: The columns of the statistics table after the key, in order (those of core.baselines.WeightStatistics).
STATISTICS = ("rms", "outlier_ratio", "excess_kurtosis", "spread", "frobenius")


class CorruptTreeError(ValueError):
    """A stored tree that cannot be read back as it was written."""


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
    #: The null model's trees (samples x (rows + cols - 1), or packed flat), the seed they came from, and the
    #: weight statistics (in the order of STATISTICS), when asked for.
    nulls: np.ndarray | bytes | None = None
    null_seed: int = 0
    statistics: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Completeness:
    """Of the tensors an analysis planned: how many are measured, how many failed, how many are still missing
    (an analysis that was interrupted, or is still running)."""

    planned: int
    measured: int
    failed: int

    @property
    def missing(self) -> int:
        return self.planned - self.measured - self.failed

    def sentence(self) -> str:
        text = f"{self.measured} of {self.planned} planned tensors measured"
        if self.failed:
            text += f", {self.failed} could not be measured (listed below)"
        if self.missing:
            text += (f", {self.missing} not measured yet: the analysis was interrupted or is still running "
                     "(run the same analyze again to complete it)")
        return text


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
        # Another writer (a second analyze into the same --out) holds the lock while it commits: wait for it.
        self.db = sqlite3.connect(self.path, timeout=LOCK_TIMEOUT_SECONDS)
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
        except sqlite3.OperationalError as err:  # the file may be fine: the disk, or a lock, is not
            if shutil.disk_usage(self.out).free < 1 << 20:
                raise OSError(errno.ENOSPC, "No space left on device", str(self.path)) from None
            raise OSError(errno.EIO, f"cannot open the results database ({err})", str(self.path)) from None
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

    def add_planned(self, options: str, tensors: Iterable[tuple[str, str, str]]) -> None:
        """The (run, checkpoint, tensor) an analysis set out to measure, so that a report can say what is missing."""
        self.db.executemany("INSERT OR IGNORE INTO planned VALUES (?, ?, ?, ?)",
                            [(run, ckpt, tensor, options) for run, ckpt, tensor in tensors])
        self.db.commit()

    def completeness(self, options: str) -> Completeness:
        """How much of what was planned with ``options`` is measured, failed, or missing."""
        with self._reading():
            planned, measured, failed = self.db.execute(
                "SELECT COUNT(*), SUM(d.error IS NULL AND d.run IS NOT NULL), SUM(d.error IS NOT NULL) FROM planned p "
                "LEFT JOIN done d ON p.run = d.run AND p.checkpoint = d.checkpoint AND p.tensor = d.tensor "
                "AND p.options = d.options WHERE p.options = ?", (options,)).fetchone()
        return Completeness(planned, measured or 0, failed or 0)

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
        self.db.execute("DELETE FROM nulls WHERE run=? AND checkpoint=? AND tensor=? AND options=?",
                        (run, checkpoint, tensor, options))
        self.db.execute("DELETE FROM statistics WHERE run=? AND checkpoint=? AND tensor=? AND options=?",
                        (run, checkpoint, tensor, options))
        for r in results:
            if r.nulls is not None:
                blob = r.nulls if isinstance(r.nulls, bytes) else pack_tree(np.asarray(r.nulls).ravel())
                samples = packed_count(blob) // (r.rows + r.cols - 1)
                self.db.execute("INSERT INTO nulls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                (run, checkpoint, tensor, r.role, r.head, r.expert, options, r.null_seed, samples, blob))
            if r.statistics is not None:
                self.db.execute("INSERT INTO statistics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                (run, checkpoint, tensor, r.role, r.head, r.expert, options, *r.statistics))
        self.db.execute("INSERT OR REPLACE INTO done VALUES (?, ?, ?, ?, ?, ?, NULL)",
                        (run, checkpoint, tensor, options, len(values), signature))
        self._commit_soon()

    def _has(self, table: str) -> bool:
        """Whether the database has ``table`` (one opened only for reading may predate it)."""
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone() \
            is not None

    def with_extras(self, options: str, null_samples: int, seed: int, statistics: bool) -> set[tuple[str, str, str]]:
        """(run, checkpoint, tensor) whose every stored matrix has at least ``null_samples`` null trees of
        ``seed`` (when that is above 0) and its statistics (when ``statistics``)."""
        counts = self.stored_counts(options)
        ready = set(counts)
        if null_samples > 0:
            rows = self.db.execute("SELECT run, checkpoint, tensor, COUNT(*) FROM nulls WHERE options=? AND seed=? "
                                   "AND samples >= ? GROUP BY run, checkpoint, tensor", (options, seed, null_samples))
            ready &= {(r, c, t) for r, c, t, n in rows if n == counts.get((r, c, t))}
        if statistics:
            rows = self.db.execute("SELECT run, checkpoint, tensor, COUNT(*) FROM statistics WHERE options=? "
                                   "GROUP BY run, checkpoint, tensor", (options,))
            ready &= {(r, c, t) for r, c, t, n in rows if n == counts.get((r, c, t))}
        return ready

    def extras_stored(self, options: str) -> tuple[int, int | None, bool]:
        """What the analysis ``options`` already holds beside its trees: the most null samples of a matrix, their
        seed (None: no null model), and whether it has weight statistics."""
        row = self.db.execute("SELECT MAX(samples), seed FROM nulls WHERE options = ?", (options,)).fetchone()
        stats = self.db.execute("SELECT 1 FROM statistics WHERE options = ? LIMIT 1", (options,)).fetchone()
        return (int(row[0]) if row and row[0] is not None else 0, row[1] if row and row[0] is not None else None,
                stats is not None)

    def null_trees(self, options: str) -> dict[tuple[str, str, str, str, int, int], tuple[int, np.ndarray]]:
        """(run, checkpoint, tensor, role, head, expert) -> (seed, samples x tree values) of the null model; of
        several seeds, the one with the most samples."""
        if not self._has("nulls"):
            return {}
        found: dict[tuple[str, str, str, str, int, int], tuple[int, np.ndarray]] = {}
        with self._reading():
            query = ("SELECT n.run, n.checkpoint, n.tensor, n.role, n.head, n.expert, n.seed, n.samples, n.trees, "
                     "t.rows, t.cols FROM nulls n JOIN trees t ON n.run = t.run AND n.checkpoint = t.checkpoint AND "
                     "n.tensor = t.tensor AND n.role = t.role AND n.head = t.head AND n.expert = t.expert AND "
                     "n.options = t.options WHERE n.options = ? ORDER BY n.samples")
            for run, ckpt, tensor, role, head, expert, seed, samples, blob, rows, cols in self.db.execute(query, (options,)):
                length = rows + cols - 1
                try:
                    values = unpack_tree(blob, samples * length).reshape(samples, length)
                except CorruptTreeError as err:
                    raise CorruptTreeError(f"{self.path}: {err} (null model of {run}/{ckpt} tensor {tensor!r} "
                                           f"{role}); run analyze again") from None
                found[(run, ckpt, tensor, role, head, expert)] = (seed, values)
        return found

    def statistics(self, options: str) -> dict[tuple[str, str, str, str, int, int], tuple[float, ...]]:
        """(run, checkpoint, tensor, role, head, expert) -> the weight statistics (order of STATISTICS)."""
        if not self._has("statistics"):
            return {}
        with self._reading():
            rows = self.db.execute("SELECT run, checkpoint, tensor, role, head, expert, " + ", ".join(STATISTICS)
                                   + " FROM statistics WHERE options = ?", (options,))
            return {tuple(r[:6]): tuple(r[6:]) for r in rows}  # type: ignore[misc]

    def save_error(self, run: str, checkpoint: str, tensor: str, options: str, message: str) -> None:
        """A tensor that could not be measured: its message, and none of its rows."""
        for table in ("trees", "nulls", "statistics"):
            self.db.execute(f"DELETE FROM {table} WHERE run=? AND checkpoint=? AND tensor=? AND options=?",
                            (run, checkpoint, tensor, options))
        self.db.execute("INSERT OR REPLACE INTO done VALUES (?, ?, ?, ?, NULL, NULL, ?)",
                        (run, checkpoint, tensor, options, message))
        self._commit_soon()

    def errors(self) -> list[tuple[str, str, str, str]]:
        """(run, checkpoint, tensor, message) of every tensor that could not be measured."""
        with self._reading():
            return self.db.execute("SELECT run, checkpoint, tensor, error FROM done WHERE error IS NOT NULL").fetchall()

    def trees(self, options: str | None = None) -> Iterator[StoredTree]:
        query = (
            "SELECT t.run, t.checkpoint, c.step, c.tokens, t.tensor, t.head, t.expert, t.block, t.role, t.rows, "
            "t.cols, t.max_abs, t.tree "
            "FROM trees t LEFT JOIN checkpoints c ON t.run = c.run AND t.checkpoint = c.checkpoint"
            + (" WHERE t.options = ?" if options is not None else "")
            + " ORDER BY t.run, c.step, t.checkpoint, t.block, t.tensor, t.expert, t.role, t.head"
        )
        with self._reading():
            for row in self.db.execute(query, (options,) if options is not None else ()):
                run, ckpt, step, tokens, tensor, head, expert, block, role, rows, cols, max_abs, blob = row
                try:
                    tree = unpack_tree(blob, rows + cols - 1)
                except CorruptTreeError as err:
                    what = f"{role}" + (f" head {head}" if head >= 0 else "") + (f" expert {expert}" if expert >= 0 else "")
                    raise CorruptTreeError(
                        f"{self.path}: {err} ({run}/{ckpt} tensor {tensor!r} {what}); delete its rows or the "
                        f"database and run analyze again") from None
                yield StoredTree(run, ckpt, step, tokens, tensor, head, expert, block, role, rows, cols, max_abs, tree)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """A damaged database file is an error naming it, not a bare sqlite3 message."""
        try:
            yield
        except sqlite3.DatabaseError as err:
            raise ValueError(f"{self.path}: the results database is damaged ({err}); delete it and run analyze "
                             "again") from None

    def option_sets(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT options FROM trees ORDER BY options")]


_CHECKED = {b"b": b"B", b"f": b"F", b"d": b"D"}  # the tags of trees stored with a checksum


def pack_tree(tree: np.ndarray) -> bytes:
    """The values in the narrowest exact format, tagged (``B`` bfloat16 bits, ``F`` float32, ``D`` float64) and
    followed by the CRC-32 of the values, so that a damaged blob is an error on read, never a wrong NP.

    Trees of bfloat16 layers take 2 bytes a value and need no compression (which cost more than measuring)."""
    as32 = tree.astype("<f4")
    if not np.array_equal(as32, tree):
        tag, body = b"D", np.ascontiguousarray(tree, dtype="<f8").tobytes()
    else:
        bits = as32.view("<u4")
        if not (bits & 0xFFFF).any():
            tag, body = b"B", (bits >> 16).astype("<u2").tobytes()
        else:
            tag, body = b"F", as32.tobytes()
    return tag + struct.pack("<I", zlib.crc32(body)) + body


def pack_bfloat16_keys(keys: np.ndarray) -> bytes:
    """:func:`pack_tree` of the values of bfloat16 keys (bits with the sign cleared), from the keys themselves:
    the same bytes, without decoding them to floats first."""
    body = np.ascontiguousarray(keys, dtype="<u2").tobytes()
    return b"B" + struct.pack("<I", zlib.crc32(body)) + body


def packed_count(blob: bytes) -> int:
    """How many values a blob of :func:`pack_tree` holds, from its length (no decoding, no check)."""
    width = {b"B": 2, b"F": 4, b"D": 8}.get(blob[:1])
    return (len(blob) - 5) // width if width else len(unpack_tree(blob))


def unpack_tree(blob: bytes, count: int | None = None) -> np.ndarray:
    """The values of :func:`pack_tree`; :class:`CorruptTreeError` when the checksum or the number of values
    (``count``: rows + cols - 1 of its matrix) does not match. Untagged (zlib) and unchecked blobs of databases
    written by earlier versions are still read."""
    if not isinstance(blob, bytes) or not blob:
        raise CorruptTreeError(f"the stored tree is not a blob ({type(blob).__name__})")
    tag = blob[:1]
    if tag in _CHECKED.values():
        if len(blob) < 5:
            raise CorruptTreeError(f"the stored tree is cut short ({len(blob)} bytes)")
        (crc,) = struct.unpack("<I", blob[1:5])
        body = blob[5:]
        if zlib.crc32(body) != crc:
            raise CorruptTreeError("the stored tree does not match its checksum")
        tag = tag.lower()
    else:
        body = blob[1:]
    if tag == b"b" and len(body) % 2 == 0:
        values = (np.frombuffer(body, "<u2").astype("<u4") << 16).view("<f4").astype(np.float64)
    elif tag == b"f" and len(body) % 4 == 0:
        values = np.frombuffer(body, "<f4").astype(np.float64)
    elif tag == b"d" and len(body) % 8 == 0:
        values = np.frombuffer(body, "<f8").copy()
    else:
        try:  # databases written before the tags: zlib'd float64
            values = np.frombuffer(zlib.decompress(blob), dtype="<f8")
        except zlib.error as err:
            raise CorruptTreeError(f"the stored tree cannot be read ({err})") from None
    if count is not None and len(values) != count:
        raise CorruptTreeError(f"the stored tree has {len(values)} values where its matrix has {count}")
    return values
