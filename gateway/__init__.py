"""ocpp-gateway: one OCPP 1.6J charge point for a whole site of Modbus and OCPP chargers."""

__version__ = "0.1.0"
