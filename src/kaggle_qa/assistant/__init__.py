"""The assistant as a product: ``kaggle-qa ask | chat | serve``.

- :mod:`.core`: retrieve chunks, answer from them with citations, or say the docs do not cover it;
- :mod:`.catalog`: read the model, adapter, index and parameters through the Kedro catalog;
- :mod:`.server`: an OpenAI-compatible HTTP server;
- :mod:`.cli`: the command line.
"""

from .core import NOT_COVERED, Answer, Assistant, load_answer_model

__all__ = ["NOT_COVERED", "Answer", "Assistant", "load_answer_model"]
