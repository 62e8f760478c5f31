"""Checkpoints written by distributed trainers: PyTorch Distributed Checkpoint folders and DeepSpeed's.

**Distributed Checkpoint** (DCP: ``.metadata`` and ``__0_0.distcp``, ...; written by torchtitan, FSDP2,
Megatron's ``torch_dist``, Lightning's sharded strategies). The metadata lists every tensor with its global
shape and dtype; one tensor is read by asking ``torch.distributed.checkpoint.load`` for that key alone, which
reads only its chunks, in this process, without a process group. A trainer's whole state is flattened into names
(``model.layers.0...``, ``optimizer.state...``): the optimizer's, scheduler's and data loader's entries are not
weights and are left out, and a wrapper prefix that every weight shares (``model.`` of ``{"model": state_dict}``)
is dropped, so that names read as the model's own.

**DeepSpeed** (``global_step1000/mp_rank_00_model_states.pt``): the model's ``module`` state dict, loaded with
``torch.load(weights_only=True, mmap=True)`` (nothing runs, nothing is read before it is used). ZeRO stage 3 keeps
only empty placeholders there, the parameters being split over ``zero_pp_rank_*`` files with the optimizer state;
those are refused with what to run instead (``zero_to_fp32.py``, which DeepSpeed writes beside the checkpoint).
Tensor-parallel checkpoints (``mp_rank_01...``) hold slices of each matrix and are refused too.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from .._optional import require
from .safetensors_file import CorruptCheckpointError

__all__ = ["DCP_SKIPPED_PREFIXES", "dcp_read", "file_version", "dcp_tensors", "deepspeed_module", "is_dcp_folder",
           "is_deepspeed_file"]

#: Entries of a flattened trainer state that are not the model's weights.
DCP_SKIPPED_PREFIXES = ("optimizer.", "optim.", "optimizers.", "lr_scheduler.", "lr_schedulers.", "scheduler.",
                        "dataloader.", "train_state.", "rng", "extra_state")
DEEPSPEED_MODEL_STATES = "mp_rank_00_model_states.pt"


def is_dcp_folder(path: Path) -> bool:
    return (path / ".metadata").is_file() and any(path.glob("*.distcp"))


def is_deepspeed_file(file: Path) -> bool:
    return file.name.endswith("_model_states.pt")


def file_version(path: Path) -> tuple[Path, int, int]:
    """A cache key that changes when the file does (a checkpoint rewritten in place is read again)."""
    info = path.stat()
    return path, info.st_mtime_ns, info.st_size


def _folder_version(folder: Path) -> tuple[tuple[Path, int, int], ...]:
    """:func:`file_version` of a DCP folder's metadata and of each of its data files."""
    return tuple(file_version(f) for f in [folder / ".metadata", *sorted(folder.glob("*.distcp"))])


def _dcp_metadata(folder: Path) -> Any:
    return _dcp_metadata_of(_folder_version(folder))


@functools.lru_cache(maxsize=8)
def _dcp_metadata_of(version: tuple[tuple[Path, int, int], ...]) -> Any:
    """The checkpoint's metadata, its data files checked to hold every byte it points to (a file cut short is an
    error naming it, for the whole checkpoint, as for a cut safetensors file)."""
    torch = require("torch", "torch")
    from torch.distributed.checkpoint import FileSystemReader

    folder = version[0][0].parent
    try:
        metadata = FileSystemReader(str(folder)).read_metadata()
    except Exception as err:  # a damaged or foreign .metadata: pickle, EOF or attribute errors
        raise CorruptCheckpointError(f"{folder / '.metadata'}: not readable as a Distributed Checkpoint "
                                     f"(torch {torch.__version__}: {type(err).__name__}: {err})") from None
    ends: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        path = getattr(info, "relative_path", None)
        if isinstance(path, str):
            ends[path] = max(ends.get(path, 0), int(info.offset) + int(info.length))
    for name, end in sorted(ends.items()):
        data = folder / name
        size = data.stat().st_size if data.is_file() else None
        if size is None or size < end:
            raise CorruptCheckpointError(
                f"{data}: " + ("missing" if size is None else f"cut short ({size} bytes, the metadata points to byte "
                                                             f"{end})") + "; the checkpoint is not read")
    return metadata


#: Prefixes a trainer puts before every weight's name when it saves ``{"model": state_dict, ...}``.
WRAPPERS = ("model.", "module.", "state_dict.")


