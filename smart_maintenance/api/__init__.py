"""The HTTP API and the web UI: FastAPI, served by uvicorn (`smart-maintenance serve`).

`create_app(config, store, known_assets)` builds the app; routers per resource live in `routers/`;
`auth.py` holds the key check, scopes, sites and the rate limit. See docs/api.md.
"""
