"""Tickets: actions (create, route, claim, progress, return, escalate, close), resolution, the staff desk, whistles, votes, followers, external reports, cards, and the sweep that acts when deadlines pass.
May import: models.deadlines, models.media, models.org, models.messages, models.store, the root modules; never intake, residents or figures."""
