"""BLEU (sacrebleu): corpus BLEU over all answers, plus sentence BLEU per answer (0-100)."""

import datasets
import evaluate
import sacrebleu


class QaBleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="sacrebleu corpus BLEU (one reference per prediction) and per-answer sentence BLEU.",
            citation="Post, A Call for Clarity in Reporting BLEU Scores, WMT 2018.",
            inputs_description="predictions, references: lists of strings.",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        corpus = sacrebleu.corpus_bleu(list(predictions), [list(references)])
        per_item = [
            sacrebleu.sentence_bleu(prediction, [reference]).score
            for prediction, reference in zip(predictions, references)
        ]
        return {"bleu": corpus.score, "per_item": {"sentence_bleu": per_item}}
