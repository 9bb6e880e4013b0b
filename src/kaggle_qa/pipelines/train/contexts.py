"""Training contexts as the assistant sees them: retrieved chunks, the answering one among them.

The assistant answers from the top-k chunks the retriever finds for a question, best first, fitted
to the prompt budget (:func:`kaggle_qa.prompting.fit_context`). A model trained only on the one
chunk that holds the answer never learns to pick that chunk among its neighbours, and on a user's
docs copied a sentence of whichever chunk came first. So a share of the open-question rows
(``train.retrieved_context``) is given the context the assistant would give it, as in
retrieval-augmented fine-tuning (RAFT, Zhang et al. 2024): the question's top-k chunks by the
assistant's own retrieval settings, the row's own chunk kept at its rank when retrieved, else put at
a seeded random rank in place of a distractor; the rest keep their single chunk, as the paper's
format and the gold-context evaluation have it. ``repeats`` > 1 trains each open question that many
times (training side only; each copy draws its own context), so that the assistant's task is not
outweighed by the labelled rows the paper's mix is mostly made of.

Distractors come only from chunks of the same side of the split (training rows' chunks for
training rows, validation's for validation): no text of a held-out or validation chunk reaches
training. Labelled rows (true/false, yes/no, NLI) keep their chunk: their answer is a judgement of
that chunk's statement.

:func:`user_selection_examples` tokenizes the selection part of the user's question file
(:func:`kaggle_qa.user_questions.selection_rows`; the reported part is never read here) in the same
retrieved situation: the recipe measures its answer loss beside the validation loss at every
validation pass (``user_selection_loss`` in the history and the learning curves), never trains on it.
"""

from __future__ import annotations

import logging
import random
from collections import Counter

import numpy as np

from kaggle_qa.prompting import fit_context
from kaggle_qa.qa_schema import group_key, infer_task_type
from kaggle_qa.retrieval import Retriever
from kaggle_qa.user_questions import as_qa_rows, selection_rows

from .data import USER_SET
from .nodes import _tokenize_rows, _tokenizer

logger = logging.getLogger(__name__)


