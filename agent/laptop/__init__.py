"""hedgerow-agent: the laptop agent (on-site proof, off-site filtering, activity summaries)."""
