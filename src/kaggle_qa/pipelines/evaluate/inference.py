"""Batched inference for evaluation: one prompt forward per item serves everything.

One :class:`Evaluator` runs one model over the whole test set. Per batch of prompts
(sorted by length, left-padded) it runs the transformer body over the prompts ONCE and
keeps the KV cache; from that single prefill it takes

- the **log-likelihood choice** between candidate answers ("True"/"False", "Yes"/"No",
  "Entailment"/"Contradiction"/"Neutral") from the next-token distribution after the
  prompt, as lm-evaluation-harness scores BoolQ;
- the **teacher-forced loss on the reference answer**: only the answer tokens are fed,
  on a copy of the prompt's cache (the prompt is not recomputed); optionally the paper's
  whole-sequence loss from the prompt's own hidden states;
- the **greedy answer**: KV-cached decoding that continues from the same cache and stops at
  EOS or ``max_new_tokens`` (answers cut there are flagged); a finished row leaves the batch.

Prompt and reference come from :func:`kaggle_qa.prompting.tokenize_example`, exactly as in
training (same template, same truncation). The seed notebook's way (one ``generate`` per
question, then a separate teacher-forced pass over prompt + reference) is what
``benchmarks/bench_eval.py`` compares this against.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Iterator

import torch
from tqdm.auto import tqdm

from kaggle_qa.modeling import head_logits
from kaggle_qa.prompting import candidate_token_ids, tokenize_example  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)


def _batches(order: list[int], batch_size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


class Evaluator:
    """Runs one causal LM over tokenized test items (see module docstring)."""

    def __init__(
        self, model, tokenizer, *, batch_size: int, max_new_tokens: int, max_length: int, head_chunk: int = 128
    ):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_new_tokens, self.max_length = batch_size, max_new_tokens, max_length
        self.head_chunk = head_chunk
        self.device = next(model.parameters()).device

    def examples(self, rows: list[dict]):
        """Prompt + reference tokenization of every row, truncated exactly as in training."""
        return [
            tokenize_example(self.tokenizer, row["input"], row["instruction"], row["output"], self.max_length)
            for row in rows
        ]

    def _pad(self, sequences: list[list[int]], side: str = "left") -> dict[str, torch.Tensor]:
        padding_side, self.tokenizer.padding_side = self.tokenizer.padding_side, side
        try:
            batch = self.tokenizer.pad({"input_ids": sequences}, padding=True, return_tensors="pt")
        finally:
            self.tokenizer.padding_side = padding_side
        return {key: value.to(self.device) for key, value in batch.items()}

    def _log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token log-probabilities from final hidden states (LM head + optional softcap)."""
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.log_softmax(head_logits(self.model.get_output_embeddings(), softcap, hidden), dim=-1)

    @torch.inference_mode()
    def run(
        self, examples, candidates: dict[int, dict[str, int]], whole_sequence: bool, label: str
    ) -> tuple[list[dict], float]:
        """Answer, losses and choice of every example (input order); returns them and seconds taken.

        `candidates` maps an example index to {answer word: first token id} for the items
        scored by log-likelihood choice.
        """
        order = sorted(range(len(examples)), key=lambda i: examples[i].prompt_length)
        results: list[dict] = [{}] * len(examples)
        started = time.perf_counter()
        with tqdm(total=len(examples), desc=f"answer + loss + choice ({label})", unit="item") as bar:
            for indices in _batches(order, self.batch_size):
                for i, result in zip(indices, self._run_batch([examples[i] for i in indices],
                                                              [candidates.get(i) for i in indices], whole_sequence)):
                    results[i] = result
                bar.update(len(indices))
        return results, time.perf_counter() - started

    def _run_batch(self, batch_examples, batch_candidates, whole_sequence: bool) -> list[dict]:
        prompts = [example.input_ids[: example.prompt_length] for example in batch_examples]
        batch = self._pad(prompts)
        mask = batch["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate does with left padding
        prefill = self.model.get_decoder()(
            input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions, use_cache=True
        )
        hidden, cache = prefill.last_hidden_state, prefill.cache
        first_lp = self._log_probs(hidden[:, -1])  # distribution of the first answer token
        reference_lp = self._reference_log_probs(batch_examples, cache, mask, positions)
        width = hidden.shape[1]
        items = []
        for row, (example, choice_ids) in enumerate(zip(batch_examples, batch_candidates)):
            answer = example.input_ids[example.prompt_length :]  # reference answer + EOS
            nll = -first_lp[row, answer[0]].item() - reference_lp[row]
            item = {"answer_nll": nll, "answer_tokens": len(answer), "reference_first_token": answer[0]}
            if whole_sequence:
                item["sequence_nll"] = nll + self._prompt_nll(hidden[row, width - example.prompt_length :],
                                                              prompts[row])
                item["sequence_tokens"] = len(example.input_ids) - 1
            if choice_ids:
                scores = {word: first_lp[row, token].item() for word, token in choice_ids.items()}
                item["choice"] = max(scores, key=scores.get)
                item["choice_logprobs"] = scores
            items.append(item)
        for item, tokens in zip(items, self._greedy(first_lp.argmax(-1), cache, mask, positions[:, -1:] + 1)):
            eos = self.tokenizer.eos_token_id
            stopped = eos in tokens
            tokens = tokens[: tokens.index(eos)] if stopped else tokens
            item.update(
                answer=self.tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                new_tokens=len(tokens),
                hit_max_new_tokens=not stopped,
            )
        return items

    def _reference_log_probs(self, batch_examples, cache, mask, positions) -> list[float]:
        """Sum of log p(answer token k | prompt, answer < k) for k >= 2, per row, on a copy of the cache.

        The answer tokens (right-padded) are fed after the cached prompt; the first answer
        token's probability comes from the prefill itself.
        """
        feeds = [example.input_ids[example.prompt_length : -1] for example in batch_examples]
        if not any(feeds):
            return [0.0] * len(feeds)
        padded = self._pad([feed or [self.tokenizer.pad_token_id] for feed in feeds], side="right")
        feed_mask = padded["attention_mask"] * torch.tensor([[bool(feed)] for feed in feeds], device=self.device)
        steps = torch.arange(feed_mask.shape[1], device=self.device)[None, :]
        hidden = self.model.get_decoder()(
            input_ids=padded["input_ids"],
            attention_mask=torch.cat([mask, feed_mask], dim=-1),
            position_ids=positions[:, -1:] + 1 + steps,
            cache=copy.deepcopy(cache),  # the greedy answer continues from the untouched prompt cache
            use_cache=True,
        ).last_hidden_state
        sums = []
        for row, (example, feed) in enumerate(zip(batch_examples, feeds)):
            targets = torch.tensor(example.input_ids[example.prompt_length + 1 :], device=self.device)
            lp = self._log_probs(hidden[row, : len(feed)])
            sums.append(lp.gather(-1, targets[:, None]).sum().item() if feed else 0.0)
        return sums

    def _prompt_nll(self, states: torch.Tensor, prompt: list[int]) -> float:
        """Negative log-likelihood of prompt tokens 2..P from the prompt's own hidden states (chunked head)."""
        tokens = torch.tensor(prompt, device=self.device)
        total = 0.0
        for start in range(0, len(prompt) - 1, self.head_chunk):
            stop = min(start + self.head_chunk, len(prompt) - 1)
            total -= self._log_probs(states[start:stop]).gather(-1, tokens[start + 1 : stop + 1, None]).sum().item()
        return total

    def _greedy(self, tokens: torch.Tensor, cache, mask: torch.Tensor, next_position: torch.Tensor) -> list[list[int]]:
        """Greedy decoding from the prefill's first token; a row leaves the batch (and the cache) at its EOS.

        Same tokens as `model.generate(do_sample=False)`, which would keep computing every
        finished row until the longest answer of the batch ends.
        """
        eos = self.tokenizer.eos_token_id
        rows = list(range(len(mask)))  # batch row of each still-active sequence
        generated: list[list[int]] = [[] for _ in rows]
        for step in range(self.max_new_tokens):
            for row, token in zip(rows, tokens.tolist()):
                generated[row].append(token)
            active = [k for k, token in enumerate(tokens.tolist()) if token != eos]
            if not active or step == self.max_new_tokens - 1:
                break
            if len(active) < len(rows):
                keep = torch.tensor(active, device=self.device)
                cache.batch_select_indices(keep)
                tokens, mask, next_position = tokens[keep], mask[keep], next_position[keep]
                rows = [rows[k] for k in active]
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=-1)
            output = self.model(
                input_ids=tokens[:, None], attention_mask=mask, position_ids=next_position, cache=cache, use_cache=True
            )
            cache, next_position = output.cache, next_position + 1
            tokens = output.logits[:, -1].argmax(-1)
        return generated


def mean_loss(nll_sums: list[float], token_counts: list[int]) -> float:
    """Token-weighted mean negative log-likelihood (NaN when there are no tokens)."""
    total = sum(token_counts)
    return sum(nll_sums) / total if total else math.nan
