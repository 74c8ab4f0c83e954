"""Pointing the laptop's operating system at the local filter: one adapter per system resolver
(resolv.conf, systemd-resolved), `choose()` to pick the one this machine runs, and the tamper
watch that checks, through the OS resolver, that our filter is still the one answering."""
