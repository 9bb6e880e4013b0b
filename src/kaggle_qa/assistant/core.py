"""The assistant: retrieve documentation chunks, answer from them, cite them, or say it can't.

One :class:`Assistant` holds the model, its tokenizer and a :class:`~kaggle_qa.retrieval.Retriever`,
loaded once. For a question it

1. retrieves the ``top_k`` best chunks (``retrieval.method``);
2. if even the most similar chunk is below ``relevance_threshold`` (best dense cosine), or the
   question names a term the docs never use, answers :data:`NOT_COVERED` without calling the model,
   instead of guessing; with a ``lift_threshold``, also when the retrieved context does not raise the
   question's log-probability enough for the model (:mod:`kaggle_qa.context_lift`: a neighbouring
   tool's question the docs merely mention);
3. otherwise renders the one training prompt (:func:`kaggle_qa.prompting.encode_prompt`) with
   the chunks as context, generates (greedily unless a request asks for sampling), and returns
   the answer with a citation (url + heading path) for each chunk it was given.

Generation runs on this process's model, or, with a ``backend``
(:class:`kaggle_qa.assistant.backend.OpenAIBackend`), on any OpenAI-compatible server
(vLLM, SGLang, llama.cpp, another ``kaggle-qa serve``): retrieval, the refusal and the
citations stay here either way.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from kaggle_qa.decoding import repeat_start
from kaggle_qa.domain import Domain, refusal_message
from kaggle_qa.modeling import (
    inference_weights_dtype, load_finetuned_model, load_model, load_tokenizer, read_training_params, resolve_dtype,
)
from kaggle_qa.numerics import computing, packed_linears, packing_dtype
from kaggle_qa.prompting import encode_prompt, fit_context
from kaggle_qa import answer_length
from kaggle_qa.context_lift import context_lift, lift_threshold
from kaggle_qa.retrieval import Retriever, refusal_reason, relevance_threshold

logger = logging.getLogger(__name__)

# With a domain (the `domain` parameters), the refusal names its docs: kaggle_qa.domain.refusal_message.
NOT_COVERED = "The documentation does not cover this question, so I cannot answer it from the docs."


def load_answer_model(base_model: str, adapter: str | None, dtype: str = "auto"):
    """The one place the assistant loads its model: the base, or base + fine-tuned adapter merged
    (into the dequantized NF4 weights a QLoRA adapter was trained on: `modeling.load_finetuned_model`).
    On CPU both keep float32 weights (the fine-tuned model's there; its matmuls compute in `dtype`
    resolved, :mod:`kaggle_qa.numerics`), as evaluate loads them."""
    if adapter:
        return load_finetuned_model(base_model, adapter, dtype=dtype)
    return load_model(base_model, dtype=inference_weights_dtype(dtype)).eval()


def adapter_max_length(adapter: str | None, default: int) -> int:
    """The max_length the adapter was trained with (its training_params.json), else `default`."""
    return int(read_training_params(adapter).get("max_length", default)) if adapter else default


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens: greedy (temperature 0 or None, the default), or sampled; `stop` strings
    end the answer early (not included in it), as OpenAI's API defines them."""

    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return not self.temperature


GREEDY = Sampling()


@dataclass
class Generation:
    """What an engine returns for one prompt."""

    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (max_new_tokens reached)
    prompt_tokens: int
    completion_tokens: int


