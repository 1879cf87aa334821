"""The virtual OCPP 1.6J charge point the whole site presents to the CSMS."""
