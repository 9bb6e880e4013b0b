"""kaggle-qa: crawl a docs site, synthesize QA data, QLoRA-train Gemma, evaluate it."""

__version__ = "0.1.0"
