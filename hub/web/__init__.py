"""The safeguarding dashboard (issue 13): pages and a JSON API served by `hedgerow-hub serve`.

`app.create_app` builds the FastAPI application; `server.WebServer` runs it with uvicorn in a
thread of its own beside ingest. docs/dashboard.md describes roles, keys and headers.
"""
