"""Turning ``source`` (Hub id, local path, or datasets object) into one split.

Local class-per-folder trees are scanned here instead of going through
``load_dataset("imagefolder")``: the scan only lists files (no copy into the
Arrow cache), labels are the sorted folder names, and the fingerprint is a hash
of the file list, sizes and mtimes, so it changes whenever a file does.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, IterableDataset, IterableDatasetDict

from ..constants import quiet_env
from ..errors import DataError, DatasetNotFoundError
from .columns import IMAGE_EXTENSIONS

SPLIT_DIR_NAMES = {"train", "test", "validation", "valid", "val", "dev", "eval"}
_DATA_FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json"}
# What ``datasets`` writes with save_to_disk.
_SAVED_DATASET = ("state.json", "dataset_info.json")
_SAVED_DICT = "dataset_dict.json"


@dataclass
class Resolved:
    """One split, ready for column detection."""

    dataset: Dataset | IterableDataset
    dataset_id: str
    split: str
    revision: str | None = None
    base_dir: str | None = None  # relative image paths (csv) resolve against it
    fingerprint: str | None = None


def choose_split(available: list[str], requested: str | None, where: str) -> str:
    """``requested`` if present; by default "train", else the only split."""
    if requested is not None:
        if requested in available:
            return requested
        raise DataError(
            f"split {requested!r} not found in {where}; available splits: {', '.join(available) or 'none'}"
        )
    if "train" in available:
        return "train"
    if len(available) == 1:
        return available[0]
    raise DataError(f"{where} has no 'train' split and several others: {', '.join(available)}; pass split=")


def _pick(dd: DatasetDict | IterableDatasetDict, requested: str | None, where: str) -> tuple[Any, str]:
    name = choose_split(list(dd.keys()), requested, where)
    return dd[name], name


@contextlib.contextmanager
def _quiet_bars() -> Iterator[None]:
    """datasets' own progress bars ("Generating train split") off while loading under T2V_HUB_QUIET
    (the CLI's --quiet), and back as they were after: a process that goes on keeps its bars."""
    if not quiet_env() or not datasets.is_progress_bar_enabled():
        yield
        return
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.enable_progress_bars()


@_quiet_bars()  # a generator context manager is also a decorator: entered afresh on every call
def resolve(
    source: Any,
    *,
    split: str | None,
    config: str | None,
    revision: str | None,
    streaming: bool,
    token: str | bool | None,
) -> Resolved:
    if isinstance(source, (DatasetDict, IterableDatasetDict)):
        ds, name = _pick(source, split, "the DatasetDict")
        return Resolved(ds, "<in-memory>", name, fingerprint=getattr(ds, "_fingerprint", None))
    if isinstance(source, (Dataset, IterableDataset)):
        own = str(source.split) if source.split is not None else None
        if split is not None and own is not None and split != own:
            raise DataError(f"split {split!r} requested but the dataset object is the {own!r} split")
        return Resolved(
            source,
            "<in-memory>",
            own or split or "unspecified",
            fingerprint=getattr(source, "_fingerprint", None),
        )
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(
            f"unsupported source of type {type(source).__name__}: pass a Hub id, a path or a datasets object"
        )
    path = os.path.expanduser(os.fspath(source))
    if os.path.exists(path):
        path = os.path.abspath(path)
        for name, value in (("config", config), ("revision", revision)):
            if value is not None:
                # Silently ignoring it would embed another task than the one asked for.
                raise DataError(f"{name}={value!r} applies to Hub datasets only; {path} is a local "
                                f"{'folder' if os.path.isdir(path) else 'file'}: drop {name}=")
        if os.path.isdir(path):
            return _from_dir(path, split, streaming)
        return _from_file(path, split, streaming)
    if isinstance(source, os.PathLike) or _looks_local(path):
        raise DatasetNotFoundError(f"no such file or folder: {path}")
    _check_hub_id(path)
    return _from_hub(path, split=split, config=config, revision=revision, streaming=streaming, token=token)


def _check_hub_id(repo_id: str) -> None:
    """Refuse what cannot be a Hub dataset id before any network call (which would report the
    network, or 'not found', for a typo), by the hub layer's rule for repo ids."""
    from ..errors import HubError
    from ..hub.base import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HubError:
        hint = "; a split goes in split=, not in the id" if ":" in repo_id else ""
        raise DatasetNotFoundError(
            f"{repo_id!r} is neither a local path nor a valid Hub dataset id ('name' or 'namespace/name': "
            f"letters, digits, '-', '_' and '.'){hint}; check the spelling, or pass an existing path"
        ) from None


def _looks_local(s: str) -> bool:
    # Hub ids are "name" or "user/name"; anything else that does not exist is a missing path.
    return (
        s.startswith((".", "/", "~"))
        or s.count("/") > 1
        or "\\" in s
        or s.lower().endswith(tuple(_DATA_FILE_BUILDERS) + (".arrow",))
    )


def _stat_fingerprint(root: str, files: list[str], extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for f in files:
        st = os.stat(f)
        h.update(f"{os.path.relpath(f, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _load_error(what: str, e: Exception) -> DataError:
    """One line naming what is wrong with a data source and the way out, not only datasets' wrapper.

    ``datasets`` reports a bad file as "DatasetGenerationError: An error occurred while generating
    the dataset"; the reason (not UTF-8, a JSON syntax error in row n) is its cause.
    """
    cause: BaseException = e
    while type(cause).__name__ == "DatasetGenerationError" and (cause.__cause__ or cause.__context__):
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    text = " ".join(str(cause).split())
    if isinstance(cause, UnicodeDecodeError):
        return DataError(f"cannot load {what}: it is not UTF-8 text ({text}); save it as UTF-8, or as parquet")
    if "JSON parse error" in text:
        return DataError(f"cannot load {what}: not valid JSON ({text}); fix the file (JSON Lines: one object per line)")
    if "corresponds to no data" in text or type(cause).__name__ == "EmptyDataError" or "size is 0 bytes" in text:
        return DataError(f"cannot load {what}: it holds no rows (empty, or a header only); add rows or pass another file")
    fix = "; check that the file is complete and in the format its name says" if os.path.isfile(what) else ""
    return DataError(f"cannot load {what}: {type(cause).__name__}: {text}{fix}")


def _from_file(path: str, split: str | None, streaming: bool) -> Resolved:
    choose_split(["train"], split, path)
    ext = os.path.splitext(path)[1].lower()
    base = os.path.dirname(path)
    fp = _stat_fingerprint(base, [path])
    try:
        if ext == ".arrow":
            ds: Dataset | IterableDataset = Dataset.from_file(path)
            return Resolved(ds, path, "train", base_dir=base, fingerprint=ds._fingerprint)
        if ext not in _DATA_FILE_BUILDERS:
            raise DataError(
                f"unsupported file type {ext or '(none)'}: {path}; use parquet, arrow, csv, tsv or json(l)"
            )
        kwargs = {"sep": "\t"} if ext == ".tsv" else {}
        ds = datasets.load_dataset(
            _DATA_FILE_BUILDERS[ext], data_files=[path], split="train", streaming=streaming, **kwargs
        )
    except DataError:
        raise
    except Exception as e:
        raise _load_error(path, e) from e
    return Resolved(ds, path, "train", base_dir=base, fingerprint=getattr(ds, "_fingerprint", None) or fp)


def _image_files(folder: str) -> list[str]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [
            os.path.join(root, f)
            for f in sorted(files)
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return out


def _subdirs(folder: str) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _scan_classes(folder: str) -> tuple[list[str], list[int], list[str]]:
    """Files, class ids and class names of a class-per-sub-folder tree (empty folders skipped)."""
    files: list[str] = []
    ids: list[int] = []
    names: list[str] = []
    for cls in _subdirs(folder):
        found = _image_files(os.path.join(folder, cls))
        if found:
            files += found
            ids += [len(names)] * len(found)
            names.append(cls)
    return files, ids, names


def _from_dir(path: str, split: str | None, streaming: bool) -> Resolved:
    entries = set(os.listdir(path))
    if _SAVED_DICT in entries or all(m in entries for m in _SAVED_DATASET):
        try:
            loaded = datasets.load_from_disk(path)
        except Exception as e:
            raise _load_error(path, e) from e
        if isinstance(loaded, DatasetDict):
            ds, name = _pick(loaded, split, path)
        else:
            name = str(loaded.split) if loaded.split is not None else "train"
            choose_split([name], split, path)
            ds = loaded
        return Resolved(ds, path, name, fingerprint=ds._fingerprint)
    subdirs = _subdirs(path)
    split_dirs = [d for d in subdirs if d.lower() in SPLIT_DIR_NAMES and _subdirs(os.path.join(path, d))]
    if split_dirs and len(split_dirs) == len(subdirs):
        name = choose_split(split_dirs, split, path)
        return _imagefolder(path, os.path.join(path, name), name)
    if subdirs and any(_image_files(os.path.join(path, d)) for d in subdirs):
        choose_split(["train"], split, path)
        return _imagefolder(path, path, "train")
    # Data files (parquet/csv/...) or a Hub-style repo layout: datasets infers the splits.
    try:
        loaded = datasets.load_dataset(path, streaming=streaming)
    except Exception as e:
        raise DataError(
            f"{path} is neither a class-per-folder image tree, a save_to_disk folder nor a folder of data files"
            f" ({type(e).__name__}: {e})"
        ) from e
    ds, name = _pick(loaded, split, path)
    return Resolved(ds, path, name, base_dir=path, fingerprint=getattr(ds, "_fingerprint", None))


def _imagefolder(root: str, folder: str, split: str) -> Resolved:
    files, ids, names = _scan_classes(folder)
    if not files:
        raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of {folder}")
    features = Features({"image": Image(), "label": ClassLabel(names=names)})
    # Image() stores str paths as {"path": p, "bytes": None}: no file is read here.
    ds = Dataset.from_dict({"image": files, "label": ids}, features=features, split=split)
    return Resolved(
        ds, root, split, base_dir=folder, fingerprint=_stat_fingerprint(folder, files, "\n".join(names))
    )


def _from_hub(
    repo_id: str,
    *,
    split: str | None,
    config: str | None,
    revision: str | None,
    streaming: bool,
    token: str | bool | None,
) -> Resolved:
    from datasets.exceptions import DatasetNotFoundError as HFNotFound

    def not_found(e: Exception) -> DatasetNotFoundError:
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        offline = (
            " (HF_HUB_OFFLINE is set and it is not in the local cache)"
            if datasets.config.HF_HUB_OFFLINE
            else ""
        )
        return DatasetNotFoundError(
            f"dataset {repo_id!r} not found on the Hub at {endpoint}{offline}: {e}."
            " Check the id, the revision, HF_ENDPOINT and your token, or pass a local path"
        )

    if not datasets.config.HF_HUB_OFFLINE:
        _check_reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        names = datasets.get_dataset_split_names(repo_id, config_name=config, revision=revision, token=token)
        name = choose_split(list(names), split, repo_id)
        ds = datasets.load_dataset(
            repo_id, name=config, split=name, revision=revision, token=token, streaming=streaming
        )
    except (HFNotFound, FileNotFoundError, ConnectionError) as e:
        raise not_found(e) from e
    except DataError:
        raise
    except Exception as e:
        raise _load_error(repo_id, e) from e
    return Resolved(
        ds,
        repo_id,
        name,
        revision=_hub_sha(repo_id, revision, token),
        fingerprint=getattr(ds, "_fingerprint", None),
    )


def _check_reachable(endpoint: str) -> None:
    """Fail in seconds, and truthfully, when the Hub cannot be reached at all (see t2v_hub/network.py)."""
    from ..network import unreachable

    why = unreachable(endpoint)
    if why is not None:
        raise DataError(
            f"cannot reach {endpoint} ({why}); check the network or HF_ENDPOINT, pass a "
            "local path, or set HF_HUB_OFFLINE=1 to read datasets from the local cache only"
        )


def _hub_sha(repo_id: str, revision: str | None, token: str | bool | None) -> str | None:
    """The commit the Hub serves for ``revision`` (provenance); the request itself when unknown."""
    if datasets.config.HF_HUB_OFFLINE:
        return revision
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(repo_id, revision=revision, token=token).sha or revision
    except Exception:  # noqa: BLE001 - provenance only; the data is already loaded
        return revision
