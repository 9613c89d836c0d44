"""FATE's vertically split example data: the bank's (guest) half and the partner's (host) half.

`<name>_hetero_guest.csv` holds `id,y,x0,...` (labels and the bank's features),
`<name>_hetero_host.csv` holds `id,x0,...` (the partner's features). Files are found in
`$CIPHERSTREAM_FATE_DATA`, else in `../shared/data/fate` beside the repository.

>>> bank, partner = load_vertical("breast")
>>> len(bank.join_ids), bank.features.shape[1], partner.features.shape[1], sorted(set(bank.labels.tolist()))
(569, 10, 20, [0, 1])
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.core.config import REPO_ROOT
from services.core.errors import ConfigError, ValidationError

DATA_DIR_VARIABLE = "CIPHERSTREAM_FATE_DATA"
DATASETS = ("breast", "default_credit")


@dataclass(frozen=True)
class GuestTable:
    """The bank's half: join ids, 0/1 labels and its own features, row i for join_ids[i]."""

    join_ids: tuple[str, ...]
    labels: np.ndarray
    features: np.ndarray


@dataclass(frozen=True)
class HostTable:
    """The partner's half: join ids and its features."""

    join_ids: tuple[str, ...]
    features: np.ndarray


def data_dir() -> Path:
    configured = os.environ.get(DATA_DIR_VARIABLE)
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data" / "fate"


def _read(path: Path, id_column: str = "id") -> tuple[list[str], dict[str, np.ndarray]]:
    if not path.is_file():
        raise ConfigError(f"{path} not found; set {DATA_DIR_VARIABLE} to the folder of FATE's hetero csv files")
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    if not header or header[0] != id_column:
        raise ValidationError(f"{path.name}: first column must be '{id_column}', not {header[:1]}")
    try:
        values = np.array([[float(cell) for cell in row[1:]] for row in body], dtype=np.float64)
    except ValueError as exc:
        raise ValidationError(f"{path.name}: a non-numeric cell ({exc})") from exc
    columns = {name: values[:, index] for index, name in enumerate(header[1:])}
    return [row[0] for row in body], columns


def load_vertical(name: str) -> tuple[GuestTable, HostTable]:
    """Both halves of a FATE hetero data set, each in its own file's row order."""
    if name not in DATASETS:
        raise ConfigError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    folder = data_dir()
    guest_ids, guest = _read(folder / f"{name}_hetero_guest.csv")
    host_ids, host = _read(folder / f"{name}_hetero_host.csv")
    labels = guest.pop("y").astype(np.int64)
    if not set(np.unique(labels).tolist()) <= {0, 1}:
        raise ValidationError(f"{name}: labels must be 0 or 1")
    bank = GuestTable(tuple(guest_ids), labels, np.column_stack(list(guest.values())))
    partner = HostTable(tuple(host_ids), np.column_stack(list(host.values())))
    return bank, partner


def stratified_split(join_ids: tuple[str, ...], labels: np.ndarray, test_fraction: float = 0.25,
                     seed: int = 0) -> tuple[list[str], list[str]]:
    """A fixed train/test split of join ids with the same share of positives on both sides.

    >>> train, test = stratified_split(tuple("abcdefgh"), np.array([0, 0, 0, 0, 1, 1, 1, 1]), 0.25)
    >>> len(train), len(test), sorted(set(train) | set(test)) == list("abcdefgh")
    (6, 2, True)
    """
    rng = np.random.default_rng(seed)
    train: list[str] = []
    test: list[str] = []
    ids = np.array(join_ids, dtype=object)
    for label in np.unique(labels):
        members = ids[labels == label]
        rng.shuffle(members)
        cut = round(len(members) * test_fraction)
        test.extend(members[:cut].tolist())
        train.extend(members[cut:].tolist())
    return train, test
