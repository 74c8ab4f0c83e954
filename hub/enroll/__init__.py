"""Enrolment: technicians' tokens, the MQTT enrolment service, offline bundles and the
broker's per-device credentials (docs/enrolment.md)."""
