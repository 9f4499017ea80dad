"""What residents are owed and guarded against: /forget and photo retention (privacy), bans.
May import: models.tickets and everything below it."""
