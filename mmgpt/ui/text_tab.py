"""The Text tab: continue a prompt, or chat, summarize, translate and answer with an instruction-tuned model, with
how sure the model was of each token."""

from __future__ import annotations

import secrets

import gradio as gr

from mmgpt import inputs, overlays
from mmgpt.engine import GenerationParams, TextRequest
from mmgpt.i18n import translate
from mmgpt.inputs import InputError
from mmgpt.requests import MAX_NEW_TOKENS_LIMIT, MAX_REPETITION_PENALTY, MAX_SEED, MAX_TEMPERATURE, MAX_TOP_K

from .common import I18N, Page, TabHandlers, picked_item, preset_dropdown, stats_box, stream_text, warn

MAX_LANGUAGE_CHARS = 40
MAX_NEW_TOKENS_SLIDER = MAX_NEW_TOKENS_LIMIT // 4  # the settings slider's end; a crafted call may ask up to the limit
TEXT_TASK_KEYS = {"continue": "task_continue", "chat": "task_chat", "summarize": "task_summarize",
                  "translate": "task_translate", "answer": "task_answer"}


class TextHandlers(TabHandlers):
    def generate(self, prompt, task, target_language, context, preset, max_new_tokens, temperature, top_p, top_k,
                 repetition_penalty, seed, show_maps=True, lang=""):
        """Continue, chat, summarize, translate or answer: (output so far, stats, token confidences, alternatives).

        With `show_maps`, the last update colours each token by the probability the model gave it and keeps
        its top 5 alternatives for when one is selected (one forward pass after the output)."""
        preset = self.check_preset("text", preset)
        task = inputs.check_choice(task, list(TEXT_TASK_KEYS), "task_unknown")
        text_tasks = self.engine.preset(preset).text_tasks
        if task not in text_tasks:
            instruct = [p.name for p in self.presets("text") if task in p.text_tasks]
            raise InputError("task_needs_instruct", task=translate(TEXT_TASK_KEYS[task], lang), preset=preset,
                             instruct=" / ".join(instruct) or "an instruction-tuned model")
        text, notes = inputs.clean_prompt(prompt)
        language, language_notes = inputs.clean_prompt(target_language, MAX_LANGUAGE_CHARS, required=False)
        passage, context_notes = inputs.clean_prompt(context, required=False)
        warn(notes + language_notes + context_notes, lang)
        params = self.settings(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed)
        request = TextRequest(text, task=task, target_language=language or "French", context=passage)
        # the confidences come after the stream; the last output's go when this one starts
        output, stats, last = yield from stream_text(self.engine, preset, request, params, lang, gr.skip(),
                                                     gr.skip(), first=(None, None))
        explanation = self.explain(preset, request, output, show_maps, last, params, lang)
        tokens = explanation and explanation.tokens
        if not tokens:
            yield output, stats, None, None
            return
        yield output, stats, overlays.confidence_spans(tokens), [overlays.alternatives(t) for t in tokens]

    def answer_length(self, preset) -> int:
        """The model's own max_new_tokens (its preset's defaults, which the other tabs use), for the slider; the
        engine's default for no model or an unknown one."""
        known = preset in [p.name for p in self.presets("text")]
        params = self.engine.preset(preset).params() if known else GenerationParams()
        return min(params.max_new_tokens, MAX_NEW_TOKENS_SLIDER)

    @staticmethod
    def token_alternatives(alternatives, evt: gr.SelectData):
        """The selected token's top 5 alternatives with their probabilities."""
        return picked_item(alternatives, evt.index)

    @staticmethod
    def settings(max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed) -> GenerationParams:
        """GenerationParams from the sliders (or a crafted API call); a blank seed draws one when sampling."""
        values = dict(
            max_new_tokens=inputs.parse_number(max_new_tokens, "max_new_tokens", integer=True),
            temperature=inputs.parse_number(temperature, "temperature"),
            top_p=inputs.parse_number(top_p, "top_p"),
            top_k=inputs.parse_number(top_k, "top_k", integer=True),
            repetition_penalty=inputs.parse_number(repetition_penalty, "repetition_penalty"),
            seed=inputs.parse_number(seed, "seed", integer=True, optional=True),
        )
        if values["seed"] is None and values["temperature"] > 0:
            values["seed"] = secrets.randbelow(MAX_SEED)  # shown in the stats line, so the text can be had again
        try:
            return GenerationParams(**values)
        except ValueError as exc:
            raise InputError("settings_invalid", detail=str(exc)) from None


def _task_fields(task: str):
    """Show the target language for Translate and the context for Answer."""
    return gr.update(visible=task == "translate"), gr.update(visible=task == "answer")


def build(handlers: TextHandlers, page: Page):
    """The tab's layout and events; call inside the page's `gr.Blocks`."""
    with gr.Tab(I18N("tab_text")):
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox(label=I18N("prompt"), placeholder=I18N("prompt_placeholder"), lines=5)
                task = gr.Radio([(I18N(key), name) for name, key in TEXT_TASK_KEYS.items()], value="continue",
                                label=I18N("task"), info=I18N("task_info"))
                target_language = gr.Textbox(value="French", label=I18N("target_language"), max_lines=1,
                                             visible=False)
                context = gr.Textbox(value="", label=I18N("context"), lines=2, visible=False)
                text_preset = preset_dropdown(handlers, "text")
                with gr.Accordion(I18N("settings"), open=False):
                    max_new_tokens = gr.Slider(1, MAX_NEW_TOKENS_SLIDER, step=1, label=I18N("max_new_tokens"),
                                               value=handlers.answer_length(text_preset.value))
                    temperature = gr.Slider(0.0, MAX_TEMPERATURE, value=0.0, step=0.05, label=I18N("temperature"))
                    top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label=I18N("top_p"))
                    top_k = gr.Slider(0, min(MAX_TOP_K, 200), value=0, step=1, label=I18N("top_k"))
                    repetition_penalty = gr.Slider(1.0, MAX_REPETITION_PENALTY, value=1.0, step=0.05,
                                                   label=I18N("repetition_penalty"))
                    seed = gr.Number(value=None, precision=0, minimum=0, maximum=MAX_SEED, label=I18N("seed"))
                with gr.Row():
                    generate = gr.Button(I18N("generate"), variant="primary")
                    text_stop = gr.Button(I18N("stop"), variant="stop")
            with gr.Column():
                output = gr.Textbox(label=I18N("output"), lines=12, interactive=False, buttons=["copy"])
                text_stats = stats_box()
                confidence = gr.HighlightedText(label=I18N("confidence"), color_map=overlays.CONFIDENCE_COLOURS,
                                                combine_adjacent=False, show_legend=True)
                alternatives = gr.Label(num_top_classes=overlays.TOP_ALTERNATIVES, label=I18N("alternatives"))
                token_alternatives = gr.State(None)  # [{token: probability}] per token of the last output

    generate_event = generate.click(
        page.model_handler(handlers.generate),
        [prompt, task, target_language, context, text_preset, max_new_tokens, temperature, top_p, top_k,
         repetition_penalty, seed, page.show_maps, page.lang],
        [output, text_stats, confidence, token_alternatives], api_name="generate", **page.events,
    )
    confidence.select(handlers.token_alternatives, token_alternatives, alternatives, queue=False,
                      api_visibility="private")
    task.change(_task_fields, task, [target_language, context], queue=False, api_visibility="private")
    text_preset.change(handlers.answer_length, text_preset, max_new_tokens, queue=False, api_visibility="private")
    text_stop.click(None, None, None, cancels=[generate_event])
