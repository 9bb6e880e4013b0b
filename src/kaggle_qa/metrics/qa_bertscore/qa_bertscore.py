"""BERTScore (precision/recall/F1) with a local encoder, by default all-MiniLM-L6-v2."""

import datasets
import evaluate

from kaggle_qa.retrieval import default_encoder_path


class QaBertscore(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="BERTScore F1 (greedy token matching of contextual embeddings), no baseline rescaling.",
            citation="Zhang et al., BERTScore: Evaluating Text Generation with BERT, ICLR 2020.",
            inputs_description="predictions, references: lists of strings; model_path: local folder.",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, model_path=None, num_layers=6, batch_size=64):
        import bert_score

        if not predictions:
            return {"bertscore_f1": 0.0, "per_item": {"bertscore_f1": []}}
        precision, recall, f1 = bert_score.score(
            list(predictions),
            list(references),
            model_type=str(model_path or default_encoder_path()),
            num_layers=num_layers,
            batch_size=batch_size,
            device="cpu",
        )
        return {
            "bertscore_precision": precision.mean().item(),
            "bertscore_recall": recall.mean().item(),
            "bertscore_f1": f1.mean().item(),
            "per_item": {"bertscore_f1": f1.tolist()},
        }
