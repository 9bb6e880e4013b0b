"""Semantic similarity: cosine of sentence embeddings (all-MiniLM-L6-v2, local files only)."""

import datasets
import evaluate

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
        model = load_sentence_encoder(str(model_path) if model_path else None)
        encode = dict(batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True)
        predicted = model.encode(list(predictions), **encode)
        expected = model.encode(list(references), **encode)
        cosine = (predicted * expected).sum(dim=-1).float().tolist() if len(predictions) else []
        return {
            "semantic_similarity": sum(cosine) / len(cosine) if cosine else 0.0,
            "per_item": {"semantic_similarity": cosine},
        }
