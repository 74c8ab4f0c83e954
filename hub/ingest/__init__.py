"""Ingest: broker messages through the opening pipeline into the store and the rules.

paho thread -> Inbox (inbox.py) -> IngestWorker (worker.py): screen and open (pipeline.py,
with worker processes: ahead.py, pool.py, opening.py), store, rules, commit (commit.py) -> ack.

Nothing is imported here: every opening worker process imports hub.ingest.opening, and a
package that pulled in the whole ingest side would make each of them start slower.
"""
