"""Figures: the three rates, stats and scores of a period, the daily digest, and the /stats and /report commands.
May import: models.tickets and everything below it; renders no file itself (the reports package does, handed in as Core.reports)."""
