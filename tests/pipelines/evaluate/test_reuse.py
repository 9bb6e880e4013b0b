"""Work done once per process in one evaluate run: the base model, the fine-tuned model (NF4 quantize +
dequantize + merge when trained so), the tokenizer and the retriever are built once and shared by every
node that needs them; the references' MiniLM embeddings are computed once for every answer list scored
against them. Counted with the real loaders (wrapped, still called), never timed; every reuse gives the
numbers a fresh build gives."""

from __future__ import annotations

import copy
import gc
import weakref
from collections import Counter

import bm25s
import torch
import transformers

from kaggle_qa import modeling
from kaggle_qa.metrics import reference_embeddings
from kaggle_qa.metrics.scoring import score_answers
from kaggle_qa.pipelines.evaluate import nodes as eval_nodes
from kaggle_qa.pipelines.evaluate.modes import evaluate_context_modes
from kaggle_qa.pipelines.evaluate.nodes import (
    answer_base, answer_fine_tuned, prepare_test_set, read_adapter_settings, score_predictions,
)
from kaggle_qa.pipelines.evaluate.user_eval import evaluate_user_questions
from tests.pipelines.evaluate.test_user_questions import (  # fixtures and rows (no test function imported)
    ALL_REPORTED, TEST_ROWS, USER_QUESTIONS, index, params, save_adapter, tiny_adapter,
)

__all__ = ["index", "params", "tiny_adapter"]  # fixtures used here


def _counting(counts: Counter, name: str, real):
    def wrapper(*args, **kwargs):
        counts[name] += 1
        return real(*args, **kwargs)
    return wrapper


def _answered(tiny_gemma_path, tiny_adapter, params):
    """From nothing held: the test set answered by the base and the fine-tuned model (3 new tokens)."""
    eval_nodes.release_held()
    evaluate = params["evaluate"] | {"max_new_tokens": 3}
    settings = read_adapter_settings(tiny_gemma_path, tiny_adapter, evaluate)
    test_set = prepare_test_set(TEST_ROWS, evaluate)
    base = answer_base(tiny_gemma_path, test_set, settings, evaluate, {})
    return evaluate, settings, test_set, base, answer_fine_tuned(tiny_gemma_path, tiny_adapter, test_set, settings,
                                                                 evaluate, base)


