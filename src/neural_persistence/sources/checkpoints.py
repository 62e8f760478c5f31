"""Find checkpoints on disk and list the tensors they hold, without loading any.

Accepted: a Hugging Face model directory (``config.json`` with ``model.safetensors``, or shards with their
``model.safetensors.index.json``, or ``pytorch_model.bin``), a single ``.safetensors`` or ``.gguf`` file (a
folder of ``.gguf`` files: one checkpoint each), a PyTorch Distributed Checkpoint folder (``.metadata``), a
DeepSpeed ``global_step*/`` folder (:mod:`.distributed_formats`), or a directory of such checkpoints (``checkpoint-500/``, ``step_1000/``, ...). The training step comes from the name, else from
``trainer_state.json``.
"""

from __future__ import annotations

import functools
import json
import math
import zipfile
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .distributed_formats import (
    DEEPSPEED_MODEL_STATES,
    dcp_read,
    dcp_tensors,
    deepspeed_module,
    is_dcp_folder,
    is_deepspeed_file,
)
from .gguf_file import gguf_file
from .hub_cache import HubOptions, hub_revisions
from .safetensors_file import CorruptCheckpointError, SafetensorsFile

__all__ = ["Checkpoint", "TensorRef", "find_checkpoints", "hub_checkpoints", "read_tensor", "tensors_of"]

_STEP = re.compile(r"(?:checkpoint|step|global_step|iter|ckpt)[-_]?(\d+)$|(?:^|[-_])(\d+)$")
#: A step named as such anywhere in a file name (``model-step1000-Q4_0.gguf``): GGUF names end in quantization
#: types (``Q4_1``), whose digits are no step.
_NAMED_STEP = re.compile(r"(?:checkpoint|step|global_step|iter|ckpt)[-_]?(\d+)")


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
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, why) of metadata that could not be used
    format: str = "safetensors"  # how the weights are stored: safetensors, pytorch, gguf, dcp, deepspeed

    def tensors(self) -> list[TensorRef]:
        """Every tensor in the checkpoint's files (headers only), in file order."""
        return [ref for file in self.files for ref in tensors_of(file)]


def tensors_of(file: Path) -> list[TensorRef]:
    """The tensors one weight file holds (its header only); CorruptCheckpointError if it cannot be read."""
    if file.suffix == ".gguf":
        g = gguf_file(file)
        return [TensorRef(n, g.shapes[n], g.dtypes[n], file) for n in g.tensors]
    if file.name == ".metadata":
        return [TensorRef(n, shape, dtype, file) for n, shape, dtype in dcp_tensors(file.parent)]
    if is_deepspeed_file(file):
        return [TensorRef(n, tuple(t.shape), str(t.dtype).replace("torch.", ""), file)
                for n, t in deepspeed_module(file).items()]
    if file.suffix == ".bin":
        return [TensorRef(n, tuple(t.shape), str(t.dtype), file) for n, t in _torch_bin(file).items()]
    header = SafetensorsFile(file)
    return [TensorRef(i.name, i.shape, i.dtype, file) for i in header.tensors.values()]


