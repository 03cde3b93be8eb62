"""Safetensors checkpoints on disk: finding, validating, hashing, streaming copy, atomic output.

The conversion never loads a model to rewrite a checkpoint. It reads each source file's safetensors
header itself (8-byte length + JSON), validates it against the file size (a truncated or corrupt file is
refused before anything is written), and writes each output file with `SafetensorsWriter`, which lays out
the header first and then streams every tensor's bytes straight from the source file in bounded chunks.
Untouched tensors therefore never become Python objects: peak memory is a chunk, or one tensor when its
dtype changes, independent of the shard size.

Only safetensors is ever read. A directory holding only pickle files (``*.bin``, ``*.pt``) is refused and
never unpickled.

`atomic_output_dir` builds the output in a hidden temporary directory beside OUT and renames it into
place at the end, so an interrupted or failed conversion leaves no partial checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import struct
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import torch

from .dtypes import SAFETENSORS_DTYPES as DTYPES
from .dtypes import SAFETENSORS_FLOATS as FLOAT_NAMES
from .dtypes import safetensors_name as dtype_name
from .errors import SlconvertError
from .outputs import check_output_dir, follow_umask, inside

__all__ = [
    "DTYPES",
    "TensorEntry",
    "WeightFile",
    "WeightSet",
    "read_header",
    "find_weights",
    "sha256_file",
    "SafetensorsWriter",
    "atomic_output_dir",
    "read_tensor",
    "dtype_name",
    "directory_digest",
    "check_output_location",
    "checkpoint_path",
    "check_checkpoint",
    "layer_number",
]

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Files of a source checkpoint that a written model (converted or trained) carries over: what loading and
# generating need (tokenizer, generation settings, chat template, processor, custom code) and the licence.
# Anything else in the source (its own training logs, evaluation results, figures) describes the source, not
# the new model, and would be mistaken for the new model's. Weights and config.json are written anew.
CARRIED_FILES = ("tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt", "*.model",
                 "*.tiktoken", "chat_template*", "generation_config.json", "preprocessor_config.json",
                 "processor_config.json", "*.py", "LICENSE*", "NOTICE*")


# The files a tokenizer is read from, one of them enough (CARRIED_FILES carries them): a fast tokenizer's file, a
# sentencepiece model, a BPE or WordPiece vocabulary, a tiktoken file.
TOKENIZER_FILES = ("tokenizer.json", "*.model", "vocab.*", "*.tiktoken")


def holds_tokenizer(names) -> bool:
    """Whether the file names `names` include a tokenizer's (TOKENIZER_FILES)."""
    return any(fnmatch(name, pattern) for name in names for pattern in TOKENIZER_FILES)


def _matches(item: Path, patterns) -> bool:
    """Whether `item` is a visible file whose name matches one of `patterns` (hidden files are never carried)."""
    return item.is_file() and not item.name.startswith(".") and any(fnmatch(item.name, p) for p in patterns)


def carried_files(source: Path, *, card: bool = False) -> list[Path]:
    """The files of `source` that a model written from it carries over (CARRIED_FILES; README.md if `card`)."""
    patterns = CARRIED_FILES + (("README.md",) if card else ())
    return [item for item in sorted(Path(source).iterdir()) if _matches(item, patterns)]


CHUNK_BYTES = 1 << 20
MAX_HEADER_BYTES = 100 << 20

