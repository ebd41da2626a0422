"""sqlite-utils without pandas: the edge never loads pandas.

``sqlite_utils.db`` imports pandas at import time whenever it is installed (only to map
``pd.Timestamp`` columns, which the buffer never writes). On a host where pandas is present
(a training box, a venv with ``[lake]``), ``sensorml sync`` then carried pandas: +60 MB of
peak RSS measured (114 MiB against ~50). Importing sqlite-utils with ``pandas`` masked in
``sys.modules`` makes that optional import fail as it does where pandas is absent; the mask
is removed at once, so a later ``import pandas`` elsewhere works as usual.
"""

from __future__ import annotations

import sys

__all__ = ["sqlite_utils"]

if "sqlite_utils" in sys.modules or "pandas" in sys.modules:
    import sqlite_utils
else:
    sys.modules["pandas"] = None  # type: ignore[assignment]  # import pandas -> ImportError
    try:
        import sqlite_utils
    finally:
        del sys.modules["pandas"]
