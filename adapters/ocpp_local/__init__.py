"""The local OCPP 1.6J server native chargers connect to (we are their CSMS)."""
