"""Find checkpoints on disk and list the tensors they hold, without loading any.

Accepted: a Hugging Face model directory (``config.json`` with ``model.safetensors``, or shards with their
``model.safetensors.index.json``, or ``pytorch_model.bin``), a single ``.safetensors`` file, or a directory of
such checkpoints (``checkpoint-500/``, ``step_1000/``, ...). The training step comes from the name, else from
``trainer_state.json``.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .safetensors_file import CorruptCheckpointError, SafetensorsFile

__all__ = ["Checkpoint", "TensorRef", "find_checkpoints", "read_tensor", "tensors_of"]

_STEP = re.compile(r"(?:checkpoint|step|global_step|iter|ckpt)[-_]?(\d+)$|(?:^|[-_])(\d+)$")


@dataclass(frozen=True)
class TensorRef:
    """A tensor of a checkpoint: its name, shape, dtype and the file holding it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    file: Path


@dataclass
class Checkpoint:
    """One checkpoint: where it is, its step (if known), its config, and its weight files."""

    name: str
    path: Path
    step: int | None
    files: list[Path]
    config: dict[str, Any] | None = None
    missing: dict[str, Path] = field(default_factory=dict)  # tensor -> shard file that is not there
    tokens: int | None = None  # training tokens seen, when trainer_state.json records them

    def tensors(self) -> list[TensorRef]:
        """Every tensor in the checkpoint's files (headers only), in file order."""
        return [ref for file in self.files for ref in tensors_of(file)]


def tensors_of(file: Path) -> list[TensorRef]:
    """The tensors one weight file holds (its header only); CorruptCheckpointError if it cannot be read."""
    if file.suffix == ".bin":
        return [TensorRef(n, tuple(t.shape), str(t.dtype), file) for n, t in _torch_bin(file).items()]
    header = SafetensorsFile(file)
    return [TensorRef(i.name, i.shape, i.dtype, file) for i in header.tensors.values()]


def find_checkpoints(path: str | Path) -> list[Checkpoint]:
    """The checkpoints at ``path``, ordered by step (then name)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix not in (".safetensors", ".bin"):
            raise ValueError(f"{path}: expected a .safetensors or pytorch_model.bin file, or a directory")
        return [Checkpoint(path.stem, path, _step(path.parent, path.stem), [path], _config(path.parent),
                           tokens=_tokens(path.parent))]
    own = _maybe(path)
    if own:
        return own
    found = [c for sub in sorted(p for p in path.iterdir() if p.is_dir()) for c in _maybe(sub)]
    if not found:
        raise FileNotFoundError(
            f"{path}: no checkpoint found (looked for *.safetensors, model.safetensors.index.json or "
            "pytorch_model.bin here and in its subdirectories)"
        )
    return sorted(found, key=lambda c: (c.step is None, c.step or 0, c.name))


def _maybe(path: Path) -> list[Checkpoint]:
    own = _weight_files(path)
    if own is None:
        return []
    files, missing = own
    return [Checkpoint(path.name, path, _step(path, path.name), files, _config(path), missing, _tokens(path))]


def _weight_files(path: Path) -> tuple[list[Path], dict[str, Path]] | None:
    index = sorted(path.glob("*.safetensors.index.json"))
    if index:
        weight_map = json.loads(index[0].read_text())["weight_map"]
        shards = sorted({path / f for f in weight_map.values()})
        missing = {t: path / f for t, f in weight_map.items() if not (path / f).is_file()}
        return [s for s in shards if s.is_file()], missing
    # model.safetensors first: where another file (an EMA copy, an adapter) repeats a tensor, the model's is measured
    files = sorted(path.glob("*.safetensors"), key=lambda f: (f.name != "model.safetensors", f.name))
    if files:
        return files, {}
    bins = sorted(path.glob("pytorch_model*.bin"))
    if bins:
        return bins, {}
    return None


def _step(folder: Path, name: str) -> int | None:
    match = _STEP.search(name)
    if match:
        return int(match.group(1) or match.group(2))
    state = folder / "trainer_state.json"
    if state.is_file():
        step = json.loads(state.read_text()).get("global_step")
        return int(step) if step is not None else None
    return None


def _tokens(folder: Path) -> int | None:
    state = folder / "trainer_state.json"
    if not state.is_file():
        return None
    data = json.loads(state.read_text())
    seen = data.get("num_input_tokens_seen")
    for entry in data.get("log_history", []):
        seen = entry.get("num_input_tokens_seen", seen)
    return int(seen) if seen is not None else None


def _config(folder: Path) -> dict[str, Any] | None:
    config = folder / "config.json"
    if not config.is_file():
        return None
    try:
        data: dict[str, Any] = json.loads(config.read_text())
    except json.JSONDecodeError as err:
        raise CorruptCheckpointError(f"{config}: not valid JSON ({err})") from None
    return data


@functools.lru_cache(maxsize=2)  # one .bin is read for each of its tensors; mmap keeps this cheap
def _torch_bin(file: Path) -> dict[str, Any]:
    """A ``pytorch_model.bin`` through ``torch.load(weights_only=True)``; anything needing code is refused."""
    from .._optional import require

    torch = require("torch", "torch")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises UnpicklingError (or RuntimeError) for unsafe or broken files
        raise CorruptCheckpointError(
            f"{file}: refused to load: it is not a plain tensor checkpoint that torch.load(weights_only=True) "
            f"accepts (a pickle that would run code, or a damaged file). Convert it to safetensors. ({err})"
        ) from None
    return {k: v for k, v in state.items() if hasattr(v, "shape")}


def read_tensor(ref: TensorRef) -> Any:
    """The tensor's data, memory-mapped where the format allows."""
    if ref.file.suffix == ".bin":
        return _torch_bin(ref.file)[ref.name]
    return _header(ref.file).read(ref.name)


def prefetch_tensor(ref: TensorRef) -> None:
    """Start reading a tensor from the disk in the background, so that it is in memory when its turn comes."""
    if ref.file.suffix == ".safetensors":
        _header(ref.file).prefetch(ref.name)


def _header(file: Path) -> SafetensorsFile:
    stat = file.stat()
    return _safetensors(file, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _safetensors(path: Path, size: int, mtime_ns: int) -> SafetensorsFile:
    """A file's parsed header, once per version of the file (size and time are part of the key)."""
    return SafetensorsFile(path)
