"""What the service defends against, one file per area (read the test docstrings as a list).

- test_browser*.py / test_api_access*.py — script injection, the login gate, sessions and
  their expiry, CSRF, DNS rebinding, rate limits, docs behind the key, slow clients.
- test_stem_identity.py — different spoken texts never share a stem.
- test_integrity.py — deleted state, corrupt stems, full or read-only disks, symlinks.
- test_inputs.py — hostile dataset uploads, stream backpressure, persisted jobs.
- test_contract_changes.py — a contract change is whole or nothing, and confirmed.
- test_promises.py — the proofs (verify, key checks) pinned against deliberate bugs.

Defences tested next to the code they guard, outside this folder:
- tests/test_jobs.py — jobs keep no inputs, finished jobs are pruned, a dead process's job
  reads `interrupted`.
- tests/test_dashboard_campaign_browser.py, test_dashboard_campaign_views.py,
  test_dashboard_pronunciation_browser.py, test_dashboard_sound_views.py,
  test_dashboard_storage_browser.py — hostile texts shown as text on those pages.
- tests/test_dashboard_gate.py — the gate in process: login, logout, docs, components.
- tests/test_stems.py — deterministic stem ids, exact disambiguators, case pairs.
- tests/test_database.py — migrations, and a deleted or replaced state file refused.
- tests/test_cache.py, test_assembly.py, test_generation.py — hostile ids, template names
  and texts refused before anything is written.
- tests/test_api.py — near-miss keys refused, no public bind without a key.
"""
