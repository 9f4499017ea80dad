"""The report's outputs: a chat summary (summary), PNG charts (charts), an Excel workbook (workbook), and bundle putting them together.
May import: the core (models.figures and below), matplotlib, openpyxl; nothing of bot, handlers or dashboard."""
