"""The local `transformers` teacher, on a tiny random-weight Gemma 3 (real tokenizer, real generate)."""

from __future__ import annotations

from kaggle_qa.pipelines.synthesis.nodes import render_teacher_prompt
from kaggle_qa.pipelines.synthesis.teachers.base import parse_reply
from kaggle_qa.pipelines.synthesis.teachers.transformers_teacher import TransformersTeacher, json_object_text


def test_json_is_taken_out_of_prose_and_code_fences():
    assert json_object_text('Sure! ```json\n{"pairs": []}\n``` Hope it helps.') == '{"pairs": []}'
    assert json_object_text("no json here") == "no json here"


def test_local_model_replies_are_cached_and_garbage_is_reported_not_raised(
    tiny_gemma_path, chunks, params, project_root, tmp_path
):
    recipe = params["versions"]["v3"]
    template = (project_root / "conf/base/prompts/synthesis_v3.txt").read_text()
    prompts = [render_teacher_prompt(template, chunk, recipe) for chunk in chunks[:2]]
    teacher_params = params["transformers"] | {
        "model_source": tiny_gemma_path,
        "max_new_tokens": 8,
        "cache_dir": str(tmp_path / "cache"),
    }
    teacher = TransformersTeacher(teacher_params)
    replies = teacher.complete_all(prompts)
    assert teacher.stats.requests == 2 and 0 < teacher.stats.completion_tokens <= 16
    rows, problems = parse_reply(replies[0], chunks[0], recipe, "transformers:tiny")
    assert rows == [] and problems and problems[0]["reason"].startswith("malformed reply")

    again = TransformersTeacher(teacher_params)
    assert again.complete_all(prompts) == replies
    assert again.stats.cache_hits == 2 and again.stats.requests == 0
    assert again._model is None  # a fully cached run never loads the model
