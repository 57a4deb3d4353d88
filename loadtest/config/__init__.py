"""Configuration, read once at the edge: scenarios (what load), deployment profiles (what is deployed),
and the TOML checks both share.
"""
