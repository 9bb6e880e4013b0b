"""Teachers that turn doc chunks into QA rows: the deterministic offline one (default), an
OpenAI-compatible endpoint, and a local transformers model; the last two share `base`."""
