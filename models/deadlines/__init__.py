"""Deadlines: the working calendar and quiet hours, report periods, the timers each action starts and finishes, and the units' overdue boards.
May import: models.org, models.messages, models.store, the root modules; never tickets (the sweep that acts on deadlines is tickets.sweep)."""
