"""Wiring: configuration, the running service (app), the web server and its faces, observability, migrations, the CLI; channel transports in telegram/, wecom/, open311/, outbox delivery in delivery/.
May import: everything below it (handlers, dashboard, scheduler, reports, models); only the sandbox and ``python -m bot`` sit above it."""
