"""Local stand-ins for the outside world, so Whistle runs without Telegram: a fake Bot API server (botapi, used by the tests too) and the sandbox page (server) that runs the real bot against it.
May import: bot (the sandbox runs the whole service) and everything below it."""
