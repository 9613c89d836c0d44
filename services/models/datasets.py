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
import math
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
    source: str = ""  # the file it was read from, for messages


@dataclass(frozen=True)
class HostTable:
    """The partner's half: join ids and its features."""

    join_ids: tuple[str, ...]
    features: np.ndarray
    source: str = ""


ID_COLUMN = "id"
LABEL_COLUMN = "y"
MISSING_CELLS = frozenset({"", "na", "nan", "null", "none"})
"""Cells read as a missing value (any case): exports write gaps in all these ways."""


def data_dir() -> Path:
    configured = os.environ.get(DATA_DIR_VARIABLE)
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data" / "fate"


def read_guest(path: Path) -> GuestTable:
    """The bank's half from FATE's layout, `id,y,x0,...`: ids unique, labels 0 or 1, features numbers
    or empty (missing). Rows are numbered as a spreadsheet numbers them (the header is row 1).

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "guest.csv"
    >>> _ = path.write_text("id,y,x0,x1\\na,1,0.5,\\nb,0,1e3,2\\n")
    >>> table = read_guest(path)
    >>> table.join_ids, table.labels.tolist(), table.features.tolist()
    (('a', 'b'), [1, 0], [[0.5, nan], [1000.0, 2.0]])
    >>> _ = path.write_text("id,y,x0\\na,1,0.5\\nb,2,1\\n")
    >>> read_guest(path)
    Traceback (most recent call last):
    ...
    services.core.errors.ValidationError: guest.csv, row 3, column 'y': label '2' is not 0 or 1
    """
    ids, header, cells = _read_rows(path, labelled=True)
    label_at = header.index(LABEL_COLUMN)
    labels = np.array([_label(path, row, cell_row[label_at]) for row, cell_row in cells], dtype=np.int64)
    feature_at = [at for at in range(1, len(header)) if at != label_at]
    features = _numbers(path, header, cells, feature_at)
    return GuestTable(tuple(ids), labels, features, path.name)


def read_host(path: Path) -> HostTable:
    """The partner's half from FATE's layout, `id,x0,...` (no labels: a `y` column is refused)."""
    ids, header, cells = _read_rows(path, labelled=False)
    return HostTable(tuple(ids), _numbers(path, header, cells, list(range(1, len(header)))), path.name)


def _read_rows(path: Path, labelled: bool) -> tuple[list[str], list[str], list[tuple[int, list[str]]]]:
    """(ids, header, [(row number, cells)]) after the checks every CSV half gets."""
    try:
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            rows = [(reader.line_num, row) for row in reader if row]
    except OSError as exc:
        raise ValidationError(f"{path}: cannot be read ({exc.strerror or exc})", reason="unreadable") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ValidationError(f"{path.name}: not a readable CSV file ({exc})", reason="bad_csv") from exc
    name = path.name
    if not header or header[0] != ID_COLUMN:
        raise ValidationError(f"{name}, row 1, column 1: the first column must be '{ID_COLUMN}', not "
                              f"{header[0] if header else 'nothing'!r}", reason="missing_column")
    duplicated = sorted({column for column in header if header.count(column) > 1})
    if duplicated:
        raise ValidationError(f"{name}, row 1: column {duplicated[0]!r} appears more than once", reason="duplicate_column")
    if labelled and LABEL_COLUMN not in header:
        raise ValidationError(f"{name}, row 1: no '{LABEL_COLUMN}' column (the labels)", reason="missing_column")
    if not labelled and LABEL_COLUMN in header:
        raise ValidationError(f"{name}, row 1, column '{LABEL_COLUMN}': the partner's half carries no labels",
                              reason="unexpected_column")
    if len(header) < (3 if labelled else 2):
        raise ValidationError(f"{name}, row 1: no feature column", reason="missing_column")
    if not rows:
        raise ValidationError(f"{name}: no data rows after the header", reason="empty")
    first_row_of: dict[str, int] = {}
    for row, cells in rows:
        if len(cells) != len(header):
            where = (f"column {header[len(cells)]!r} is missing" if len(cells) < len(header)
                     else f"{len(cells) - len(header)} cell(s) after the last column {header[-1]!r}")
            raise ValidationError(f"{name}, row {row}: {len(cells)} cells where the header has {len(header)}: {where}",
                                  reason="missing_column")
        identifier = cells[0].strip()
        if not identifier:
            raise ValidationError(f"{name}, row {row}, column '{ID_COLUMN}': empty id", reason="missing_value")
        if identifier in first_row_of:
            raise ValidationError(f"{name}, row {row}, column '{ID_COLUMN}': id {identifier!r} is also in row "
                                  f"{first_row_of[identifier]}", reason="duplicate_id")
        first_row_of[identifier] = row
    return list(first_row_of), header, rows


def _label(path: Path, row: int, cell: str) -> int:
    value = cell.strip()
    if value in ("0", "1", "0.0", "1.0"):
        return int(float(value))
    raise ValidationError(f"{path.name}, row {row}, column '{LABEL_COLUMN}': label {value!r} is not 0 or 1",
                          reason="bad_label")


def _numbers(path: Path, header: list[str], cells: list[tuple[int, list[str]]], columns: list[int]) -> np.ndarray:
    """The feature cells as floats, NaN where missing; a cell that is no finite number names its place."""
    try:  # numpy parses a clean export in one go; gaps and bad cells take the cell-by-cell path below
        block = np.array([[row_cells[index] for index in columns] for _, row_cells in cells], dtype=np.float64)
        if not np.isinf(block).any():
            return block
    except ValueError:
        pass
    values = np.empty((len(cells), len(columns)))
    for at, (row, row_cells) in enumerate(cells):
        for column, index in enumerate(columns):
            cell = row_cells[index].strip()
            if cell.lower() in MISSING_CELLS:
                values[at, column] = np.nan
                continue
            try:
                value = float(cell)
            except ValueError:
                value = None
            if value is None or not math.isfinite(value):
                raise ValidationError(f"{path.name}, row {row}, column {header[index]!r}: {cell!r} is not a "
                                      f"{'number' if value is None else 'finite number'}", reason="not_a_number")
            values[at, column] = value
    return values


def load_vertical(name: str) -> tuple[GuestTable, HostTable]:
    """Both halves of a FATE hetero data set, each in its own file's row order."""
    if name not in DATASETS:
        raise ConfigError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    folder = data_dir()
    paths = [folder / f"{name}_hetero_{half}.csv" for half in ("guest", "host")]
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"{path} not found; set {DATA_DIR_VARIABLE} to the folder of FATE's hetero csv files")
    return read_guest(paths[0]), read_host(paths[1])


def write_vertical(bank: GuestTable, partner: HostTable, guest_path: Path, host_path: Path) -> None:
    """Both halves in FATE's layout (features x0, x1, ...; an empty cell where a value is missing)."""
    def cell(value: float) -> str:
        return "" if math.isnan(value) else repr(float(value))
    for path, ids, first, features in ((guest_path, bank.join_ids, [str(y) for y in bank.labels.tolist()], bank.features),
                                       (host_path, partner.join_ids, None, partner.features)):
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([ID_COLUMN, *([LABEL_COLUMN] if first is not None else []),
                             *(f"x{j}" for j in range(features.shape[1]))])
            for row, identifier in enumerate(ids):
                writer.writerow([identifier, *([first[row]] if first is not None else []),
                                 *(cell(v) for v in features[row].tolist())])


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
