"""The one prompt template, shared by training, evaluation and serving.

Every place that turns a (context, question) into model input goes through
:func:`render_prompt`; every place that builds supervised examples goes through
:func:`tokenize_example`. Changing the template here changes it everywhere, so
train/serve skew cannot creep in.
"""

from __future__ import annotations

from dataclasses import dataclass

# Bump when the template below changes: adapters record it (training_params.json,
# "prompt_template_version") and evaluation refuses an adapter trained on another template.
PROMPT_TEMPLATE_VERSION = "1"
PROMPT_WITH_CONTEXT = "Context:\n{context}\n\nQuestion:\n{question}\n\nAnswer:\n"
PROMPT_WITHOUT_CONTEXT = "Question:\n{question}\n\nAnswer:\n"
IGNORE_INDEX = -100
# How retrieved chunks (best first) are joined into one context: the assistant, evaluate's retrieved
# modes and training's retrieved contexts all build theirs through :func:`fit_context`.
CONTEXT_SEPARATOR = "\n\n"


def render_prompt(context: str, question: str) -> str:
    """(context, question) → the prompt text the model sees (no BOS; the tokenizer adds it)."""
    context, question = (context or "").strip(), (question or "").strip()
    if context:
        return PROMPT_WITH_CONTEXT.format(context=context, question=question)
    return PROMPT_WITHOUT_CONTEXT.format(question=question)


def join_context(texts: list[str]) -> str:
    """Chunk texts (best first) → one context string."""
    return CONTEXT_SEPARATOR.join(text.strip() for text in texts if text and text.strip())


def fit_context(tokenizer, texts: list[str], question: str, budget: int, keep: int | None = None) -> str:
    """The context of ranked chunk texts whose prompt (BOS included) fits in `budget` tokens.

    What does not fit is cut from the lowest-ranked chunk's end first (a chunk that would keep fewer
    than 16 tokens is dropped whole), so the best chunk is the last one cut; `keep` names a chunk to
    cut only after all others (training puts the answering chunk at any rank and must not lose it).
    Cutting the joined text from the left instead drops the best chunk's opening first: 6 of 20 of
    Click's user questions lost it that way with 3 chunks and 410 prompt tokens.
    """
    texts = [(text or "").strip() for text in texts]
    order = [i for i in reversed(range(len(texts))) if i != keep] + ([keep] if keep is not None and keep < len(texts) else [])

    def length(parts: list[str]) -> int:
        return len(encode_prompt(tokenizer, join_context(parts), question))

    for index in order:
        overflow = length(texts) - budget
        if overflow <= 0:
            break
        ids = tokenizer(texts[index], add_special_tokens=False)["input_ids"]
        # token boundaries can move where the text is cut: re-measure and cut a little more if needed
        for extra in (0, 2, 8, 32):
            keep_tokens = len(ids) - overflow - extra
            if keep_tokens < 16 and index != order[-1]:
                texts[index] = ""
                break
            texts[index] = tokenizer.decode(ids[: max(keep_tokens, 0)]).strip()
            if length(texts) <= budget:
                break
    return join_context(texts)


def render_training_text(prompt: str, answer: str, eos_token: str) -> str:
    """(prompt, answer) → the full training text; answers always end with EOS."""
    return prompt + answer.strip() + eos_token


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on prompt tokens, answer ids + EOS elsewhere
    prompt_length: int
    truncated: bool


def encode_prompt(tokenizer, context: str, question: str) -> list[int]:
    """Token ids of the prompt exactly as generation sees them: BOS + prompt."""
    ids = tokenizer(render_prompt(context, question), add_special_tokens=False)["input_ids"]
    return [tokenizer.bos_token_id, *ids] if tokenizer.bos_token_id is not None else list(ids)


def tokenize_example(
    tokenizer, context: str, question: str, answer: str, max_length: int
) -> TokenizedExample:
    """Build one supervised example with loss on the answer tokens and EOS only.

    Prompt and answer are tokenized separately, exactly as at inference time
    (the model generates after the prompt's last token). Over-long examples keep
    BOS and the end of the prompt (question + "Answer:") and drop context tokens
    from the left; answers longer than half the budget are cut, EOS kept.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no EOS token: answers could not be terminated")
    prompt_ids = encode_prompt(tokenizer, context, question)
    answer_ids = tokenizer(answer.strip(), add_special_tokens=False)["input_ids"]
    answer_ids = [*answer_ids, tokenizer.eos_token_id]
    truncated = False
    if len(answer_ids) > max_length // 2:
        answer_ids = [*answer_ids[: max_length // 2 - 1], tokenizer.eos_token_id]
        truncated = True
    overflow = len(prompt_ids) + len(answer_ids) - max_length
    if overflow > 0:
        keep_head = 1 if tokenizer.bos_token_id is not None else 0
        prompt_ids = prompt_ids[:keep_head] + prompt_ids[keep_head + overflow :]
        truncated = True
    labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids
    return TokenizedExample(prompt_ids + answer_ids, labels, len(prompt_ids), truncated)


def candidate_token_ids(tokenizer, choices: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """First token id of each candidate answer per task type; candidates must differ in it.

    Training's label accuracy and evaluation's log-likelihood choice both compare these tokens.
    """
    table = {}
    for task_type, words in choices.items():
        ids = {word: tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in words}
        if len(set(ids.values())) != len(ids):
            raise ValueError(f"choice candidates {words} for {task_type} share their first token")
        table[task_type] = ids
    return table
