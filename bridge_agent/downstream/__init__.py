"""The write direction: the hub's optimisations applied to the store, and the JSON-LD built for it.

Modules here are added by role (feed, apply, journal...). `jsonld` is pure like `sync/`: no I/O.
"""
