"""Decoding rules shared by the evaluation's batched greedy decoder and the assistant.

**An answer never ends on a lead-in.** A sentence ending in ":" ("This can be accomplished with
the `multiple` flag:") introduces the list, code or table that answers; stopping there gives the
reader the topic and withholds the answer. The offline teacher never writes such an answer and the
filters quarantine any teacher's (docs/synthesis.md, "Complete answers"); at decoding time the same
rule holds: while the text generated so far ends in ":" (blank tokens after it included), the
end-of-sequence token is not allowed, so the model goes on into what the lead-in introduces. Every
other choice stays the model's; ``max_new_tokens`` still bounds the answer.
"""

from __future__ import annotations

from functools import lru_cache

import torch


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
