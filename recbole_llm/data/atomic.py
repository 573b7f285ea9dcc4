"""RecBole atomic files as our converters write them, and the error for a dataset that cannot
be built: what the preparation modules (:mod:`~recbole_llm.data.prepare`,
:mod:`~recbole_llm.data.sessions`, :mod:`~recbole_llm.data.amazon`) share.
"""

import csv

from recbole_llm.errors import UserError
from recbole_llm.utils import atomic_write


class DatasetError(UserError, FileNotFoundError):
    """A dataset that is missing, unknown, or cannot be built here; the message says what to do.

    Also a FileNotFoundError: what is wrong is that the dataset's files are not there.
    """


def write_atomic_file(path, header, rows):
    """Write a RecBole atomic file (tab-separated, ``name:type`` header) atomically."""

    def write(f):
        writer = csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE)
        writer.writerow(header)
        writer.writerows(rows)

    atomic_write(path, write)