def find_checkpoints(path: str | Path) -> list[Checkpoint]:
    """The checkpoints at ``path``, ordered by step (then name)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if not path.is_dir():
        if path.suffix == ".gguf":
            return [_gguf_checkpoint(path)]
        if path.suffix not in (".safetensors", ".bin"):
            raise ValueError(f"{path}: expected a .safetensors, pytorch_model.bin or .gguf file, or a directory")
        meta = _Metadata(path.parent)
        return [Checkpoint(path.stem, path, meta.step(path.stem), [path], meta.config(), tokens=meta.tokens(),
                           problems=meta.problems, format="pytorch" if path.suffix == ".bin" else "safetensors")]
    own = _maybe(path)
    if own:
        return own
    found = [c for sub in sorted(p for p in path.iterdir() if p.is_dir()) for c in _maybe(sub)]
    if not found:
        raise FileNotFoundError(
            f"{path}: no checkpoint found (looked for *.safetensors, model.safetensors.index.json, "
            "pytorch_model.bin, *.gguf, a Distributed Checkpoint's .metadata and DeepSpeed's "
            "mp_rank_00_model_states.pt here and in its subdirectories)"
        )
    return sorted(found, key=lambda c: (c.step is None, c.step or 0, c.name))


def hub_checkpoints(repo_id: str, options: HubOptions = HubOptions()) -> list[Checkpoint]:
    """The cached revisions of a hub repository (:mod:`.hub_cache`), one checkpoint each, named by revision."""
    out = []
    for revision in hub_revisions(repo_id, options):
        found = _maybe(revision.path) if revision.path.is_dir() else []
        if found:
            ckpt = found[0]
            ckpt.name = revision.name
            ckpt.step = revision.step if revision.step is not None else ckpt.step
            ckpt.tokens = revision.tokens if revision.tokens is not None else ckpt.tokens
            ckpt.format = f"hub cache, {ckpt.format}"
        else:
            ckpt = Checkpoint(revision.name, revision.path, revision.step, [], tokens=revision.tokens,
                              format="hub cache",
                              problems=[(str(revision.path), f"revision {revision.name} ({revision.commit[:12]}) has "
                                         "no weight files in the cache (fetched without them?); fetch them with "
                                         f"huggingface_hub.snapshot_download('{repo_id}', revision='{revision.name}')")])
        out.append(ckpt)
    return out


def _gguf_checkpoint(path: Path) -> Checkpoint:
    """A ``.gguf`` file: one checkpoint, its config from the file's metadata (a config.json beside it wins)."""
    meta = _Metadata(path.parent)
    try:
        config = gguf_file(path).config
    except CorruptCheckpointError as err:
        meta.problems.append((str(path), str(err)))
        config = {}
    named = _NAMED_STEP.search(path.stem)
    return Checkpoint(path.stem, path, int(named.group(1)) if named else None, [path], meta.config() or config or None,
                      tokens=meta.tokens(), problems=meta.problems, format="gguf")


def _maybe(path: Path) -> list[Checkpoint]:
    meta = _Metadata(path)
    own = _weight_files(path, meta.problems)
    if own is None:
        ggufs = sorted(path.glob("*.gguf"))
        return [_gguf_checkpoint(f) for f in ggufs]
    files, missing = own
    kind = _format(files)
    config = meta.config()
    if config is None and kind in ("dcp", "deepspeed"):  # trainers keep one config.json for the run, above
        config = _Metadata(path.parent).config()
    return [Checkpoint(path.name, path, meta.step(path.name), files, config, missing, meta.tokens(),
                       meta.problems, format=kind)]


def _format(files: list[Path]) -> str:
    if files and files[0].name == ".metadata":
        return "dcp"
    if files and is_deepspeed_file(files[0]):
        return "deepspeed"
    return "pytorch" if files and all(f.suffix == ".bin" for f in files) else "safetensors"


def _weight_files(path: Path, problems: list[tuple[str, str]]) -> tuple[list[Path], dict[str, Path]] | None:
    """The weight files of a checkpoint folder (None when it holds none); an index that cannot be used is a
    problem of the checkpoint, and its shards are then those on disk."""
    index = sorted(path.glob("*.safetensors.index.json"))
    if index:
        weight_map = _read_json(index[0], problems, dict, "an object").get("weight_map")
        if isinstance(weight_map, dict) and all(isinstance(f, str) for f in weight_map.values()):
            shards = sorted({path / f for f in weight_map.values()})
            missing = {t: path / f for t, f in weight_map.items() if not (path / f).is_file()}
            return [s for s in shards if s.is_file()], missing
        if not any(str(index[0]) == f for f, _ in problems):
            problems.append((str(index[0]), f"its weight_map must be an object of tensor -> file, got {weight_map!r:.60}; "
                             "reading every *.safetensors file of the folder instead"))
    # model.safetensors first: where another file (an EMA copy, an adapter) repeats a tensor, the model's is measured
    files = sorted(path.glob("*.safetensors"), key=lambda f: (f.name != "model.safetensors", f.name))
    if files:
        return files, {}
    bins = sorted(path.glob("pytorch_model*.bin"))
    if bins:
        return bins, {}
    if is_dcp_folder(path):
        return [path / ".metadata"], {}
    states = sorted(path.glob("*_model_states.pt"), key=lambda f: f.name != DEEPSPEED_MODEL_STATES)
    if states:  # mp_rank_00 first; a ZeRO-3 or tensor-parallel folder is refused, naming what to do, when read
        return states[:1], {}
    return None