def _fitted(tokenizer, texts: list[str], row: dict, max_length: int, keep: int | None = None) -> str:
    """The context of `texts` fitted so that the row's prompt and answer (+ EOS; an answer is cut
    at half of `max_length`, as :func:`kaggle_qa.prompting.tokenize_example` cuts it) fit `max_length`."""
    answer_tokens = len(tokenizer(row["output"].strip(), add_special_tokens=False)["input_ids"]) + 1
    return fit_context(tokenizer, texts, row["instruction"], max_length - min(answer_tokens, max_length // 2), keep=keep)


def _with_retrieved(rows: list[dict], retriever: Retriever, retrieval: dict, settings: dict, tokenizer,
                    max_length: int, side: str) -> tuple[list[dict], dict]:
    """`rows` with a retrieved context for the chosen share of open questions (module docstring)."""
    tasks = set(settings.get("tasks") or ["extractive_qa"])
    rng = random.Random(f"{settings.get('seed', 0)}:{side}")
    repeats = max(int(settings.get("repeats") or 1), 1) if side == "train" else 1
    # each open question `repeats` times (training side only), each copy with its own draw of the share
    rows = [row for row in rows for _ in range(repeats if infer_task_type(row) in tasks else 1)]
    chosen = [i for i, row in enumerate(rows) if infer_task_type(row) in tasks and rng.random() < settings["share"]]
    out = [dict(row) for row in rows]
    stats = {"rows": len(rows), "open_question_repeats": repeats, "retrieved_context_rows": len(chosen),
             "answering_chunk_retrieved": 0,
             "answering_chunk_rank": {}}
    if not chosen:
        return out, stats
    chunks = retriever.chunks
    allowed = {group_key(row) for row in rows}
    top_k = retrieval["top_k"]
    questions = [rows[i]["instruction"] for i in chosen]
    for i, order in zip(chosen, retriever.rankings(questions, retrieval["method"])):
        row = out[i]
        own = row.get("chunk_id")
        picked = [int(j) for j in np.asarray(order)[:200] if chunks[j]["chunk_id"] in allowed][: top_k]
        texts = [chunks[j]["text"] for j in picked]
        ranks = [k for k, j in enumerate(picked) if chunks[j]["chunk_id"] == own]
        if ranks:
            keep = ranks[0]
            stats["answering_chunk_retrieved"] += 1
            texts[keep] = row["input"]  # the row's own text of its chunk (the same chunk)
        else:
            texts = [t for k, t in enumerate(texts) if chunks[picked[k]]["chunk_id"] != own][: top_k - 1]
            keep = rng.randrange(len(texts) + 1)
            texts.insert(keep, row["input"])
        stats["answering_chunk_rank"][keep] = stats["answering_chunk_rank"].get(keep, 0) + 1
        row["input"] = _fitted(tokenizer, texts, row, max_length, keep)
        row["context"] = "retrieved"
    stats["answering_chunk_rank"] = dict(sorted(stats["answering_chunk_rank"].items()))
    return out, stats


def add_retrieved_contexts(
    train_rows: list[dict], validation_rows: list[dict], retrieval_index: dict, base_model: str,
    retrieval: dict, params: dict,
) -> tuple[list[dict], list[dict], dict]:
    """Training and validation rows, a share of their open questions with the assistant's
    retrieved context (module docstring); plus what was done (counts, where the answering chunk sat)."""
    settings = params.get("retrieved_context") or {}
    if not settings.get("share"):
        logger.info("Retrieved training contexts: off (train.retrieved_context.share is 0)")
        return train_rows, validation_rows, {"share": 0}
    if not 0 < settings["share"] <= 1:
        raise ValueError(f"train.retrieved_context.share must be in (0, 1], got {settings['share']}")
    retriever = Retriever(retrieval_index, rrf_k=retrieval["rrf_k"], batch_size=retrieval["batch_size"])
    tokenizer = _tokenizer(base_model)
    report = {"share": settings["share"], "tasks": sorted(settings.get("tasks") or ["extractive_qa"]),
              "top_k": retrieval["top_k"], "method": retrieval["method"]}
    train, report["train"] = _with_retrieved(train_rows, retriever, retrieval, settings, tokenizer,
                                             params["max_length"], "train")
    validation, report["validation"] = _with_retrieved(validation_rows, retriever, retrieval, settings, tokenizer,
                                                       params["max_length"], "validation")
    for side in ("train", "validation"):
        part = report[side]
        logger.info("Retrieved training contexts (%s): %d of %d rows, answering chunk retrieved in top %d for %d; "
                    "its rank %s", side, part["retrieved_context_rows"], part["rows"], retrieval["top_k"],
                    part["answering_chunk_retrieved"], part["answering_chunk_rank"])
    return train, validation, report


def user_selection_examples(user_questions: list[dict] | None, retrieval_index: dict, base_model: str,
                            retrieval: dict, user_params: dict, params: dict) -> list[dict]:
    """The selection part of the user's question file as tokenized examples tagged ``set: user_selection``,
    each with the context the assistant would retrieve for it (module docstring); [] without a file."""
    rows = as_qa_rows(selection_rows(user_questions, user_params)) if user_questions else []
    if not rows:
        logger.info("User questions for model selection: none (no question file, or no question in its selection part)")
        return []
    retriever = Retriever(retrieval_index, rrf_k=retrieval["rrf_k"], batch_size=retrieval["batch_size"])
    tokenizer = _tokenizer(base_model)
    max_length = params["max_length"]
    for row in rows:
        hits = retriever.retrieve(row["instruction"], retrieval["top_k"], retrieval["method"]).hits
        row["input"] = _fitted(tokenizer, [hit["text"] for hit in hits], row, max_length)
        row["task_type"] = "extractive_qa"
    dropped: Counter = Counter()
    examples = [dict(example, set=USER_SET) for example in _tokenize_rows(tokenizer, rows, max_length, USER_SET, dropped)]
    logger.info("User questions for model selection: %d of the file's selection part, their answer loss measured "
                "beside the validation loss (%s)", len(examples), dict(dropped) or "none dropped")
    return examples
