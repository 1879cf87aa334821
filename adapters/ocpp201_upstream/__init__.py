"""The whole site as ONE OCPP 2.0.1 Charging Station towards the CSMS (see docs/ocpp-2.0.1.md)."""
