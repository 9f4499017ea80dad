"""Whistle's core: the rules of tickets, deadlines, routing and the intake dialogue, free of any channel or web type.
May import: its own packages (store → messages → org → deadlines → tickets → intake, residents, figures), SQLAlchemy, Pillow, Babel; never telegram, aiohttp, bot, handlers, dashboard, reports."""
