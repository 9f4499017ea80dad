"""The monthly report's outputs: a chat summary (``summary``), PNG charts (``charts``),
an Excel workbook (``workbook``), and ``bundle`` putting them together."""
