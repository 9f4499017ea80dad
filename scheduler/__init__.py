"""Time-driven jobs: the deadline sweep, the daily digest and the monthly report, each run claimed once per period in the database, so restarts and second processes never repeat one.
May import: APScheduler, reports and the core; nothing of bot."""