def _dcp_names(folder: Path) -> dict[str, str]:
    return _dcp_names_of(_folder_version(folder))


@functools.lru_cache(maxsize=8)
def _dcp_names_of(version: tuple[tuple[Path, int, int], ...]) -> dict[str, str]:
    """The model tensors' names (a wrapper prefix that every one of them shares removed, so that they read as the
    model names them) -> their keys in the checkpoint."""
    keys = [name for name, meta in _dcp_metadata_of(version).state_dict_metadata.items()
            if hasattr(meta, "size") and not _trainer_state(name)]  # no bytes entries, no trainer state
    for prefix in WRAPPERS:
        if keys and all(k.startswith(prefix) for k in keys):
            return {k[len(prefix):]: k for k in keys}
    return {k: k for k in keys}


def _trainer_state(name: str) -> bool:
    return name.startswith(DCP_SKIPPED_PREFIXES) or f"{name}." in DCP_SKIPPED_PREFIXES or name.startswith("rng")


def dcp_tensors(folder: Path) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) of every model tensor the checkpoint lists, in its order."""
    metadata = _dcp_metadata(folder).state_dict_metadata
    return [(name, tuple(int(d) for d in metadata[key].size), str(metadata[key].properties.dtype).replace("torch.", ""))
            for name, key in _dcp_names(folder).items()]


def dcp_read(folder: Path, name: str) -> Any:
    """One tensor of a DCP folder, read alone (its chunks only), as a CPU torch tensor."""
    torch = require("torch", "torch")
    import torch.distributed.checkpoint as dcp

    key = _dcp_names(folder)[name]
    meta = _dcp_metadata(folder).state_dict_metadata[key]
    target = {key: torch.empty(tuple(meta.size), dtype=meta.properties.dtype)}
    try:
        dcp.load(target, storage_reader=dcp.FileSystemReader(str(folder)))
    except Exception as err:  # a missing or truncated .distcp file surfaces here, with torch's own words
        raise CorruptCheckpointError(f"{folder}: tensor {name!r} cannot be read from its .distcp files "
                                     f"({type(err).__name__}: {str(err)[:300]})") from None
    return target[key]


def deepspeed_module(file: Path) -> dict[str, Any]:
    """The ``module`` state dict of a DeepSpeed ``*_model_states.pt`` (tensors mapped, not read)."""
    return _deepspeed_module_of(file_version(file))


@functools.lru_cache(maxsize=2)
def _deepspeed_module_of(version: tuple[Path, int, int]) -> dict[str, Any]:
    torch = require("torch", "torch")
    file = version[0]
    folder = file.parent
    if file.name.startswith("zero_pp_rank_") or not (folder / DEEPSPEED_MODEL_STATES).exists() and any(
            folder.glob("zero_pp_rank_*_model_states.pt")):
        raise CorruptCheckpointError(_zero3_message(folder))
    if file.name != DEEPSPEED_MODEL_STATES:
        raise CorruptCheckpointError(f"{file}: a tensor-parallel DeepSpeed shard (each holds slices of the "
                                     "matrices); merge the model-parallel ranks into one state dict first")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise CorruptCheckpointError(f"{file}: refused to load: not a DeepSpeed model-states file that "
                                     f"torch.load(weights_only=True) accepts ({type(err).__name__}: {err})") from None
    module = state.get("module") if isinstance(state, dict) else None
    if not isinstance(module, dict):
        raise CorruptCheckpointError(f"{file}: no 'module' state dict in it (keys: {sorted(state)[:8] if isinstance(state, dict) else type(state).__name__})")
    tensors = {k: v for k, v in module.items() if hasattr(v, "shape")}
    if tensors and all(v.numel() == 0 for v in tensors.values()) and any(folder.glob("zero_pp_rank_*")):
        raise CorruptCheckpointError(_zero3_message(folder))
    return tensors


def _zero3_message(folder: Path) -> str:
    script = folder.parent / "zero_to_fp32.py"
    how = (f"python {script} {folder.parent} OUT --tag {folder.name}" if script.exists()
           else "DeepSpeed's zero_to_fp32.py (python -m deepspeed.utils.zero_to_fp32 CHECKPOINT_DIR OUT)")
    return (f"{folder}: a ZeRO stage 3 checkpoint: the weights are partitioned over zero_pp_rank_* files with the "
            f"optimizer state, and mp_rank_00_model_states.pt holds only placeholders. Consolidate them first ({how}) "
            "and analyse the result")
