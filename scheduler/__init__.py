"""Time-driven jobs: the deadline sweep and the daily digest, each run claimed
once per period in the database so restarts and second processes never repeat one."""
