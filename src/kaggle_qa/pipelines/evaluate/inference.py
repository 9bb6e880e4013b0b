"""Batched inference for evaluation: one forward per item serves everything.

One :class:`Evaluator` runs one model over the whole test set. Per item it runs the
transformer body ONCE, unpadded, over the prompt followed by the reference answer (without
its final token), exactly the teacher-forced pass of the loss; from that single forward it takes

- the **log-likelihood choice** between candidate answers ("True"/"False", "Yes"/"No",
  "Entailment"/"Contradiction"/"Neutral"): the full log-likelihood of each candidate's whole
  token sequence after the prompt, as lm-evaluation-harness scores multiple choice (the first
  token from the prompt's last position; the candidate's further tokens, if any, from one
  small forward of all candidates over the prompt's KV cache), never a sub-word prefix
  ("Cont" also starts "Context");
- the **teacher-forced loss on the reference answer** from the answer positions' hidden
  states (the LM head runs over those positions only, all items of a batch together in
  chunks of ``head_chunk`` rows); optionally the paper's whole-sequence loss from the
  prompt's own hidden states;
- the **prompt's KV cache**: the prompt part of each item's cache is left-padded into one
  batch cache, from which **greedy answers** are decoded for the whole batch (sorted by
  prompt length): KV-cached, stopping at EOS or ``max_new_tokens`` (answers cut there are
  flagged); a finished row leaves the batch.

Prompts are never padded for the compute-bound prefill (a padded batch computes the pad
positions too); only the memory-bound decoding is batched, where one read of the weights
serves every row. Both run in :mod:`kaggle_qa.numerics`'s numerics, as the assistant does: matmuls in
the compute dtype (bf16 autocast over float32 weights where the CPU has native bf16, as training
computed; float32 elsewhere), every linear prepacked once for oneDNN for the duration of
:meth:`Evaluator.run` (decoding's few-row shapes are 1.4-4x faster than MKL's plain sgemm, and bf16
about halves the float32 time).

Prompt and reference come from :func:`kaggle_qa.prompting.tokenize_example`, exactly as in
training (same template, same truncation). The seed notebook's way (one ``generate`` per
question, then a separate teacher-forced pass over prompt + reference) is what
``benchmarks/bench_eval.py`` compares this against.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from kaggle_qa.decoding import lead_in_guard, repeat_start
from kaggle_qa.modeling import head_logits, torch_dtype
from kaggle_qa.numerics import computing, packed_linears, packing_dtype, uses_autocast  # noqa: F401 (packed_linears re-exported)
from kaggle_qa.prompting import candidate_token_ids, tokenize_example  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)


def candidate_continuations(tokenizer, choices: dict[str, list[str]]) -> dict[str, dict[str, list[int]]]:
    """Every candidate answer's whole token sequence per task type (as the answer would start with it);
    candidates may share a first token, never their whole sequence."""
    table = {}
    for task_type, words in choices.items():
        ids = {word: list(tokenizer(word, add_special_tokens=False)["input_ids"]) for word in words}
        empty = [word for word, tokens in ids.items() if not tokens]
        if empty:
            raise ValueError(f"choice candidates {empty} for {task_type} tokenize to nothing")
        if len({tuple(tokens) for tokens in ids.values()}) != len(words):
            raise ValueError(f"choice candidates {words} for {task_type} tokenize to the same tokens")
        table[task_type] = ids
    return table


def _batches(order: list[int], batch_size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


class _InPlace:
    """Cache-layer mixin: keys and values are views into buffers preallocated for `capacity`
    positions, so a decoding step is written in place; the transformers layer it extends copies
    its whole cache (torch.cat) at every step: ~10 % of a float32 CPU run (16 items, 32 tokens)."""

    def preallocate(self, keys: torch.Tensor, values: torch.Tensor, capacity: int):
        self.lazy_initialization(keys, values)
        self._buffers = [state.new_empty((*state.shape[:-2], capacity, state.shape[-1])) for state in (keys, values)]
        for buffer, state in zip(self._buffers, (keys, values)):
            buffer[..., : state.shape[-2], :] = state
        self._view(keys.shape[-2])
        return self

    def _view(self, length: int) -> None:
        self.keys, self.values = (buffer[..., :length, :] for buffer in self._buffers)
        self.cumulative_length = length  # what a sliding layer counts; never more than its window here

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        start = self.keys.shape[-2]
        for buffer, state in zip(self._buffers, (key_states, value_states)):
            buffer[..., start : start + state.shape[-2], :] = state
        self._view(start + key_states.shape[-2])
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._buffers = [buffer[indices] for buffer in self._buffers]
        self._view(self.keys.shape[-2])


class _InPlaceLayer(_InPlace, DynamicLayer):
    pass


class _InPlaceSlidingLayer(_InPlace, DynamicSlidingWindowLayer):
    """Only while the sequence fits the window, where a sliding layer keeps every position."""


class Evaluator:
    """Runs one causal LM over tokenized test items (see module docstring)."""

    def __init__(
        self, model, tokenizer, *, batch_size: int, max_new_tokens: int, max_length: int, head_chunk: int = 128,
        compute_dtype: str | torch.dtype = "float32",
    ):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_new_tokens, self.max_length = batch_size, max_new_tokens, max_length
        self.head_chunk = head_chunk
        self.device = next(model.parameters()).device
        self.compute_dtype = torch_dtype(compute_dtype)
        self.autocast = uses_autocast(model, self.compute_dtype)  # float32 weights, a lower compute dtype

    def examples(self, rows: list[dict]):
        """Prompt + reference tokenization of every row, truncated exactly as in training."""
        return [
            tokenize_example(self.tokenizer, row["input"], row["instruction"], row["output"], self.max_length)
            for row in rows
        ]

    def _log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token log-probabilities from final hidden states (LM head + optional softcap)."""
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.log_softmax(head_logits(self.model.get_output_embeddings(), softcap, hidden), dim=-1)

    def _token_log_probs(self, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(target | state) per row, the LM head over `head_chunk` rows at a time."""
        parts = [
            self._log_probs(states[start : start + self.head_chunk])
            .gather(-1, targets[start : start + self.head_chunk, None])[:, 0]
            for start in range(0, len(targets), self.head_chunk)
        ]
        return torch.cat(parts) if parts else states.new_zeros(0)

    @torch.inference_mode()
    def run(
        self, examples, candidates: dict[int, dict[str, int]], whole_sequence: bool, label: str
    ) -> tuple[list[dict], float]:
        """Answer, losses and choice of every example (input order); returns them and seconds taken.

        `candidates` maps an example index to {answer word: its token ids} (or its first token id
        alone, an int) for the items scored by log-likelihood choice
        (:func:`candidate_continuations`). The seconds include packing the weights.
        """
        candidates = {i: {word: [ids] if isinstance(ids, int) else list(ids) for word, ids in table.items()}
                      for i, table in candidates.items()}
        order = sorted(range(len(examples)), key=lambda i: examples[i].prompt_length)
        results: list[dict] = [{}] * len(examples)
        started = time.perf_counter()
        with packed_linears(self.model, packing_dtype(self.model, self.compute_dtype)), \
                computing(self.model, self.compute_dtype), tqdm(
            total=len(examples), desc=f"answer + loss + choice ({label})", unit="item"
        ) as bar:
            for indices in _batches(order, self.batch_size):
                for i, result in zip(indices, self._run_batch([examples[i] for i in indices],
                                                              [candidates.get(i) for i in indices], whole_sequence)):
                    results[i] = result
                bar.update(len(indices))
        return results, time.perf_counter() - started

    def _forward_item(self, example) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """One unpadded forward over prompt + reference answer minus its last token: the hidden
        states of every position, and the prompt positions' keys and values of every layer."""
        cache = DynamicCache(config=self.model.config)
        for layer in cache.layers:
            if getattr(layer, "is_sliding", False):
                layer.activate_past_recording()  # keep every position, so the prompt's part can be cut out
        ids = torch.tensor([example.input_ids[:-1]], device=self.device)
        hidden = self.model.get_decoder()(input_ids=ids, cache=cache, use_cache=True).last_hidden_state[0]
        length = example.prompt_length
        return hidden, [(layer.keys[:, :, :length], layer.values[:, :, :length]) for layer in cache.layers]

    def _batch_cache(self, prompt_kvs: list[list[tuple[torch.Tensor, torch.Tensor]]], lengths: list[int]):
        """The prompts' caches left-padded (zeros, masked out) into one batch cache with room for
        the answers (written in place), and its attention mask."""
        width = max(lengths)
        capacity = width + self.max_new_tokens
        cache = DynamicCache(config=self.model.config)
        for index, per_row in enumerate(zip(*prompt_kvs)):
            keys, values = (torch.cat([F.pad(kv[part], (0, 0, width - kv[part].shape[-2], 0)) for kv in per_row])
                            for part in (0, 1))
            layer = cache.layers[index]
            if type(layer) is DynamicLayer:
                cache.layers[index] = _InPlaceLayer().preallocate(keys, values, capacity)
            elif type(layer) is DynamicSlidingWindowLayer and capacity <= layer.sliding_window:
                cache.layers[index] = _InPlaceSlidingLayer(sliding_window=layer.sliding_window).preallocate(
                    keys, values, capacity)
            else:  # a sliding window the answers would slide: transformers' own layer
                layer.update(keys, values)
        mask = torch.tensor([[0] * (width - length) + [1] * length for length in lengths], device=self.device)
        return cache, mask

    def _run_batch(self, batch_examples, batch_candidates, whole_sequence: bool) -> list[dict]:
        hiddens, prompt_kvs = zip(*(self._forward_item(example) for example in batch_examples))
        lengths = [example.prompt_length for example in batch_examples]
        # distribution of the first answer token: the state of the prompt's last position
        first_lp = self._log_probs(torch.stack([hidden[length - 1] for hidden, length in zip(hiddens, lengths)]))
        # answer tokens 2.. of every item, teacher-forced, their LM head rows together
        states = torch.cat([hidden[length:] for hidden, length in zip(hiddens, lengths)])
        targets = [token for example in batch_examples for token in example.input_ids[example.prompt_length + 1 :]]
        reference_lp = self._token_log_probs(states, torch.tensor(targets, device=self.device)).split(
            [len(hidden) - length for hidden, length in zip(hiddens, lengths)])
        items = []
        for row, (example, choice_ids) in enumerate(zip(batch_examples, batch_candidates)):
            answer = example.input_ids[example.prompt_length :]  # reference answer + EOS
            nll = -first_lp[row, answer[0]].item() - reference_lp[row].sum().item()
            item = {"answer_nll": nll, "answer_tokens": len(answer), "reference_first_token": answer[0]}
            if whole_sequence:
                item["sequence_nll"] = nll + self._prompt_nll(hiddens[row][: lengths[row]],
                                                              example.input_ids[: lengths[row]])
                item["sequence_tokens"] = len(example.input_ids) - 1
            if choice_ids:
                scores = self._continuation_log_likelihoods(first_lp[row], prompt_kvs[row], lengths[row], choice_ids)
                item["choice"] = max(scores, key=scores.get)
                item["choice_logprobs"] = scores
                item["reference_candidate"] = next(
                    (word for word, ids in choice_ids.items() if answer[: len(ids)] == ids), None)
            items.append(item)
        del hiddens, states
        cache, mask = self._batch_cache(list(prompt_kvs), lengths)
        next_position = torch.tensor(lengths, device=self.device)[:, None]
        generated, looped = self._greedy(first_lp.argmax(-1), cache, mask, next_position)
        for index, (item, tokens) in enumerate(zip(items, generated)):
            eos = self.tokenizer.eos_token_id
            stopped = eos in tokens
            tokens = tokens[: tokens.index(eos)] if stopped else tokens
            item.update(
                answer=self.tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                new_tokens=len(tokens),
                hit_max_new_tokens=not stopped and index not in looped,
                stopped_on_repeat=index in looped,
            )
        return items

    def _continuation_log_likelihoods(self, first_lp: torch.Tensor, prompt_kv, length: int,
                                      choice_ids: dict[str, list[int]]) -> dict[str, float]:
        """log p(candidate's tokens | prompt) of every candidate: its first token from `first_lp` (the
        prompt's last position), its later tokens from one forward of all multi-token candidates
        together (right-padded) over a copy of the prompt's KV cache."""
        scores = {word: first_lp[ids[0]].item() for word, ids in choice_ids.items()}
        longer = [word for word, ids in choice_ids.items() if len(ids) > 1]
        if not longer:
            return scores
        width = max(len(choice_ids[word]) for word in longer) - 1
        inputs = torch.tensor([choice_ids[word][:-1] + [0] * (width + 1 - len(choice_ids[word])) for word in longer],
                              device=self.device)
        cache = DynamicCache(config=self.model.config)
        for layer, (keys, values) in zip(cache.layers, prompt_kv):
            layer.update(keys.expand(len(longer), -1, -1, -1).contiguous(),
                         values.expand(len(longer), -1, -1, -1).contiguous())
        positions = torch.arange(length, length + width, device=self.device).expand(len(longer), -1)
        hidden = self.model.get_decoder()(input_ids=inputs, position_ids=positions, cache=cache,
                                          use_cache=True).last_hidden_state
        for k, word in enumerate(longer):
            targets = choice_ids[word][1:]
            log_probs = self._log_probs(hidden[k, : len(targets)])
            scores[word] += log_probs.gather(-1, torch.tensor(targets, device=self.device)[:, None]).sum().item()
        return scores

    def _prompt_nll(self, states: torch.Tensor, prompt: list[int]) -> float:
        """Negative log-likelihood of prompt tokens 2..P from the prompt's own hidden states (chunked head)."""
        tokens = torch.tensor(prompt[1:], device=self.device)
        return -self._token_log_probs(states[:-1], tokens).sum().item()

    def _greedy(self, tokens: torch.Tensor, cache, mask: torch.Tensor,
                next_position: torch.Tensor) -> tuple[list[list[int]], set[int]]:
        """Greedy decoding from the prefill's first token; a row leaves the batch (and the cache) at its
        EOS, or when it starts repeating itself (:func:`kaggle_qa.decoding.repeat_start`: the second copy
        is dropped). Returns every row's tokens and the rows stopped that way.

        Same tokens as `model.generate(do_sample=False)` with the assistant's logits processor and
        stopping criterion (:mod:`kaggle_qa.decoding`: no end of sequence right after a lead-in, no
        loop), which would keep computing every finished row until the longest answer of the batch ends.
        """
        eos = self.tokenizer.eos_token_id
        guard = lead_in_guard(self.tokenizer)  # an answer never ends on a lead-in (kaggle_qa.decoding)
        rows = list(range(len(mask)))  # batch row of each still-active sequence
        generated: list[list[int]] = [[] for _ in rows]
        looped: set[int] = set()
        lead_in = torch.zeros(len(rows), dtype=torch.bool)
        for step in range(self.max_new_tokens):
            for row, token in zip(rows, tokens.tolist()):
                generated[row].append(token)
            lead_in = guard.after(lead_in, tokens)
            active = []
            for k, (row, token) in enumerate(zip(rows, tokens.tolist())):
                if token == eos:
                    continue
                if (start := repeat_start(generated[row])) is not None:
                    generated[row] = generated[row][:start]
                    looped.add(row)
                    continue
                active.append(k)
            if not active or step == self.max_new_tokens - 1:
                break
            if len(active) < len(rows):
                keep = torch.tensor(active, device=self.device)
                cache.batch_select_indices(keep)
                tokens, mask, next_position = tokens[keep], mask[keep], next_position[keep]
                lead_in = lead_in[torch.tensor(active)]
                rows = [rows[k] for k in active]
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=-1)
            output = self.model(
                input_ids=tokens[:, None], attention_mask=mask, position_ids=next_position, cache=cache, use_cache=True
            )
            cache, next_position = output.cache, next_position + 1
            tokens = guard.mask(output.logits[:, -1].float(), lead_in).argmax(-1)  # argmax: 4x slower in bf16 on CPU
        return generated, looped


def mean_loss(nll_sums: list[float], token_counts: list[int]) -> float:
    """Token-weighted mean negative log-likelihood (NaN when there are no tokens)."""
    total = sum(token_counts)
    return sum(nll_sums) / total if total else math.nan
