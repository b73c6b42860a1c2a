"""Who may call the server: API keys and their scopes, tenants' model patterns and rate limits,
usage counted per key, and which address is safe to listen on without a key.

Owns the key file under the Corral home (`keys.json`: names, scopes, limits and sha256 hashes,
never a key itself), `CORRAL_API_KEYS`, the scope of every route, constant-time key lookup, the
per-key request and token budgets and the usage counters. Pure logic over files and clocks: the
server's middleware (corral.server.guard) and `corral keys` (corral.cli.keys) are its users.
"""
