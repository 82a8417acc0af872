"""bridge-agent: keeps a central SEO hub in sync with a store's catalog, in both directions."""

__version__ = "0.1.0"
