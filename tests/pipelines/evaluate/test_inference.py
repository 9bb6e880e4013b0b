"""Evaluator: one forward per item gives the seed notebook's answers, transformers' losses
and the log-likelihood choice computed independently."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import StoppingCriteriaList

from kaggle_qa.decoding import MIN_REPEAT_TOKENS, repeat_start, repeat_stopping_criterion
from kaggle_qa.modeling import load_model, load_tokenizer, make_tiny_gemma
from kaggle_qa.pipelines.evaluate.inference import Evaluator, candidate_continuations, candidate_token_ids, packed_linears
from tests.pipelines.evaluate.rows import ROWS


def hf_generate_one_by_one(model, tokenizer, examples, max_new_tokens: int) -> list[str]:
    """The reference: one unbatched `model.generate` per question (the seed notebook's way)."""
    answers = []
    for example in examples:
        ids = torch.tensor([example.input_ids[: example.prompt_length]])
        output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                do_sample=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                stopping_criteria=StoppingCriteriaList([repeat_stopping_criterion(ids.shape[1])]))
        tokens = output[0, ids.shape[1]:].tolist()
        if tokenizer.eos_token_id in tokens:
            tokens = tokens[: tokens.index(tokenizer.eos_token_id)]
        elif (start := repeat_start(tokens)) is not None:
            tokens = tokens[:start]
        answers.append(tokenizer.decode(tokens, skip_special_tokens=True).strip())
    return answers


def assert_losses_are_transformers_losses(model, examples, results) -> None:
    """Answer and whole-sequence losses per item equal transformers' own loss of a plain forward."""
    for example, result in zip(examples, results):
        ids = torch.tensor([example.input_ids])
        with torch.no_grad():
            answer_loss = model(input_ids=ids, labels=torch.tensor([example.labels])).loss.item()
            sequence_loss = model(input_ids=ids, labels=ids).loss.item()
        assert result["answer_tokens"] == len(example.input_ids) - example.prompt_length
        assert result["answer_nll"] / result["answer_tokens"] == pytest.approx(answer_loss, rel=1e-4)
        assert result["sequence_nll"] / result["sequence_tokens"] == pytest.approx(sequence_loss, rel=1e-4)
        assert not math.isnan(result["answer_nll"])


@pytest.fixture(scope="module")
def tiny(tiny_gemma_path):
    return load_model(tiny_gemma_path, dtype="float32", attn_implementation="sdpa"), load_tokenizer(tiny_gemma_path)


def test_one_prefill_gives_one_by_one_answers_and_transformers_losses(tiny):
    model, tokenizer = tiny
    evaluator = Evaluator(model, tokenizer, batch_size=4, max_new_tokens=8, max_length=256)
    rows = ROWS + [{**ROWS[2], "output": ""}]  # an empty reference: the answer is EOS alone
    examples = evaluator.examples(rows)
    results, seconds = evaluator.run(examples, {}, whole_sequence=True, label="test")
    assert seconds > 0
    assert [r["answer"] for r in results] == hf_generate_one_by_one(model, tokenizer, examples, 8)
    assert_losses_are_transformers_losses(model, examples, results)
    assert results[-1]["answer_tokens"] == 1  # EOS only

    # make a token the random model emits mid-answer the EOS: rows then finish at different steps
    # and leave the batch early; answers must still equal one-by-one generate's
    first_row_tokens = tokenizer(results[0]["answer"], add_special_tokens=False)["input_ids"]
    eos_token = tokenizer.eos_token
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(first_row_tokens[2])
    try:
        stopped, _ = evaluator.run(examples, {}, whole_sequence=False, label="early EOS")
        assert [r["answer"] for r in stopped] == hf_generate_one_by_one(model, tokenizer, examples, 8)
    finally:
        tokenizer.eos_token = eos_token
    assert stopped[0]["new_tokens"] < 8 and not stopped[0]["hit_max_new_tokens"]
    assert any(r["hit_max_new_tokens"] for r in stopped)
    assert "sequence_nll" not in stopped[0]  # whole-sequence loss only when asked


