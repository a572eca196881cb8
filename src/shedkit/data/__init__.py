"""Data layer: read any supported container/format, normalise to records, write subsets back.

Never imports torch.
"""

from shedkit.data.containers import read_table, write_subset
from shedkit.data.pool import Pool, load_pool
from shedkit.data.records import Record, Turn

__all__ = ["Pool", "Record", "Turn", "load_pool", "read_table", "write_subset"]
