"""Signed, versioned policies per site and per device, published retained over MQTT."""
