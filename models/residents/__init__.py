"""What residents are owed and guarded against: /forget and photo retention (privacy), bans.
May import: models.tickets.actions and everything below it (org, messages, store)."""
