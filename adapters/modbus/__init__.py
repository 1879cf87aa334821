"""Profile-driven Modbus: chargers and meters described by TOML profiles in ``adapters/profiles``.

- ``profile``: ``load_profile(name)``, ``profile_names()``, ``Profile`` (validated, ``ConfigError`` on problems)
- ``device``: ``ModbusDevice``, the poller that feeds the Site (``run()`` forever, ``poll_once()``)
- ``simulator``: ``ModbusSimulator``, a Modbus TCP server built from the same profile
- ``codec`` / ``layout``: register words <-> values, and a profile placed on unit ids and sockets

Only ``gateway/app.py``, ``gateway/cli.py`` and ``gateway/demo.py`` import this package.
"""
