"""Decoding rules shared by the evaluation's batched greedy decoder and the assistant.

**An answer never ends on a lead-in.** A sentence ending in ":" ("This can be accomplished with
the `multiple` flag:") introduces the list, code or table that answers; stopping there gives the
reader the topic and withholds the answer. The offline teacher never writes such an answer and the
filters quarantine any teacher's (docs/synthesis.md, "Complete answers"); at decoding time the same
rule holds: while the text generated so far ends in ":" (blank tokens after it included), the
end-of-sequence token is not allowed, so the model goes on into what the lead-in introduces. Every
other choice stays the model's; ``max_new_tokens`` still bounds the answer.

**An answer never loops.** Greedy decoding of a small model falls into loops: the same sentence or
paragraph again and again until ``max_new_tokens`` ("The pip install command is used to install the
package manager.\n\nThe pip install command is …"; every base-model answer of the default run
did). Once the newest tokens repeat the block right before them (:func:`repeat_start`, a block of at
least ``MIN_REPEAT_TOKENS``), that row stops and the second copy is dropped: the answer keeps
everything the loop would have said, once, and decoding spends no more time on it. The evaluation's
decoder and the assistant apply the same rule (the assistant, streaming, has shown the second copy
by the time it is found).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch

# A block shorter than this repeated right after itself is no loop: "- `a`\n- `b`" lists, "Yes. Yes."
MIN_REPEAT_TOKENS = 8


def repeat_start(tokens: Sequence[int], min_block: int = MIN_REPEAT_TOKENS) -> int | None:
    """Where the second copy starts when `tokens` end with a block of at least `min_block` tokens
    repeated right after itself (the shortest such block), else None."""
    tokens = list(tokens)
    n = len(tokens)
    for block in range(min_block, n // 2 + 1):
        if tokens[n - block :] == tokens[n - 2 * block : n - block]:
            return n - block
    return None


def repeat_stopping_criterion(prompt_length: int):
    """The loop rule as a ``transformers`` stopping criterion for ``model.generate`` (the assistant;
    trim the answer with :func:`repeat_start` afterwards)."""
    from transformers import StoppingCriteria

    class _StopOnRepeat(StoppingCriteria):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
            return torch.tensor([repeat_start(row[prompt_length:].tolist()) is not None for row in input_ids],
                                dtype=torch.bool, device=input_ids.device)

    return _StopOnRepeat()


class LeadInGuard:
    """Per-token tables of one tokenizer: which tokens end in ":" and which are blank."""

    def __init__(self, tokenizer):
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        texts = ["" if token is None else token.replace("▁", " ").replace("Ġ", " ").replace("Ċ", "\n") for token in tokens]
        self.blank = torch.tensor([not text.strip() and bool(text) for text in texts])
        self.colon = torch.tensor([text.rstrip().endswith(":") for text in texts])
        eos = tokenizer.eos_token_id
        self.eos = [eos] if isinstance(eos, int) else list(eos or [])

    def after(self, state: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Whether each row's text ends on a lead-in after `tokens` (one per row) were added."""
        tokens = tokens.to("cpu")
        return torch.where(self.blank[tokens], state.to("cpu"), self.colon[tokens])

    def state_of(self, generated: torch.Tensor) -> torch.Tensor:
        """The state of each row of `generated` (new tokens only, rows × length): whether its last
        non-blank token ends in ":" (one gather per call, not a pass per token)."""
        generated = generated.to("cpu")
        if generated.shape[1] == 0:
            return torch.zeros(generated.shape[0], dtype=torch.bool)
        positions = torch.arange(generated.shape[1]).expand_as(generated)
        last = torch.where(self.blank[generated], -1, positions).max(dim=1).values
        last_token = generated.gather(1, last.clamp(min=0)[:, None])[:, 0]
        return (last >= 0) & self.colon[last_token]

    def mask(self, logits: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """`logits` (rows × vocabulary) with end-of-sequence barred for rows that end on a lead-in."""
        if self.eos and bool(state.any()):
            rows = state.to(logits.device).nonzero(as_tuple=True)[0]
            logits = logits.clone()
            for eos in self.eos:
                if eos < logits.shape[-1]:
                    logits[rows, eos] = torch.finfo(logits.dtype).min
        return logits


@lru_cache(maxsize=8)
def lead_in_guard(tokenizer) -> LeadInGuard:
    """The tokenizer's guard, built once per tokenizer object (a vocabulary scan, ~0.2 s for Gemma's 262k)."""
    return LeadInGuard(tokenizer)


def lead_in_logits_processor(tokenizer, prompt_length: int):
    """The rule as a ``transformers`` logits processor for ``model.generate`` (the assistant)."""
    from transformers import LogitsProcessor

    guard = lead_in_guard(tokenizer)

    class _NoEndOnLeadIn(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            return guard.mask(scores, guard.state_of(input_ids[:, prompt_length:]))

    return _NoEndOnLeadIn()
