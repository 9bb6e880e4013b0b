"""Test rows shared by the evaluate tests: one or more of each task type."""

CONTEXT = "Teams can merge before the team merger deadline. Playground competitions are for fun."
ROWS = [
    {"input": CONTEXT, "instruction": "True or False: teams can merge before the deadline.", "output": "True", "chunk_id": "c1", "task_type": "true_false"},
    {"input": CONTEXT, "instruction": "Can teams merge after the deadline?", "output": "No.", "chunk_id": "c1", "task_type": "yes_no"},
    {"input": CONTEXT, "instruction": "What is the main objective of Playground competitions on Kaggle?", "output": "Fun.", "chunk_id": "c2", "task_type": "extractive_qa"},
    {"input": CONTEXT, "instruction": "When can teams merge?", "output": "Before the team merger deadline.", "chunk_id": "c2", "task_type": "extractive_qa"},
    {"input": "", "instruction": "Does the premise entail that merging is allowed?", "output": "Entailment.", "chunk_id": "c3", "task_type": "nli"},
    {"input": CONTEXT, "instruction": "True or False: Playground competitions are serious.", "output": "False", "chunk_id": "c4", "task_type": "true_false"},
]
