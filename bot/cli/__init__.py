"""Commands of python -m bot beyond running the service: staff logins for the dashboard (users) and report files (report).
May import: bot.app and everything it wires; nothing imports them but bot/__main__.py."""
