"""The `transformers` teacher: a local causal LM answering the same prompts as the `openai`
teacher, with the same reply cache and the same lenient parsing (no network, no key).

A model that is not instruction-tuned (like the embedded Gemma 3 270M base) mostly writes
malformed replies: they are quarantined and counted like any other teacher's, never a crash.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from kaggle_qa.modeling import load_model, load_tokenizer, model_identity, resolve_model_path

from .base import SYSTEM_PROMPT, ReplyCache, TeacherStats, request_key, system_messages


def json_object_text(text: str) -> str:
    """The outermost {...} of a reply that wraps its JSON in prose or a code fence."""
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if 0 <= start < end else text


class TransformersTeacher:
    """Greedy generation with a local model, one prompt at a time, cached per prompt."""

    def __init__(self, params: dict):
        self.params = params
        self.model_path = resolve_model_path(params["model_source"], params["model_path"])
        self.identity = model_identity(self.model_path)
        self.cache = ReplyCache(params["cache_dir"])
        self.stats = TeacherStats()
        self.sampling = {"max_new_tokens": params["max_new_tokens"], "do_sample": False}
        self._model = self._tokenizer = None

    def complete_all(self, prompts: list[str]) -> list[dict]:
        """Replies ({"content", "usage"}) for every prompt, in order."""
        return [self.complete(prompt) for prompt in tqdm(prompts, desc="local teacher", unit="prompt")]

    def complete(self, prompt: str) -> dict:
        messages = system_messages(prompt)
        model = f"{self.identity['name']}@{self.identity['config_sha256']}"
        key = request_key(model, messages, self.sampling)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.add(cache_hits=1)
            return cached
        if self._model is None:  # loaded only when some prompt is not cached
            self._tokenizer = load_tokenizer(self.model_path)
            self._model = load_model(self.model_path, dtype=self.params["dtype"])
        encoded = self._tokenizer(f"{SYSTEM_PROMPT}\n\n{prompt}\n", return_tensors="pt")
        with torch.inference_mode():
            generated = self._model.generate(**encoded, **self.sampling, pad_token_id=self._tokenizer.pad_token_id)
        new_tokens = generated[0, encoded["input_ids"].shape[1] :]
        content = json_object_text(self._tokenizer.decode(new_tokens, skip_special_tokens=True))
        usage = {"prompt_tokens": int(encoded["input_ids"].shape[1]), "completion_tokens": len(new_tokens)}
        self.stats.add(requests=1, **usage)
        reply = {"content": content, "usage": usage}
        self.cache.put(key, reply)
        return reply