def test_models_tokenizer_and_retriever_are_built_once_for_all_evaluate_nodes(tiny_gemma_path, tiny_adapter, index,
                                                                              params, monkeypatch):
    counts = Counter()
    monkeypatch.setattr(eval_nodes, "load_model", _counting(counts, "base", eval_nodes.load_model))
    monkeypatch.setattr(modeling, "load_finetuned_model", _counting(counts, "fine_tuned", modeling.load_finetuned_model))
    real_tokenizer = transformers.AutoTokenizer.from_pretrained.__func__  # every load of Gemma's tokenizer, whoever asks

    def counting_tokenizer(cls, source, *args, **kwargs):
        counts.update(["tokenizer"] if str(source) == tiny_gemma_path else [])
        return real_tokenizer(cls, source, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", classmethod(counting_tokenizer))
    monkeypatch.setattr(bm25s.BM25, "index", _counting(counts, "bm25_index", bm25s.BM25.index))
    # both test sets' answer nodes
    evaluate, settings, test_set, base, raw = _answered(tiny_gemma_path, tiny_adapter, params)
    second = prepare_test_set(TEST_ROWS[1:], evaluate | {"test_set_name": "second"})
    answer_fine_tuned(tiny_gemma_path, tiny_adapter, second, settings, evaluate,
                      answer_base(tiny_gemma_path, second, settings, evaluate, {}))
    # the context modes and the user questions, each with its own copy of the index (Kedro loads it per node)
    predictions = score_predictions(test_set, raw, evaluate)
    evaluate_context_modes(tiny_gemma_path, tiny_adapter, test_set, raw, predictions, copy.deepcopy(index),
                           params["retrieval"], evaluate, params["context_modes"], {})
    retrieval = params["retrieval"] | {"relevance_threshold": 0.3, "method": "bm25", "top_k": 1}
    evaluate_user_questions(tiny_gemma_path, tiny_adapter, USER_QUESTIONS, copy.deepcopy(index), retrieval, None,
                            evaluate | {"max_new_tokens": None}, ALL_REPORTED, params["domain"], {})
    assert counts == {"base": 1, "fine_tuned": 1, "tokenizer": 1, "bm25_index": 1}
    assert eval_nodes.BUILDS["fine_tuned"] >= 1
    # reuse changes no number: models and tokenizer built afresh give the same rows
    eval_nodes.release_held()
    again_base = answer_base(tiny_gemma_path, test_set, settings, evaluate, {})
    again = answer_fine_tuned(tiny_gemma_path, tiny_adapter, test_set, settings, evaluate, again_base)
    assert counts == {"base": 2, "fine_tuned": 2, "tokenizer": 2, "bm25_index": 1}
    for label in ("base", "fine_tuned"):
        assert again["models"][label]["rows"] == raw["models"][label]["rows"]


def test_an_adapter_rewritten_in_place_is_rebuilt_and_the_previous_model_released(tiny_gemma_path, params, tmp_path):
    eval_nodes.release_held()
    adapter = save_adapter(tiny_gemma_path, tmp_path / "adapter", seed=0)
    settings = read_adapter_settings(tiny_gemma_path, adapter, params["evaluate"])
    first = eval_nodes.shared_fine_tuned_model(tiny_gemma_path, adapter, settings)
    assert eval_nodes.shared_fine_tuned_model(tiny_gemma_path, adapter, settings) is first
    weights = {name: value.clone() for name, value in first.state_dict().items()}
    released = weakref.ref(first)
    del first
    save_adapter(tiny_gemma_path, tmp_path / "adapter", seed=1)  # same folder, other weights
    second = eval_nodes.shared_fine_tuned_model(tiny_gemma_path, adapter, settings)
    gc.collect()
    assert released() is None  # the model of the old adapter is not held beside the new one
    assert any(not torch.equal(weights[name], value) for name, value in second.state_dict().items())
    # the base model: another dtype is another model
    base = eval_nodes.shared_base_model(tiny_gemma_path, settings)
    assert eval_nodes.shared_base_model(tiny_gemma_path, settings) is base
    bf16 = eval_nodes.shared_base_model(tiny_gemma_path, settings | {"dtype": "bfloat16"})
    assert bf16 is not base and next(bf16.parameters()).dtype == torch.bfloat16
    eval_nodes.release_held()


def test_references_are_embedded_once_for_every_answer_list_with_the_same_scores(monkeypatch):
    from sentence_transformers import SentenceTransformer

    rows = [{**row, "input": row["input"], "task_type": row["task_type"]} for row in TEST_ROWS]
    references = [row["output"] for row in rows]
    encoded = []
    real_encode = SentenceTransformer.encode
    monkeypatch.setattr(SentenceTransformer, "encode",
                        lambda self, texts, **kw: encoded.append(list(texts)) or real_encode(self, texts, **kw))
    reference_embeddings.clear()
    answer_lists = [["Upload it.", "True.", "No."], ["A CSV on the Submit page.", "False. Never.", "Yes, anyone."],
                    ["Upload a CSV file.", "True. A free GPU.", "No. Non-members cannot."]]
    scored = [score_answers(rows, answers, semantic_similarity={"model_path": None, "batch_size": 64},
                            bertscore={"num_layers": 2, "batch_size": 64}) for answers in answer_lists]
    assert encoded.count(references) == 1 and len(encoded) == 1 + len(answer_lists)
    # the same similarity as embedding the references anew for each list
    reference_embeddings.clear()
    for answers, scores in zip(answer_lists, scored):
        fresh = score_answers(rows, answers, semantic_similarity={"model_path": None, "batch_size": 64},
                              bertscore={"num_layers": 2, "batch_size": 64})
        reference_embeddings.clear()
        assert [s["semantic_similarity"] for s in fresh] == [s["semantic_similarity"] for s in scores]


def test_nodes_in_threads_share_the_model_one_run_at_a_time(tiny_gemma_path, tiny_adapter, params):
    """Kedro's ThreadRunner may run both test sets' answer nodes at once on the one shared model."""
    import threading

    evaluate, settings, test_set, base, alone = _answered(tiny_gemma_path, tiny_adapter, params)
    results, errors = [None] * 4, []

    def answer(i):
        try:
            results[i] = answer_fine_tuned(tiny_gemma_path, tiny_adapter, test_set, settings, evaluate, base)
        except Exception as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=answer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert all(r["models"]["fine_tuned"]["rows"] == alone["models"]["fine_tuned"]["rows"] for r in results)
    model = eval_nodes.shared_fine_tuned_model(tiny_gemma_path, tiny_adapter, settings)
    assert not [m for m in model.modules() if "forward" in m.__dict__]  # every linear's own forward restored
    eval_nodes.release_held()
