"""Optional LLM-as-judge: an OpenAI-compatible chat endpoint grades each answer from 1 to 5.

Used only when ``evaluate.judge.base_url`` is set. The API key comes from the environment
variable named by ``api_key_env`` (or a conf/local credentials override of it) and is
never logged or saved. A reply without a readable score gives ``None`` for that answer
(counted in the metrics as ``judge_unscored``), never an exception.
"""

from __future__ import annotations

import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

JUDGE_PROMPT = """Grade a candidate answer to a question about a documentation passage.

Passage:
\"\"\"
{context}
\"\"\"

Question: {question}
Reference answer: {reference}
Candidate answer: {answer}

Score 1-5: 5 = correct, complete and supported by the passage; 3 = partly correct or padded
with unsupported claims; 1 = wrong, off-topic or invented. Reply with one JSON object only:
{{"score": <1-5>, "reason": "<one sentence>"}}"""


def parse_score(content: str | None) -> int | None:
    """The 1-5 score in a judge reply (JSON `score`, else the first digit 1-5), or None."""
    if not content:
        return None
    try:
        score = json.loads(content).get("score")
        if isinstance(score, (int, float)) and 1 <= score <= 5:
            return int(score)
    except (json.JSONDecodeError, AttributeError):
        pass
    match = re.search(r"\b([1-5])\b", content)
    return int(match.group(1)) if match else None


def judge_answers(answers: list[str], rows: list[dict], settings: dict, label: str) -> list[int | None]:
    """Scores (1-5 or None) of `answers` to the questions in `rows`, from the configured judge."""
    import openai

    client = openai.OpenAI(
        base_url=settings["base_url"],
        api_key=os.environ.get(settings["api_key_env"]) or "not-needed",
        timeout=settings["timeout_s"],
        max_retries=settings["max_retries"],
    )

    def grade(pair) -> int | None:
        answer, row = pair
        prompt = JUDGE_PROMPT.format(
            context=row["input"], question=row["instruction"], reference=row["output"], answer=answer
        )
        try:
            reply = client.chat.completions.create(
                model=settings["model"],
                messages=[{"role": "user", "content": prompt}],
                temperature=0,
                max_tokens=settings["max_tokens"],
            )
        except openai.APIError as exc:
            logger.warning("judge request failed (%s): answer left unscored", type(exc).__name__)
            return None
        return parse_score(reply.choices[0].message.content)

    with ThreadPoolExecutor(max_workers=settings["concurrency"]) as pool:
        return list(tqdm(pool.map(grade, zip(answers, rows)), total=len(rows), desc=f"judge ({label})"))