class StopAtStrings:
    """Cuts a stream of text pieces at the first stop string, holding back a possible prefix of one.

    `feed` returns the text that is safe to show; `stopped` tells whether a stop string was seen.
    """

    def __init__(self, stop: tuple[str, ...], emit: Callable[[str], None] | None):
        self.stop, self.emit = tuple(s for s in stop if s), emit
        self.text, self.shown, self.stopped = "", 0, False
        self.hold = max((len(s) for s in self.stop), default=1) - 1

    def feed(self, piece: str) -> None:
        if self.stopped:
            return
        self.text += piece
        cut = min((i for i in (self.text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped, self.text = True, self.text[:cut]
            self._show(len(self.text))
        else:
            self._show(max(self.shown, len(self.text) - self.hold))

    def finish(self) -> str:
        """The whole text up to (not including) a stop string; the held-back tail is shown now."""
        self._show(len(self.text))
        return self.text

    def _show(self, upto: int) -> None:
        if upto > self.shown:
            if self.emit:
                self.emit(self.text[self.shown : upto])
            self.shown = upto


@dataclass
class Answer:
    """An answer, the chunks it was given (citations) and whether the docs cover the question."""

    question: str
    answer: str
    citations: list[dict] = field(default_factory=list)
    covered: bool = True
    relevance: float = 0.0
    lift: float | None = None  # the context lift (kaggle_qa.context_lift), when the assistant checks it
    finish_reason: str = "stop"  # "length" when the answer hit max_new_tokens
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    def sources_text(self) -> str:
        """Citations as text lines: "[1] url › heading › path"."""
        return "\n".join(
            f"[{n}] {c['url']} › {' › '.join(c['heading_path'])}" for n, c in enumerate(self.citations, start=1)
        )

    def text_with_sources(self) -> str:
        """The answer followed by its sources, as a chat message shows it."""
        return f"{self.answer}\n\nSources:\n{self.sources_text()}" if self.citations else self.answer


def citations(hits: list[dict]) -> list[dict]:
    """One citation per section (url + heading path) among the chunks used, best match first.

    A long section is split into several chunks; citing it once per chunk would repeat it.
    """
    cited: dict[tuple, dict] = {}
    for hit in hits:
        key = (hit["url"], tuple(hit.get("heading_path") or []))
        if key not in cited:
            cited[key] = {
                "url": hit["url"],
                "title": hit.get("title", ""),
                "heading_path": list(key[1]),
                "chunk_ids": [],
                "score": round(hit["score"], 4),
            }
        cited[key]["chunk_ids"].append(hit["chunk_id"])
    return list(cited.values())


class _Cancelled:
    """A stopping criterion that ends generation when `event` is set (client went away)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _StopText:
    """A stopping criterion that ends generation once the answer's text contains a stop string."""

    def __init__(self, tokenizer, prompt_length: int, stop: tuple[str, ...]):
        self.tokenizer, self.prompt_length, self.stop = tokenizer, prompt_length, stop

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        text = self.tokenizer.decode(input_ids[0, self.prompt_length :], skip_special_tokens=True)
        hit = any(s in text for s in self.stop)
        return torch.full((input_ids.shape[0],), hit, dtype=torch.bool, device=input_ids.device)


class Assistant:
    """A causal LM answering from retrieved documentation chunks (see module docstring)."""

    def __init__(
        self,
        model,
        tokenizer,
        retriever: Retriever,
        *,
        method: str = "bm25",
        top_k: int = 3,
        relevance_threshold: float = 0.0,
        max_unknown_terms: int | None = None,
        lift_threshold: float | None = None,
        max_new_tokens: int = 128,
        max_length: int = 512,
        name: str = "kaggle-qa",
        domain: Domain | None = None,
        backend=None,
        compute_dtype: str = "float32",
    ):
        if max_new_tokens >= max_length:
            raise ValueError(f"max_new_tokens ({max_new_tokens}) must be below max_length ({max_length})")
        self.model, self.tokenizer, self.retriever = model, tokenizer, retriever
        self.method, self.top_k, self.relevance_threshold = method, top_k, relevance_threshold
        self.max_unknown_terms, self.lift_threshold = max_unknown_terms, lift_threshold
        if lift_threshold is not None and model is None:
            logger.warning("the context-lift check (threshold %.3f) needs the model in this process; with a generation "
                           "backend only relevance and unknown terms decide refusals", lift_threshold)
        self.max_new_tokens, self.max_length, self.name = max_new_tokens, max_length, name
        self.domain = domain
        self.not_covered = refusal_message(domain) if domain else NOT_COVERED
        self.backend = backend  # an OpenAI-compatible server generating for us; None: `model` here
        # evaluate's numerics (kaggle_qa.numerics): matmuls in compute_dtype, linears prepacked once for the
        # assistant's life (close() restores them)
        self.compute_dtype = compute_dtype
        self._packing = contextlib.ExitStack()
        if model is not None:
            self._packing.enter_context(packed_linears(model, packing_dtype(model, compute_dtype)))

    def close(self) -> None:
        """Restore the model's own linear layers (the prepacked copies are freed)."""
        self._packing.close()

    @classmethod
    def load(
        cls, base_model: str, adapter: str | None, index: dict, retrieval: dict, assistant: dict, domain: Domain | None = None,
        *, retrieval_metrics: dict | None = None, training_params: dict | None = None, backend=None,
    ) -> Assistant:
        """Model, tokenizer and retriever from catalog values and the `retrieval` / `assistant` parameters.

        The refusal threshold is `retrieval.relevance_threshold` when set, else the one the evaluation
        calibrated on this site (`retrieval_metrics`); max_length and max_new_tokens come from what
        training recorded (`training_params`, else the adapter's training_params.json: its answer
        lengths, :mod:`kaggle_qa.answer_length`) unless `assistant.max_length` / `max_new_tokens` are set."""
        trained = training_params if training_params is not None else (read_training_params(adapter) if adapter else {})
        max_length = assistant.get("max_length") or int(trained.get("max_length", 512))
        return cls(
            None if backend is not None else load_answer_model(base_model, adapter, assistant.get("dtype", "auto")),
            load_tokenizer(base_model),
            Retriever(index, rrf_k=retrieval["rrf_k"], batch_size=retrieval["batch_size"]),
            method=retrieval["method"],
            top_k=retrieval["top_k"],
            # without the model here (a backend generates) the lift cannot be checked: relevance alone decides
            relevance_threshold=relevance_threshold(retrieval, retrieval_metrics, with_lift=backend is None),
            max_unknown_terms=retrieval.get("max_unknown_terms"),
            lift_threshold=lift_threshold(retrieval, retrieval_metrics),
            max_new_tokens=answer_length.max_new_tokens(
                trained, assistant.get("max_new_tokens"), max_length,
                f"adapter {adapter}" if adapter else "the base model alone (no adapter recorded answer lengths)"),
            max_length=max_length,
            name=assistant.get("model_name") or "kaggle-qa",
            domain=domain,
            backend=backend,
            compute_dtype=resolve_dtype(assistant.get("dtype", "auto")),
        )

    def prompt_ids(self, question: str, hits: list[dict], max_new_tokens: int) -> list[int]:
        """BOS + the training prompt with the chunks fitted to leave room for the answer (the
        lowest-ranked chunk is cut first, :func:`kaggle_qa.prompting.fit_context`); a question too
        long by itself keeps its end."""
        budget = self.max_length - max_new_tokens
        context = fit_context(self.tokenizer, [hit["text"] for hit in hits], question, budget)
        ids = encode_prompt(self.tokenizer, context, question)
        if len(ids) > budget:
            keep_head = 1 if self.tokenizer.bos_token_id is not None else 0
            ids = ids[:keep_head] + ids[len(ids) - budget + keep_head :]
        return ids

    def context_lift(self, question: str, hits: list[dict]) -> float:
        """The model's context lift for `question` with `hits` fitted as the evaluation fitted them (the prompt
        budget of the default answer length, whatever a request asks), which is where its threshold was chosen."""
        context = fit_context(self.tokenizer, [hit["text"] for hit in hits], question,
                              self.max_length - self.max_new_tokens)
        return context_lift(self.model, self.tokenizer, context, question, self.compute_dtype)

    def ask(
        self,
        question: str,
        *,
        max_new_tokens: int | None = None,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        sampling: Sampling = GREEDY,
    ) -> Answer:
        """Answer one question; `on_text` receives the answer piece by piece as it is generated.

        Setting `cancel` stops generation at the next token (the partial answer is returned).
        """
        question = question.strip()
        if not question:
            raise ValueError("the question is empty")
        retrieval = self.retriever.retrieve(question, self.top_k, self.method)
        reason = refusal_reason(retrieval, self.relevance_threshold, self.max_unknown_terms)
        lift = None
        if reason is None and self.lift_threshold is not None and self.model is not None:
            lift = self.context_lift(question, retrieval.hits)
            reason = refusal_reason(retrieval, self.relevance_threshold, self.max_unknown_terms, lift, self.lift_threshold)
        if reason:
            logger.info("Not covered (%s): %s", reason, question)
            if on_text:
                on_text(self.not_covered)
            return Answer(question, self.not_covered, [], covered=False, relevance=retrieval.relevance, lift=lift)
        max_new_tokens = max_new_tokens or self.max_new_tokens
        prompt = self.prompt_ids(question, retrieval.hits, max_new_tokens)
        generated = self.generate(prompt, max_new_tokens, on_text=on_text, cancel=cancel, sampling=sampling)
        return Answer(
            question,
            generated.text.strip(),
            citations(retrieval.hits),
            covered=True,
            relevance=retrieval.relevance,
            lift=lift,
            finish_reason=generated.finish_reason,
            prompt_tokens=generated.prompt_tokens,
            completion_tokens=generated.completion_tokens,
        )

    def generate(
        self,
        prompt: list[int],
        max_new_tokens: int,
        *,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        sampling: Sampling = GREEDY,
    ) -> Generation:
        """The engine: continue `prompt` (token ids, BOS first) on the backend server if there is
        one, else on this process's model. No retrieval here: `/v1/completions` serves this."""
        stops = StopAtStrings(sampling.stop, on_text)
        streamed = stops.feed if on_text else None
        if self.backend is not None:
            body = prompt[1:] if prompt and prompt[0] == self.tokenizer.bos_token_id else prompt
            generated = self.backend.complete(self.tokenizer.decode(body), max_new_tokens, sampling,
                                              on_text=streamed, cancel=cancel)
            if generated.completion_tokens == 0 and generated.text:  # the server gave no usage
                generated.completion_tokens = len(self.tokenizer(generated.text, add_special_tokens=False)["input_ids"])
            generated.prompt_tokens = generated.prompt_tokens or len(prompt)
        else:
            new_tokens = self._generate(prompt, max_new_tokens, streamed, cancel, sampling)
            stopped = self.tokenizer.eos_token_id in new_tokens
            if stopped:
                new_tokens = new_tokens[: new_tokens.index(self.tokenizer.eos_token_id)]
            elif (start := repeat_start(new_tokens)) is not None:  # a loop: its second copy is dropped
                new_tokens, stopped = new_tokens[:start], True
            text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
            reason = "stop" if stopped or len(new_tokens) < max_new_tokens else "length"
            generated = Generation(text, reason, len(prompt), len(new_tokens))
        if not on_text:
            stops.feed(generated.text)
        generated.text = stops.finish()
        if stops.stopped:
            generated.finish_reason = "stop"
        return generated

    @torch.inference_mode()
    def _generate(self, prompt: list[int], max_new_tokens: int, on_text, cancel, sampling: Sampling) -> list[int]:
        """New token ids (EOS included when reached), streamed to `on_text` as text."""
        from transformers import LogitsProcessorList, StoppingCriteriaList, TextStreamer

        from kaggle_qa.decoding import lead_in_logits_processor, repeat_stopping_criterion

        class _Streamer(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text and on_text:
                    on_text(text)

        device = next(self.model.parameters()).device
        ids = torch.tensor([prompt], device=device)
        how: dict = {"do_sample": False}
        if not sampling.greedy:
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            how = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p or 1.0, "top_k": 0}
        criteria = [repeat_stopping_criterion(ids.shape[1])]  # an answer never loops: kaggle_qa.decoding
        if cancel is not None:
            criteria.append(_Cancelled(cancel))
        if sampling.stop:  # cheaper than generate(stop_strings=...), which indexes the whole vocabulary per request
            criteria.append(_StopText(self.tokenizer, ids.shape[1], sampling.stop))
        with computing(self.model, self.compute_dtype):  # evaluate's numerics (kaggle_qa.numerics)
            output = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
                streamer=_Streamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True) if on_text else None,
                stopping_criteria=StoppingCriteriaList(criteria),
                # an answer never ends on a lead-in ("… with the `multiple` flag:"): kaggle_qa.decoding
                logits_processor=LogitsProcessorList([lead_in_logits_processor(self.tokenizer, ids.shape[1])]),
                **how,
            )
        return output[0, ids.shape[1] :].tolist()
