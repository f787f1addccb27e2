"""Data readers: every source (CSV, TSV, Parquet, Criteo, libsvm, libffm, raw Frappe) as chunks of columns.

See ``training.readers.base`` for the interface; ``training.datasets.resolve_dataset`` picks a reader
for a path.
"""

from training.readers.base import Chunk, Reader, ReaderError, read_all
from training.readers.columnar import ParquetReader
from training.readers.criteo import CRITEO_COLUMNS, CriteoReader
from training.readers.delimited import DelimitedReader, TextFile
from training.readers.frappe_raw import FRAPPE_CTR_COLUMNS, FrappeRawReader, build_frappe_ctr
from training.readers.sparse import LibffmReader, LibsvmReader
from training.readers.writer import write_table

__all__ = [
    "CRITEO_COLUMNS",
    "FRAPPE_CTR_COLUMNS",
    "Chunk",
    "CriteoReader",
    "DelimitedReader",
    "FrappeRawReader",
    "LibffmReader",
    "LibsvmReader",
    "ParquetReader",
    "Reader",
    "ReaderError",
    "TextFile",
    "build_frappe_ctr",
    "read_all",
    "write_table",
]
