"""Batched inference for evaluation: greedy answers, answer-token loss, log-likelihood choice.

One :class:`Evaluator` runs one model over the whole test set:

- ``generate``: prompts sorted by length, left-padded, batched, KV-cached greedy decoding
  that stops at EOS or ``max_new_tokens`` (answers that hit the limit are flagged);
- ``score``: one teacher-forced forward pass per item over prompt + reference answer
  (built by :func:`kaggle_qa.prompting.tokenize_example`, exactly as in training) giving
  the loss on answer tokens, optionally the paper's whole-sequence loss, and the
  log-likelihood choice between candidate answers ("True"/"False", "Yes"/"No") from the
  next-token distribution after the prompt, as lm-evaluation-harness scores BoolQ.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator

import torch
from tqdm.auto import tqdm

from kaggle_qa.modeling import head_logits
from kaggle_qa.prompting import tokenize_example

logger = logging.getLogger(__name__)


def candidate_token_ids(tokenizer, choices: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """First token id of each candidate answer per task type; candidates must differ in it."""
    table = {}
    for task_type, words in choices.items():
        ids = {word: tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in words}
        if len(set(ids.values())) != len(ids):
            raise ValueError(f"choice candidates {words} for {task_type} share their first token")
        table[task_type] = ids
    return table


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

    def _pad(self, sequences: list[list[int]]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer.pad({"input_ids": sequences}, padding=True, return_tensors="pt")
        return {key: value.to(self.device) for key, value in batch.items()}

    @torch.inference_mode()
    def _greedy(self, batch: dict[str, torch.Tensor]) -> list[list[int]]:
        """Greedy decoding with a KV cache; a row leaves the batch (and the cache) at its EOS.

        Same tokens as `model.generate(do_sample=False)`, which would keep computing every
        finished row until the longest answer of the batch ends.
        """
        eos = self.tokenizer.eos_token_id
        mask = batch["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        output = self.model(
            input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
        )
        cache, next_position = output.cache, positions[:, -1:] + 1
        tokens = output.logits[:, -1].argmax(-1)
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

    def generate(self, examples, label: str) -> tuple[list[dict], float]:
        """Greedy answers for every example (input order); returns them and seconds taken."""
        prompts = [example.input_ids[: example.prompt_length] for example in examples]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        answers: list[dict] = [{}] * len(prompts)
        eos = self.tokenizer.eos_token_id
        started = time.perf_counter()
        with tqdm(total=len(prompts), desc=f"generate ({label})", unit="answer") as bar:
            for indices in _batches(order, self.batch_size):
                new_tokens = self._greedy(self._pad([prompts[i] for i in indices]))
                for i, tokens in zip(indices, new_tokens):
                    stopped = eos in tokens
                    tokens = tokens[: tokens.index(eos)] if stopped else tokens
                    answers[i] = {
                        "answer": self.tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                        "new_tokens": len(tokens),
                        "hit_max_new_tokens": not stopped,
                    }
                bar.update(len(indices))
        return answers, time.perf_counter() - started

    def _log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token log-probabilities from final hidden states (LM head + optional softcap)."""
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.log_softmax(head_logits(self.model.get_output_embeddings(), softcap, hidden), dim=-1)

    @torch.inference_mode()
    def score(self, examples, candidates: dict[int, dict[str, int]], whole_sequence: bool, label: str) -> list[dict]:
        """Teacher-forced losses and log-likelihood choices (input order), one forward per item.

        `candidates` maps an example index to {answer word: first token id} for items scored
        by log-likelihood choice. The transformer body runs once per batch; the LM head (most
        of the compute with a 262k vocabulary) runs only where a loss or a choice needs it.
        """
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
        scores: list[dict] = [{}] * len(examples)
        decoder = self.model.get_decoder()
        with tqdm(total=len(examples), desc=f"loss + choice ({label})", unit="item") as bar:
            for indices in _batches(order, self.batch_size):
                batch = self._pad([examples[i].input_ids for i in indices])
                positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # as generate does
                hidden = decoder(**batch, position_ids=positions).last_hidden_state
                width = hidden.shape[1]
                for row, i in enumerate(indices):
                    example = examples[i]
                    length, start = len(example.input_ids), example.prompt_length
                    states = hidden[row, width - length :]  # left padding: real tokens at the end
                    tokens = torch.tensor(example.input_ids, device=self.device)
                    # position t predicts token t + 1: the answer is predicted from start - 1 on
                    answer_lp = self._log_probs(states[start - 1 : length - 1])
                    answer_nll = -answer_lp.gather(-1, tokens[start:, None]).sum()
                    item = {"answer_nll": answer_nll.item(), "answer_tokens": length - start}
                    if whole_sequence:
                        sequence_nll = answer_nll.item()
                        for chunk in range(0, start - 1, self.head_chunk):
                            stop = min(chunk + self.head_chunk, start - 1)
                            prompt_lp = self._log_probs(states[chunk:stop])
                            sequence_nll -= prompt_lp.gather(-1, tokens[chunk + 1 : stop + 1, None]).sum().item()
                        item["sequence_nll"] = sequence_nll
                        item["sequence_tokens"] = length - 1
                    if i in candidates:
                        choice_scores = {word: answer_lp[0, tid].item() for word, tid in candidates[i].items()}
                        item["choice"] = max(choice_scores, key=choice_scores.get)
                        item["choice_logprobs"] = choice_scores
                    scores[i] = item
                bar.update(len(indices))
        return scores


def mean_loss(nll_sums: list[float], token_counts: list[int]) -> float:
    """Token-weighted mean negative log-likelihood (NaN when there are no tokens)."""
    total = sum(token_counts)
    return sum(nll_sums) / total if total else math.nan