@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str  # safetensors name, e.g. "BF16"
    shape: tuple[int, ...]
    begin: int  # byte offsets inside the data section
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class WeightFile:
    path: Path
    data_start: int  # byte offset of the data section in the file
    tensors: dict[str, TensorEntry]
    metadata: dict

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def _corrupt(path: Path, why: str) -> SlconvertError:
    return SlconvertError(f"{path} is not a valid safetensors file ({why}); re-download or re-save the checkpoint")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_header(path: Path) -> WeightFile:
    """Parse and validate one safetensors file's header against the file size."""
    path = Path(path)
    if not path.is_file():
        raise SlconvertError(f"weight file {path} is missing; re-download the checkpoint")
    size = path.stat().st_size
    if size < 8:
        raise _corrupt(path, f"truncated: only {size} bytes")
    with open(path, "rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
            raise _corrupt(path, f"truncated or corrupt: header claims {header_len} bytes, file has {size}")
        raw = handle.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _corrupt(path, "its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "its header is not a JSON object")
    data_size = size - 8 - header_len
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _corrupt(path, "its '__metadata__' is not a map of strings")
    tensors: dict[str, TensorEntry] = {}
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise _corrupt(path, f"entry {name!r} lacks dtype/shape/data_offsets") from None
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise _corrupt(path, f"tensor {name!r} has unsupported dtype {dtype!r}")
        if not all(_is_count(n) for n in (*shape, begin, end)):
            raise _corrupt(path, f"tensor {name!r} has shape {list(shape)} and offsets {[begin, end]}, which are "
                                 "not all whole numbers >= 0")
        numel = 1
        for dim in shape:
            numel *= dim
        if end - begin != numel * DTYPES[dtype][1] or begin < 0:
            raise _corrupt(path, f"tensor {name!r} has offsets that do not match its shape")
        if end > data_size:
            raise _corrupt(path, f"truncated: tensor {name!r} ends at byte {end} of a {data_size}-byte data section")
        tensors[name] = TensorEntry(name, dtype, shape, int(begin), int(end))
    return WeightFile(path, 8 + header_len, tensors, metadata)


@dataclass(frozen=True)
class WeightSet:
    """Every weight file of a checkpoint and which file holds which tensor."""

    directory: Path
    files: list[WeightFile]  # in index order (or the single file)
    sharded: bool

    def locate(self, name: str) -> WeightFile | None:
        for weight_file in self.files:
            if name in weight_file.tensors:
                return weight_file
        return None

    def names(self) -> set[str]:
        return {name for f in self.files for name in f.tensors}

    @property
    def largest_file_bytes(self) -> int:
        return max(f.size for f in self.files)


def _read_index(index_path: Path) -> dict[str, str]:
    """The `weight_map` of a sharded checkpoint's index file (tensor name -> shard file name); anything else in
    its place (bytes that are not UTF-8 JSON, no object, a map whose values are not file names in the checkpoint
    directory) is one line naming the file and what is wrong."""

    def bad(why: str) -> SlconvertError:
        return SlconvertError(f"{index_path} is not a valid safetensors index ({why}); re-save or re-download the "
                              "checkpoint")

    try:
        raw = index_path.read_bytes()
    except OSError as err:
        raise SlconvertError(f"cannot read {index_path} ({err.strerror or err}); check its permissions") from None
    try:
        index = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise bad("its bytes are not UTF-8 text, so not JSON") from None
    except json.JSONDecodeError as err:
        raise bad(f"not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    if not isinstance(index, dict):
        raise bad(f"a JSON {type(index).__name__}, not an object")
    if "weight_map" not in index:
        raise bad("no 'weight_map'")
    weight_map = index["weight_map"]
    if not isinstance(weight_map, dict):
        raise bad(f"'weight_map' is a {type(weight_map).__name__}, not an object")
    if not weight_map:
        raise bad("'weight_map' is empty")
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or not shard or Path(shard).name != shard:
            raise bad(f"'weight_map' maps {tensor!r} to {shard!r}, not a file name")
    return weight_map


def _refuse_duplicates(files: list[WeightFile]) -> None:
    """A tensor held by two shards is ambiguous: which copy a loader reads (and a conversion writes into its index)
    would depend on the order the files are read in, so it is refused in one line naming both files."""
    seen: dict[str, Path] = {}
    for weight_file in files:
        for name in weight_file.tensors:
            if name in seen:
                raise SlconvertError(f"tensor {name!r} is in both {seen[name].name} and {weight_file.path.name} of "
                                     f"{weight_file.path.parent}; re-save the checkpoint so that each tensor is in "
                                     "one shard")
            seen[name] = weight_file.path


def find_weights(directory: Path) -> WeightSet:
    """Locate and validate the safetensors files of a checkpoint directory (single file or sharded)."""
    directory = Path(directory)
    index_path = directory / INDEX_FILE
    if index_path.is_file():
        weight_map = _read_index(index_path)
        shard_names = list(dict.fromkeys(weight_map.values()))
        for shard in shard_names:
            if not (directory / shard).is_file():
                raise SlconvertError(f"{INDEX_FILE} names shard {shard!r}, which is missing from {directory}; re-download it")
        files = [read_header(directory / shard) for shard in shard_names]
        by_name = {f.path.name: f for f in files}
        _refuse_duplicates(files)
        for tensor, shard in weight_map.items():
            if tensor not in by_name[shard].tensors:
                raise SlconvertError(f"{INDEX_FILE} says {tensor!r} is in {shard!r}, but that file lacks it; re-save the checkpoint")
        return WeightSet(directory, files, sharded=True)
    single = directory / SINGLE_FILE
    if single.is_file():
        return WeightSet(directory, [read_header(single)], sharded=False)
    loose = sorted(directory.glob("*.safetensors"))
    if len(loose) == 1:
        return WeightSet(directory, [read_header(loose[0])], sharded=False)
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise SlconvertError(
            f"{directory} holds only pickle weights ({', '.join(pickles[:3])}); they are never unpickled here: "
            "re-save the model with save_pretrained(..., safe_serialization=True) to get safetensors"
        )
    if loose:
        raise SlconvertError(f"{directory} has several .safetensors files but no {INDEX_FILE}; re-save the checkpoint")
    raise SlconvertError(f"{directory} has no safetensors weights ({SINGLE_FILE} or {INDEX_FILE})")


def checkpoint_path(value, what: str = "model path") -> Path:
    """`value` as a Path (a str or os.PathLike naming a checkpoint directory, `~` expanded); anything else (None, bytes,
    a number, a loaded model) is one line naming what was given instead."""
    if isinstance(value, str) and not value.strip():
        raise SlconvertError(f"{what} is empty; pass the checkpoint's directory")
    if isinstance(value, (str, os.PathLike)):
        try:
            return Path(value).expanduser()
        except TypeError:  # an os.PathLike whose __fspath__ returns bytes
            value = os.fspath(value)
    if isinstance(value, bytes):
        raise SlconvertError(f"{what} {value!r} is bytes; pass it as a str or pathlib.Path (os.fsdecode decodes it)")
    shown = "None" if value is None else type(value).__name__
    raise SlconvertError(f"{what} must be a str or pathlib.Path naming a checkpoint directory, not {shown}")


def read_config(directory) -> dict:
    """The config.json of a checkpoint directory as a dict; a missing or damaged one is one clear error."""
    directory = checkpoint_path(directory)
    if not directory.exists():
        raise SlconvertError(f"model path {directory} does not exist; pass a local checkpoint directory")
    if not directory.is_dir():
        raise SlconvertError(f"model path {directory} is not a directory; pass the checkpoint's directory")
    config = directory / "config.json"
    if not config.is_file():
        raise SlconvertError(f"{directory} has no config.json; pass the folder that `slconvert convert` or "
                             "`save_pretrained` wrote")
    try:
        raw = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SlconvertError(f"{config} is not valid JSON; repair or re-download it") from None
    if not isinstance(raw, dict):
        raise SlconvertError(f"{config} is not a JSON object; repair or re-download it")
    return raw


_LAYER_NUMBER = re.compile(r"(?:^|\.)layers\.(\d+)\.")  # a per-layer tensor's layer, as transformers names it
_LAYER_COUNT_SECTIONS = ("", "text_config", "language_config")  # where a decoder's num_hidden_layers may sit


def layer_number(tensor_name: str) -> int | None:
    """The layer a tensor belongs to ('model.layers.12.mlp.up_proj.weight' -> 12), or None for a tensor of no
    layer (embeddings, final norm)."""
    match = _LAYER_NUMBER.search(tensor_name)
    return int(match.group(1)) if match else None


def check_layer_count(raw: dict, weights: WeightSet, config_path) -> None:
    """Refuse a config.json whose num_hidden_layers (top level, or the decoder's text or language section) is
    more than the layers the weights hold. transformers builds one entry per declared layer while it reads the
    config, so a damaged count (1e9) would stall it for minutes before any other check; the weights' headers say
    in milliseconds how many layers there are. A config that describes fewer layers than the weights hold is
    `surgery.plan.check_weights`' business (it needs the model's own key names)."""
    held = max((n for name in weights.names() if (n := layer_number(name)) is not None), default=None)
    if held is None:
        return
    for section in _LAYER_COUNT_SECTIONS:
        fields = raw.get(section) if section else raw
        count = fields.get("num_hidden_layers") if isinstance(fields, dict) else None
        if isinstance(count, int) and not isinstance(count, bool) and count > held + 1:
            field = f"{section}.num_hidden_layers" if section else "num_hidden_layers"
            raise SlconvertError(
                f"{config_path}: {field} is {count:,}, but the weights hold layers 0..{held} only; fix "
                f"{field} in config.json or re-download the checkpoint"
            )


def check_checkpoint(path) -> WeightSet:
    """The checks every entry point makes before it lets transformers read a checkpoint: a directory with a
    config.json that is a JSON object, safetensors weights whose headers and sizes agree (a truncated file or a
    pickle-only checkpoint is refused here, in one line, before anything is unpickled or mapped), and a layer
    count the weights can fill (`check_layer_count`)."""
    raw = read_config(path)
    directory = checkpoint_path(path)
    weights = find_weights(directory)
    check_layer_count(raw, weights, directory / "config.json")
    return weights


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def read_tensor(weight_file: WeightFile, name: str) -> torch.Tensor:
    """One tensor read with plain file I/O (no mmap of the whole file)."""
    entry = weight_file.tensors[name]
    with open(weight_file.path, "rb") as handle:
        handle.seek(weight_file.data_start + entry.begin)
        raw = bytearray(handle.read(entry.nbytes))
    torch_dtype = DTYPES[entry.dtype][0]
    if not raw:
        return torch.empty(entry.shape, dtype=torch_dtype)
    return torch.frombuffer(raw, dtype=torch_dtype).reshape(entry.shape)


def _disk_full(path: Path, err: OSError) -> SlconvertError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return SlconvertError(f"disk full while writing {path} ({os.strerror(err.errno)}); free space and retry")
    return SlconvertError(f"could not write {path}: {err.strerror or err}; check the output location")


class SafetensorsWriter:
    """Write one safetensors file tensor by tensor: header first, then each tensor's bytes in order.

    Tensors are declared up front (`add_copy` for a byte range of a source file, optionally converted to
    another float dtype; `add_tensor` for a new tensor), then `write()` streams them.
    """

    def __init__(self, path: Path, metadata: dict | None = None) -> None:
        self.path = Path(path)
        self.metadata = {"format": "pt", **(metadata or {})}
        self._items: list[tuple[str, str, tuple[int, ...], object]] = []

    def add_copy(self, source: WeightFile, name: str, out_dtype: str | None = None, out_name: str | None = None) -> None:
        entry = source.tensors[name]
        dtype = entry.dtype if out_dtype is None or entry.dtype not in FLOAT_NAMES else out_dtype
        self._items.append((out_name or name, dtype, entry.shape, (source, entry)))

    def add_tensor(self, name: str, tensor: torch.Tensor) -> None:
        tensor = tensor.detach().cpu().contiguous()
        self._items.append((name, dtype_name(tensor.dtype), tuple(tensor.shape), tensor))

    @property
    def names(self) -> list[str]:
        return [item[0] for item in self._items]

    def total_bytes(self) -> int:
        total = 0
        for _, dtype, shape, _ in self._items:
            numel = 1
            for dim in shape:
                numel *= dim
            total += numel * DTYPES[dtype][1]
        return total

    def _header(self) -> bytes:
        header: dict = {"__metadata__": self.metadata}
        offset = 0
        for name, dtype, shape, _ in self._items:
            numel = 1
            for dim in shape:
                numel *= dim
            nbytes = numel * DTYPES[dtype][1]
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        return raw + b" " * (-len(raw) % 8)

    def write(self, progress=None) -> None:
        header = self._header()
        try:
            with open(self.path, "wb") as out:
                self._write(out, struct.pack("<Q", len(header)) + header)
                for name, dtype, _, source in self._items:
                    if isinstance(source, torch.Tensor):
                        self._write(out, _tensor_bytes(source))
                    else:
                        self._copy(out, source, dtype)
                    if progress is not None:
                        progress(name)
                out.flush()
                os.fsync(out.fileno())
        except OSError as err:
            raise _disk_full(self.path, err) from None

    def _write(self, out, data: bytes | memoryview) -> None:
        out.write(data)

    def _copy(self, out, source: tuple[WeightFile, TensorEntry], dtype: str) -> None:
        weight_file, entry = source
        source_dtype, element = DTYPES[entry.dtype]
        # Whole elements per chunk, so a dtype cast can run chunk by chunk on the flat data.
        step = max(element, CHUNK_BYTES // element * element)
        with open(weight_file.path, "rb") as handle:
            handle.seek(weight_file.data_start + entry.begin)
            left = entry.nbytes
            while left:
                chunk = handle.read(min(step, left))
                if not chunk or len(chunk) % element:
                    raise _corrupt(weight_file.path, f"truncated inside tensor {entry.name!r}")
                left -= len(chunk)
                if dtype != entry.dtype:
                    values = torch.frombuffer(bytearray(chunk), dtype=source_dtype).to(DTYPES[dtype][0])
                    self._write(out, _tensor_bytes(values))
                else:
                    self._write(out, chunk)


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    tensor = tensor.contiguous()
    if tensor.numel() == 0:
        return memoryview(b"")
    return memoryview(tensor.view(torch.uint8).reshape(-1).numpy())


# The names `slconvert convert` may write into OUT (surgery/convert.py): the weight files (named as the source's),
# the index of a sharded checkpoint, config.json, the model card and the source's CARRIED_FILES. A conversion lists
# the ones it wrote in its block ("files"); a conversion without that list is judged by these patterns.
CONVERT_WRITES = ("*.safetensors", INDEX_FILE, "config.json", "README.md", *CARRIED_FILES)


def check_output_location(source: Path, out: Path, force: bool) -> None:
    """Refuse OUT inside MODEL (or MODEL inside OUT) and any other place `outputs.check_output_dir` refuses, an
    existing OUT without --force, and with --force an OUT that is not an earlier conversion
    (`_check_replaceable`)."""
    source, out = source.resolve(), out.resolve()
    if out.exists() and not force and not (inside(out, source) or inside(source, out)):
        raise SlconvertError(f"output {out} already exists; pass --force to replace it or choose another path")
    check_output_dir(out, {"the source model": source}, "output", parent_must_exist=True)
    if out.is_dir():
        _check_replaceable(out)


def _check_replaceable(out: Path) -> None:
    """Refuse, in one line naming what is there, a folder that --force may not replace: --force deletes OUT whole,
    so it replaces an empty folder or an earlier conversion holding nothing but what that conversion wrote (the
    block's "files", else CONVERT_WRITES), never a training run (its checkpoints/, metrics, recipe), files a user
    added beside a conversion (a fine-tuned weight file, a script), or another model."""
    entries = sorted(Path(out).iterdir())
    if not entries:
        return

    def refused(what: str) -> SlconvertError:
        return SlconvertError(f"output {out} {what}; --force replaces only an earlier conversion: choose another OUT "
                              "or remove the folder yourself")

    def shown(items: list[Path]) -> str:
        names = [item.name + ("/" if item.is_dir() else "") for item in items]
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    if not (out / "config.json").is_file():
        raise refused(f"holds files but no checkpoint (no config.json; it holds {shown(entries)})")
    try:
        block = json.loads((out / "config.json").read_text()).get("superlinear")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        block = None
    if not isinstance(block, dict):
        raise refused("holds a checkpoint that `slconvert convert` did not write (its config.json has no "
                      "'superlinear' block)")
    written = block.get("files")
    if isinstance(written, list):
        foreign = [item for item in entries if not (item.is_file() and item.name in written)]
    else:
        foreign = [item for item in entries if not _matches(item, CONVERT_WRITES)]
    if foreign:
        raise refused(f"holds {shown(foreign)}, which `slconvert convert` did not write there")


PARTIAL_TAG = ".partial-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(out: Path) -> list[Path]:
    """Remove the hidden `.OUT.partial-PID-*` folders that a killed run into `out` left behind (their process
    is gone); say so in one line each. Folders of a run still in progress are left alone."""
    out = Path(out)
    removed = []
    if not out.parent.is_dir():
        return removed
    for item in out.parent.glob(f".{out.name}{PARTIAL_TAG}*"):
        pid_text = item.name[len(f".{out.name}{PARTIAL_TAG}"):].split("-", 1)[0]
        if pid_text.isdigit() and _pid_alive(int(pid_text)) and int(pid_text) != os.getpid():
            continue
        shutil.rmtree(item, ignore_errors=True)
        print(f"note: removed {item}, left by an interrupted run into {out}", file=sys.stderr)
        removed.append(item)
    return removed


@contextlib.contextmanager
def atomic_output_dir(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside `out`; rename it to `out` only if the block completes.

    The temporary name carries this process's id, so that a later run into the same `out` can tell a folder
    left by a killed run (removed, with a note) from one that another live run is writing.
    """
    out = Path(out).resolve()
    remove_stale_partials(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{PARTIAL_TAG}{os.getpid()}-", dir=out.parent))
    except OSError as err:
        raise SlconvertError(f"cannot create a directory in {out.parent} ({err.strerror}); choose a writable location") from None
    try:
        yield tmp
        follow_umask(tmp)
        if out.exists():
            if not force:
                raise SlconvertError(f"output {out} appeared while converting; pass --force to replace it")
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / out.name)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def copy_small_file(src: Path, dst: Path) -> None:
    try:
        shutil.copyfile(src, dst)
    except OSError as err:
        raise _disk_full(dst, err) from None


def write_text(path: Path, text: str) -> None:
    try:
        Path(path).write_text(text)
    except OSError as err:
        raise _disk_full(Path(path), err) from None


def directory_digest(directory: Path) -> str:
    """sha256 over every file's relative path and contents (to prove a directory was left untouched)."""
    digest = hashlib.sha256()
    root = Path(directory)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()
