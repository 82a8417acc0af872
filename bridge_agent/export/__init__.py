"""Export: the store's catalog as held in the mirror, in the formats people open (issue 17).

One module per role: `request` (what is asked, what was done), `fields` (the columns and their
groups), `reader` (the products streamed out of the state database, filters, incremental
marks), one writer per format (`csvfile`, `jsonfile` for json and jsonl, `merchant` for the
Google Merchant Center XML feed with `taxonomy`, `workbook` for xlsx, `shopify_csv`,
`woocommerce_csv`), `run` (`export_catalog`, which ties them) and `output` (atomic files);
`destinations` (folder, SFTP, S3), `schedule` (`[[exports]]` runs, jobs and root tasks) and
`backup` (the backup before a bulk apply).

The scheduler calls, in a worker thread:

    report = export_catalog(state_dir, ExportRequest(store="main", format="xml"), stream)

then, once the file or upload is safe, `await save_mark(state, report.name, report.mark)` for
an incremental export's next run. docs/export.md is the operator's guide.
"""

from __future__ import annotations

from bridge_agent.export.output import atomic_file
from bridge_agent.export.reader import Mark, mark_key, save_mark
from bridge_agent.export.request import (
    FORMATS,
    LAST,
    SUFFIXES,
    ExportReport,
    ExportRequest,
    Invalid,
    parse_filters,
    parse_since,
)
from bridge_agent.export.run import check, export_catalog

__all__ = [
    "FORMATS",
    "LAST",
    "SUFFIXES",
    "ExportReport",
    "ExportRequest",
    "Invalid",
    "Mark",
    "atomic_file",
    "check",
    "export_catalog",
    "mark_key",
    "parse_filters",
    "parse_since",
    "save_mark",
]
