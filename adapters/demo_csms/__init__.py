"""A small CSMS on the ``ocpp`` library: the peer for `ocpp-gateway demo` and for the tests."""
