"""Command-line faces of scseg: ``scseg-train``, ``scseg-evaluate``, ``scseg-predict``, ``scseg-compare``,
``scseg-gates`` and ``python -m scseg.data inspect``.

Each module parses its arguments, calls the library and turns its errors into one line and an exit code. They
import the library (engine, config, data, models, report) and never each other; nothing in the library imports
them (the import-linter contracts in pyproject.toml check both).
"""
