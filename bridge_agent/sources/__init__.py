"""Change sources: they observe the store and record Changes in the state store.

A source never talks to the hub or the shipper: it records through the state store, then nudges.
"""
