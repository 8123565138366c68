"""The one exception type that bad input data raises.

Every reader, layout and label map raises `DataError` with a message that names the offending file or
setting and says what was expected, so a researcher can fix the data without reading a traceback.
It subclasses ValueError so generic callers that catch ValueError keep working.
"""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data; message names the file/setting and what was expected."""
