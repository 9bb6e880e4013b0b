"""Semantic similarity: cosine of sentence embeddings (all-MiniLM-L6-v2, local files only).

Empty answers or references are scored by the rule of :mod:`kaggle_qa.metrics.empty`.
"""

import datasets
import evaluate

from kaggle_qa.metrics.empty import empty_counts, score_pairs
from kaggle_qa.metrics.reference_embeddings import encode, encode_references


class SemanticSimilarity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=(
                "Cosine similarity between sentence-transformers embeddings of each prediction "
                "and its reference (-1..1; paraphrases ~0.8-0.97, unrelated ~0)."
            ),
            citation="Reimers & Gurevych, Sentence-BERT, EMNLP 2019.",
            inputs_description="predictions, references: lists of strings; model_path: local folder.",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, model_path=None, batch_size=64):
        def cosine(ps, rs):  # the references' embeddings are computed once per process (same list, same tensor)
            return (encode(ps, model_path, batch_size) * encode_references(rs, model_path, batch_size)).sum(
                dim=-1).float().tolist()

        scores = score_pairs(predictions, references, cosine)
        return {
            "semantic_similarity": sum(scores) / len(scores) if scores else 0.0,
            **empty_counts(predictions, references),
            "per_item": {"semantic_similarity": scores},
        }
