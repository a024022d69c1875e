"""HTTP services over the engine: the generation endpoint (`gen404 serve`) and the local
validation service. Shared request rules (bind, API key, body size) live in security.py.
"""
