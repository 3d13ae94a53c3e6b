"""The watchdog: says when the platform stops working, and when it recovers (docs/watchdog.md).

``checks.py`` what is looked at and the thresholds, ``engine.py`` the edge-triggered state and messages (through
the alert delivery outbox), ``service.py`` `tp watchdog run` and its spool; ``sensors/watchdog.py`` the daemon's
``watchdog_sensor`` and the asset checks that show the states in the Dagster UI.
"""
