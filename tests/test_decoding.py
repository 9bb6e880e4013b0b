"""An answer never ends on a lead-in (kaggle_qa.decoding): end of sequence is barred while the
generated text ends in ":", in the evaluation's greedy decoder and the assistant alike."""

from __future__ import annotations

import torch

from kaggle_qa.decoding import lead_in_guard, lead_in_logits_processor
from kaggle_qa.modeling import load_tokenizer


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_end_of_sequence_is_barred_only_after_a_lead_in(embedded_gemma_path):
    tokenizer = load_tokenizer(embedded_gemma_path)
    guard = lead_in_guard(tokenizer)
    assert lead_in_guard(tokenizer) is guard  # one vocabulary scan per tokenizer
    texts = ["This can be accomplished with the `multiple` flag:", "Example:\n", "Use `multiple=True`.",
             "Set it to 10: that is the default.", "Example:\n```"]
    expected = [True, True, False, False, False]
    states = [guard.state_of(torch.tensor([_ids(tokenizer, t)])).item() for t in texts]
    assert states == expected
    vocabulary = len(tokenizer)
    logits = torch.zeros(len(texts), vocabulary)
    logits[:, tokenizer.eos_token_id] = 5.0  # the model wants to stop everywhere
    masked = guard.mask(logits, torch.tensor(expected))
    stops = masked.argmax(-1) == tokenizer.eos_token_id
    assert stops.tolist() == [not e for e in expected]
    assert torch.equal(masked[~torch.tensor(expected)], logits[~torch.tensor(expected)])  # other rows untouched
    # the assistant's logits are bf16 on AVX512-BF16 / AMX CPUs and fp32 elsewhere: both dtypes
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        barred = guard.mask(logits.to(dtype), torch.tensor(expected)).argmax(-1) == tokenizer.eos_token_id
        assert barred.tolist() == [not e for e in expected], dtype


def test_the_assistants_logits_processor_reads_only_the_new_tokens(embedded_gemma_path):
    """A prompt ending in "Answer:" does not count: the rule is about the answer."""
    tokenizer = load_tokenizer(embedded_gemma_path)
    prompt = _ids(tokenizer, "Question: how?\nAnswer:")
    processor = lead_in_logits_processor(tokenizer, len(prompt))
    scores = torch.zeros(1, len(tokenizer))
    scores[0, tokenizer.eos_token_id] = 5.0
    assert processor(torch.tensor([prompt]), scores.clone()).argmax(-1).item() == tokenizer.eos_token_id
    lead = prompt + _ids(tokenizer, " Pass it like this:\n")
    assert processor(torch.tensor([lead]), scores.clone()).argmax(-1).item() != tokenizer.eos_token_id


def test_the_state_of_a_batch_is_the_state_token_by_token(embedded_gemma_path):
    """The assistant's one-gather state equals the greedy decoder's step-by-step state, for rows
    that end on a lead-in, after it on a blank, past it, or on blanks only."""
    tokenizer = load_tokenizer(embedded_gemma_path)
    guard = lead_in_guard(tokenizer)
    newline = _ids(tokenizer, "\n")[0]
    rows = [_ids(tokenizer, t) for t in ("Use it:", "Use it:\n", "Use it: now", "Done.")]
    width = max(map(len, rows)) + 1
    batch = torch.tensor([[newline] * (width - len(row)) + row for row in rows] + [[newline] * width])
    stepwise = torch.zeros(len(batch), dtype=torch.bool)
    for step in range(width):
        stepwise = guard.after(stepwise, batch[:, step])
    assert guard.state_of(batch).tolist() == stepwise.tolist() == [True, True, False, False, False]
