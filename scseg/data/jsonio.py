"""Reading the small JSON files a dataset carries (split files, nnU-Net's dataset.json), with errors naming them.

Why this module exists: layouts and label maps both read such files, and a missing or malformed one must stop
with a `DataError` naming the file and what it should hold, never a bare traceback. It has nothing to do with
the image reader (`io`), so it lives apart from it.
"""

from __future__ import annotations

import json
from pathlib import Path

from scseg.data.errors import DataError


def read_json(path: Path, what: str, expected: str) -> object:
    """A JSON file's value; missing or unreadable files are a DataError naming the file and what it should hold."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise DataError(f"{path}: {what} not found; expected {expected}") from err
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read the {what} ({err}); expected {expected}") from err


def read_json_object(path: Path, what: str, expected: str) -> dict:
    """A JSON file holding an object; missing, unreadable or non-object files are a DataError naming the file.

    ``what`` names the file in messages ("split file", "dataset.json"); ``expected`` says what it should hold.
    """
    data = read_json(path, what, expected)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected {expected}, got a JSON {type(data).__name__}")
    return data


__all__ = ["read_json", "read_json_object"]
