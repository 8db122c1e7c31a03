"""What the service defends against, one file per area (read the test docstrings as a list).

- test_browser*.py / test_api_access*.py — script injection, the login gate, sessions, CSRF,
  DNS rebinding, rate limits, docs behind the key, slow clients.
- test_stem_identity.py — different spoken texts never share a stem.
- test_integrity.py — deleted state, corrupt stems, full or read-only disks, symlinks.
- test_inputs.py — hostile dataset uploads, stream backpressure, persisted jobs.
- test_promises.py — the proofs (verify, key checks) pinned against deliberate bugs.
"""
