"""Does the retrieved context explain a question? The answering model's own judgement: the context lift.

A question about a neighbouring tool ("How do I make an argparse argument mutually exclusive?")
shares the docs' vocabulary: its best dense cosine is as high as an in-domain question's, and the
docs may even name the tool (Click's "Why Click?" page names argparse). Neither retrieval signal of
:func:`kaggle_qa.retrieval.refusal_reason` can tell it apart. What can: whether the retrieved
context makes the question any more predictable. A passage that answers a question explains its
words; a passage that only shares the topic does not.

The **context lift** is that gain, measured by the model that answers (query likelihood, the classic
language-model retrieval score; Sachan et al., 2022 rerank passages by it)::

    lift = mean log p(question | the answering prompt's context) - mean log p(question | no context)

over the question's tokens, with the one prompt template (:mod:`kaggle_qa.prompting`: the text
before ``{question}``), the context fitted exactly as the assistant fits it, and evaluate's numerics
(:mod:`kaggle_qa.numerics`). Per token, so long and short questions compare. One extra prompt pass
per question (its answer's prefill costs the same), plus one over the question alone.

The threshold is calibrated per site beside the relevance threshold
(:mod:`kaggle_qa.pipelines.evaluate.retrieval_eval`), recorded in ``retrieval_metrics`` and read
back by the assistant (:func:`lift_threshold`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np
import torch

from kaggle_qa.numerics import computing
from kaggle_qa.prompting import PROMPT_WITH_CONTEXT, PROMPT_WITHOUT_CONTEXT, fit_context

logger = logging.getLogger(__name__)


def _prefix_ids(tokenizer, template: str, context: str) -> list[int]:
    """BOS + the template's text before the question (as :func:`kaggle_qa.prompting.encode_prompt` starts)."""
    head = template.split("{question}")[0].format(context=context.strip())
    ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    return [tokenizer.bos_token_id, *ids] if tokenizer.bos_token_id is not None else list(ids)


def _mean_logprob(model, prefix: list[int], target: list[int], device) -> float:
    """Mean log-probability of `target` after `prefix`; the LM head runs on the target's positions only."""
    ids = torch.tensor([prefix + target], device=device)
    logits = model(input_ids=ids, logits_to_keep=len(target) + 1).logits[0, :-1].float()
    picked = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(target, device=device)[:, None])
    return float(picked.mean())


def context_lift(model, tokenizer, context: str, question: str, compute_dtype: str = "float32") -> float:
    """Mean log-probability gain of the question's tokens given `context` over no context (module docstring)."""
    question = question.strip()
    target = tokenizer(question, add_special_tokens=False)["input_ids"]
    if not target:
        raise ValueError("the question is empty")
    device = next(model.parameters()).device
    with torch.inference_mode(), computing(model, compute_dtype):
        with_context = _mean_logprob(model, _prefix_ids(tokenizer, PROMPT_WITH_CONTEXT, context), target, device)
        alone = _mean_logprob(model, _prefix_ids(tokenizer, PROMPT_WITHOUT_CONTEXT, ""), target, device)
    return with_context - alone


def lifts(model, tokenizer, items: Iterable[tuple[str, list[str]]], budget: int, compute_dtype: str = "float32",
          progress: Callable[[int], None] | None = None) -> list[float]:
    """Lift of each (question, ranked chunk texts), the chunks fitted to `budget` prompt tokens as the
    assistant fits them (:func:`kaggle_qa.prompting.fit_context`)."""
    values = []
    for done, (question, texts) in enumerate(items, start=1):
        context = fit_context(tokenizer, texts, question, budget)
        values.append(context_lift(model, tokenizer, context, question, compute_dtype))
        if progress:
            progress(done)
    return values


def lift_threshold(retrieval: dict, retrieval_metrics: dict | None) -> float | None:
    """The lift threshold in use: ``retrieval.lift_threshold`` when set (an explicit override),
    else the one the evaluation chose on this site (``relevance.chosen.lift_threshold`` of
    ``retrieval_metrics``); None (no lift check) when neither says one."""
    if retrieval.get("lift_threshold") is not None:
        return float(retrieval["lift_threshold"])
    chosen = ((retrieval_metrics or {}).get("relevance") or {}).get("chosen") or {}
    value = chosen.get("lift_threshold")
    return None if value is None or not np.isfinite(value) else float(value)
