"""`python -m hybrid_audio.cli`: the same app as the `hybrid-audio` console script."""

from hybrid_audio.cli.main import app

app(prog_name="hybrid-audio")
