"""Semantic similarity: cosine of sentence embeddings (all-MiniLM-L6-v2, local files only).

Empty answers or references are scored by the rule of :mod:`kaggle_qa.metrics.empty`.
"""

import datasets
import evaluate

from kaggle_qa.metrics.empty import empty_counts, score_pairs
from kaggle_qa.retrieval import load_sentence_encoder


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
        def cosine(ps, rs):
            model = load_sentence_encoder(str(model_path) if model_path else None)
            encode = dict(batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True)
            return (model.encode(ps, **encode) * model.encode(rs, **encode)).sum(dim=-1).float().tolist()

        scores = score_pairs(predictions, references, cosine)
        return {
            "semantic_similarity": sum(scores) / len(scores) if scores else 0.0,
            **empty_counts(predictions, references),
            "per_item": {"semantic_similarity": scores},
        }