def test_every_cache_path_gives_one_by_one_answers_and_transformers_losses(embedded_gemma_path, tmp_path):
    """A full-attention layer (cache written in place) and a sliding layer whose window the
    prompts overflow (its part of the prompt cut out of a full forward, then transformers' own
    sliding layer for decoding), next to the in-place sliding layer the other tests use; the LM
    head over a few positions at a time (answer positions of several items share a chunk)."""
    path = make_tiny_gemma(embedded_gemma_path, tmp_path / "tiny", layer_types=["sliding_attention", "full_attention"],
                           sliding_window=24)
    model, tokenizer = load_model(str(path), dtype="float32", attn_implementation="sdpa"), load_tokenizer(str(path))
    evaluator = Evaluator(model, tokenizer, batch_size=4, max_new_tokens=8, max_length=256, head_chunk=5)
    examples = evaluator.examples(ROWS)
    assert max(example.prompt_length for example in examples) > 24 > min(example.prompt_length for example in examples)
    results, _ = evaluator.run(examples, {}, whole_sequence=True, label="cache paths")
    assert [r["answer"] for r in results] == hf_generate_one_by_one(model, tokenizer, examples, 8)
    assert_losses_are_transformers_losses(model, examples, results)


def test_packed_linears_compute_the_same_and_are_undone(tiny):
    """In float32 on CPU the linears run prepacked inside the block; afterwards the modules are untouched."""
    model, _ = tiny
    ids = torch.tensor([[2, 100, 200, 300]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        with packed_linears(model) as packed:
            inside = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
    if torch.backends.mkldnn.is_available():
        assert packed == sum(type(m) is torch.nn.Linear for m in model.modules()) > 0
    assert torch.allclose(inside, expected, atol=1e-5)
    assert torch.equal(after, expected)
    assert not any("forward" in vars(m) for m in model.modules())


def test_bf16_packed_linears_compute_what_autocast_computes(tiny):
    """bf16 compute over float32 weights: the prepacked bf16 layers give bit for bit what autocast's
    F.linear gives (bf16 out), whichever path this CPU takes (packed, or the plain fallback)."""
    model, _ = tiny
    ids = torch.tensor([[2, 100, 200, 300, 400]])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(input_ids=ids).logits
        with packed_linears(model, torch.bfloat16) as packed:
            inside = model(input_ids=ids).logits
    assert expected.dtype == inside.dtype == torch.bfloat16
    assert torch.equal(inside, expected)
    assert not any("forward" in vars(m) for m in model.modules())
    with torch.no_grad():
        full = model(input_ids=ids).logits  # float32 throughout: another function, if only just
    assert not torch.equal(full, expected.float())
    if torch.backends.mkldnn.is_available() and packed:
        assert packed == sum(type(m) is torch.nn.Linear for m in model.modules())


@pytest.mark.parametrize("packing", ["packed", "plain"])
def test_bf16_compute_gives_one_by_one_autocast_answers_and_losses(tiny, monkeypatch, packing):
    """Evaluator(compute_dtype=bfloat16) over float32 weights computes what the model computes under
    autocast: the same answers as one-by-one generate under autocast, and its losses (packed bf16
    layers, and the plain layers a CPU without the oneDNN op falls back to)."""
    import kaggle_qa.numerics as inference

    model, tokenizer = tiny
    if packing == "plain":
        monkeypatch.setattr(inference, "_packing_works", lambda module, dtype: False)
    evaluator = Evaluator(model, tokenizer, batch_size=4, max_new_tokens=8, max_length=256, compute_dtype="bfloat16")
    assert evaluator.autocast
    examples = evaluator.examples(ROWS)
    results, _ = evaluator.run(examples, {}, whole_sequence=False, label="bf16")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert [r["answer"] for r in results] == hf_generate_one_by_one(model, tokenizer, examples, 8)
        for example, result in zip(examples, results):
            with torch.no_grad():
                loss = model(input_ids=torch.tensor([example.input_ids]), labels=torch.tensor([example.labels])).loss
            assert result["answer_nll"] / result["answer_tokens"] == pytest.approx(loss.item(), rel=2e-3)
    fp32, _ = Evaluator(model, tokenizer, batch_size=4, max_new_tokens=8, max_length=256).run(
        examples, {}, whole_sequence=False, label="fp32")
    assert [r["answer_nll"] for r in fp32] != [r["answer_nll"] for r in results]  # the numerics did change


def test_compute_dtype_must_match_the_weights_or_be_autocast(tiny):
    model, tokenizer = tiny
    assert not Evaluator(model, tokenizer, batch_size=1, max_new_tokens=1, max_length=64).autocast
    half = load_model_in(tiny, torch.bfloat16)
    assert not Evaluator(half, tokenizer, batch_size=1, max_new_tokens=1, max_length=64, compute_dtype="bfloat16").autocast
    with pytest.raises(ValueError, match="expected float32 weights"):
        Evaluator(half, tokenizer, batch_size=1, max_new_tokens=1, max_length=64, compute_dtype="float16")


def load_model_in(tiny, dtype):
    import copy

    return copy.deepcopy(tiny[0]).to(dtype)


def test_packed_linears_fall_back_to_plain_layers_when_onednn_fails(tiny, monkeypatch, caplog):
    """A torch build / CPU where the private oneDNN op raises: nothing is packed, results are unchanged."""
    import kaggle_qa.numerics as inference

    model, _ = tiny
    ids = torch.tensor([[2, 100, 200, 300]])

    def broken(*args, **kwargs):
        raise RuntimeError("no oneDNN kernel for this CPU")

    monkeypatch.setattr(inference, "_packed_linear_forward", broken)
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        with caplog.at_level("WARNING"), packed_linears(model) as packed:
            inside = model(input_ids=ids).logits
    assert packed == 0
    assert torch.equal(inside, expected)
    assert "using plain ones" in caplog.text


def full_continuation_log_likelihood(model, prompt: list[int], candidate: list[int]) -> float:
    """log p(candidate tokens | prompt) from one plain forward over prompt + candidate (the reference)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + candidate])).logits[0].float()
    log_probs = torch.log_softmax(logits, -1)
    return sum(log_probs[len(prompt) - 1 + k, token].item() for k, token in enumerate(candidate))


def test_loglikelihood_choice_is_the_most_probable_whole_candidate(tiny):
    """The choice, computed independently from plain forwards over prompt + each whole candidate."""
    model, tokenizer = tiny
    evaluator = Evaluator(model, tokenizer, batch_size=3, max_new_tokens=2, max_length=256)
    choices = {"true_false": ["True", "False"], "yes_no": ["Yes", "No"], "nli": ["Entailment", "Contradiction", "Neutral"]}
    table = candidate_continuations(tokenizer, choices)
    assert len(table["nli"]["Entailment"]) == 3 and len(table["nli"]["Neutral"]) == 1  # "Ent" "ail" "ment"
    examples = evaluator.examples(ROWS)
    candidates = {i: table[row["task_type"]] for i, row in enumerate(ROWS) if row["task_type"] in table}
    results, _ = evaluator.run(examples, candidates, whole_sequence=False, label="choice")
    for i, example in enumerate(examples):
        if i not in candidates:
            assert "choice" not in results[i]
            continue
        prompt = example.input_ids[: example.prompt_length]
        expected = {word: full_continuation_log_likelihood(model, prompt, ids) for word, ids in candidates[i].items()}
        assert results[i]["choice_logprobs"] == pytest.approx(expected, abs=1e-4)
        assert results[i]["choice"] == max(expected, key=expected.get)
        assert results[i]["reference_candidate"] == ROWS[i]["output"].rstrip(".")  # the reference starts with it


def test_candidates_that_share_a_first_token_are_told_apart_by_their_whole_continuation(tiny):
    """"Contradiction", "Contradicts" and "Controversial" all start with the token "Cont": a first-token
    choice would score them equal; the whole continuation's log-likelihood does not."""
    model, tokenizer = tiny
    words = ["Contradiction", "Contradicts", "Controversial", "Neutral"]
    table = candidate_continuations(tokenizer, {"nli": words})
    assert len({ids[0] for ids in table["nli"].values() if len(ids) > 1}) == 1  # the prefixes collide
    evaluator = Evaluator(model, tokenizer, batch_size=2, max_new_tokens=1, max_length=256)
    rows = [row for row in ROWS if row["task_type"] == "nli"] * 2
    examples = evaluator.examples(rows)
    results, _ = evaluator.run(examples, {i: table["nli"] for i in range(len(rows))}, whole_sequence=False, label="nli")
    for example, result in zip(examples, results):
        prompt = example.input_ids[: example.prompt_length]
        expected = {word: full_continuation_log_likelihood(model, prompt, table["nli"][word]) for word in words}
        assert result["choice_logprobs"] == pytest.approx(expected, abs=1e-4)
        assert len({round(result["choice_logprobs"][w], 4) for w in words[:3]}) == 3  # not one shared prefix score
        assert result["choice"] == max(expected, key=expected.get)
    with pytest.raises(ValueError, match="tokenize to the same tokens"):
        candidate_continuations(tokenizer, {"t": ["True", "True"]})


@pytest.mark.parametrize(
    ("answer", "candidate"),
    [("True.", "True"), ("False.", "False"), ("Yes.", "Yes"), ("No.", "No"), ("True, because", "True"),
     ("Entailment.", "Entailment"), ("Contradiction.", "Contradiction"), ("Neutral.", "Neutral")],
)
def test_reference_answers_start_with_the_candidate_token(tiny, answer, candidate):
    """With the real Gemma tokenizer, "True." and "True" share their first token (what the choice compares)."""
    _, tokenizer = tiny
    table = candidate_token_ids(tokenizer, {"t": [candidate, "Maybe"]})
    assert tokenizer(answer, add_special_tokens=False)["input_ids"][0] == table["t"][candidate]


def test_candidates_sharing_a_first_token_are_refused(tiny):
    _, tokenizer = tiny
    with pytest.raises(ValueError, match=r"share their first token"):
        candidate_token_ids(tokenizer, {"t": ["True", "True."]})


def test_repeat_start_finds_the_second_copy_of_a_block():
    block = list(range(100, 100 + MIN_REPEAT_TOKENS))
    assert repeat_start([1, 2] + block + block) == 2 + MIN_REPEAT_TOKENS
    assert repeat_start([1, 2] + block + block[:-1]) is None  # the copy is not complete yet
    short = block[: MIN_REPEAT_TOKENS - 1]
    assert repeat_start(short + short) is None  # shorter than a loop: "- `a`\n- `b`", "Yes. Yes."
    assert repeat_start([7] * (2 * MIN_REPEAT_TOKENS)) == MIN_REPEAT_TOKENS  # the shortest block
    assert repeat_start(list(range(40))) is None and repeat_start([]) is None


def test_a_looping_answer_stops_after_its_first_copy_as_generate_does(tiny):
    """The random tiny model loops within 48 tokens on these rows; the batched decoder stops each
    loop where one-by-one `generate` with the assistant's stopping criterion stops, keeps one copy,
    and leaves the batch early (a row that stopped is neither EOS nor the length cap)."""
    model, tokenizer = tiny
    evaluator = Evaluator(model, tokenizer, batch_size=4, max_new_tokens=48, max_length=256)
    examples = evaluator.examples(ROWS)
    results, _ = evaluator.run(examples, {}, whole_sequence=False, label="loops")
    assert [r["answer"] for r in results] == hf_generate_one_by_one(model, tokenizer, examples, 48)
    looped = [r for r in results if r["stopped_on_repeat"]]
    assert looped, "no answer looped: pick rows or a length where the tiny model loops"
    for result in looped:
        assert not result["hit_max_new_tokens"] and result["new_tokens"] < 48
        tokens = tokenizer(result["answer"], add_special_tokens=False)["input_ids"]
        assert repeat_start(tokens) is None  # no second copy left in the answer
