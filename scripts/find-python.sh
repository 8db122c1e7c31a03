#!/usr/bin/env bash
# Print the path of a Python >= 3.12 interpreter, or explain how to get one.
# Order: $PYTHON if set, python3.12/python3.13/python3 on PATH, then pyenv's
# installed versions (pyenv shims refuse to run a version that is not active,
# so each candidate is actually executed, not just looked up).
set -u
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
candidates=()
[ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
candidates+=(python3.12 python3.13 python3)
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root)
  for v in $(ls -1 "$root/versions" 2>/dev/null | grep -E '^3\.(1[2-9]|[2-9][0-9])\.[0-9]+$' | sort -V); do
    candidates+=("$root/versions/$v/bin/python3")
  done
fi
for c in "${candidates[@]}"; do
  path=$(command -v "$c" 2>/dev/null) || continue
  if ok "$path"; then
    # Resolve pyenv shims to the real binary so the venv does not depend on them.
    "$path" -c 'import sys; print(sys.executable)'
    exit 0
  fi
done
echo "error: Hybrid Audio needs Python >= 3.12 (Panel 1.10 requires it) and none was found." >&2
echo "Tried: ${candidates[*]}" >&2
echo "Install one (e.g. 'pyenv install 3.12' or 'apt-get install python3.12') or set PYTHON=/path/to/python3.12." >&2
exit 1
