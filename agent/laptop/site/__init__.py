"""Where am I: the laptop agent's site detection.

`beacon` proves the laptop is on the school network (a signed answer for a fresh nonce, fast
enough not to be a relay); `netwatch` says when to check again (rtnetlink events as the
wake-up, a change in the `fingerprint` picture as the change, or polling that picture); `network_id` names the
network for the summaries by a keyed hash, never its raw values; `routes` reads the default
routes both of them need.
"""
