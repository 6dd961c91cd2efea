"""Settings shared by the whole test session.

Ray: every Ray cluster this test process starts (the integrations' and the executor's private local ones) or joins
(tests/test_ray_executor.py's two-node cluster) uses one token, set here before any test imports Ray. Ray caches the
first token a process reads, so per-module tokens made whichever module ran second fail to authenticate. The token
also protects the tests' clusters: Ray's ports open on every interface even when its node address is 127.0.0.1.
"""
import os
import secrets

os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