def _read_json(path: Path, problems: list[tuple[str, str]], kind: type, what: str) -> Any:
    """A JSON file's content if it is of ``kind``; otherwise the problem is recorded and an empty ``kind`` returned."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        problems.append((str(path), f"cannot be read as JSON ({err})"))
        return kind()
    if not isinstance(data, kind):
        problems.append((str(path), f"must be {what}, got a JSON {type(data).__name__}"))
        return kind()
    return data


class _Metadata:
    """A checkpoint folder's ``config.json`` and ``trainer_state.json``, each read once; what cannot be used is a
    problem of the checkpoint (recorded, reported by ``analyze``), never an exception that stops the run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.problems: list[tuple[str, str]] = []
        self._state: dict[str, Any] | None = None

    def config(self) -> dict[str, Any] | None:
        path = self.folder / "config.json"
        if not path.is_file():
            return None
        data: dict[str, Any] = _read_json(path, self.problems, dict, "a JSON object")
        return data or None

    def state(self) -> dict[str, Any]:
        if self._state is None:
            path = self.folder / "trainer_state.json"
            self._state = _read_json(path, self.problems, dict, "a JSON object") if path.is_file() else {}
        return self._state

    def step(self, name: str) -> int | None:
        match = _STEP.search(name)
        if match:
            return int(match.group(1) or match.group(2))
        return self._integer("global_step", self.state().get("global_step"))

    def tokens(self) -> int | None:
        state = self.state()
        seen = state.get("num_input_tokens_seen")
        history = state.get("log_history", [])
        for entry in history if isinstance(history, list) else []:
            if isinstance(entry, dict):
                seen = entry.get("num_input_tokens_seen", seen)
        return self._integer("num_input_tokens_seen", seen)

    def _integer(self, field: str, value: Any) -> int | None:
        if value is None:
            return None
        whole = (isinstance(value, int) and not isinstance(value, bool)
                 or isinstance(value, float) and math.isfinite(value) and value.is_integer())
        if not whole or value < 0:
            self.problems.append((str(self.folder / "trainer_state.json"),
                                  f"{field} must be a non-negative integer, got {value!r:.40}; left unknown"))
            return None
        return int(value)


@functools.lru_cache(maxsize=2)  # one .bin is read for each of its tensors; mmap keeps this cheap
def _torch_bin(file: Path) -> dict[str, Any]:
    """A ``pytorch_model.bin`` through ``torch.load(weights_only=True)``; anything needing code is refused."""
    from .._optional import require

    torch = require("torch", "torch")
    try:
        if zipfile.is_zipfile(file):
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        else:  # the legacy format of torch.save(..., _use_new_zipfile_serialization=False) cannot be mapped
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError (or RuntimeError) for unsafe or broken files
        raise CorruptCheckpointError(
            f"{file}: refused to load: it is not a plain tensor checkpoint that torch.load(weights_only=True) "
            f"accepts (a pickle that would run code, or a damaged file). Convert it to safetensors. ({err})"
        ) from None
    if not isinstance(state, dict):
        raise CorruptCheckpointError(f"{file}: holds a {type(state).__name__}, not a dict of tensors (a state_dict)")
    return {k: v for k, v in state.items() if hasattr(v, "shape")}


def read_tensor(ref: TensorRef) -> Any:
    """The tensor's data, memory-mapped where the format allows."""
    if ref.file.suffix == ".gguf":
        return gguf_file(ref.file).read(ref.name)
    if ref.file.name == ".metadata":
        return dcp_read(ref.file.parent, ref.name)
    if is_deepspeed_file(ref.file):
        return deepspeed_module(ref.file)[ref.name]
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
