"""What every Hedgerow component shares, the edge agents and the hub alike.

The protocol they speak: the sealed envelope and signed messages (wire/), the device identity
and the hub key document (identity.py), enrolment's token and constants (enrolment.py) and the
beacon statement (beacon.py). And the conventions they follow: one root exception (errors.py),
strict typed TOML reading (tomlconfig.py), and the command-line runner (cli.py).

It imports nothing from agent/ or hub/ (make lint checks this).
"""
