"""The Image tab: show it a picture and watch a description stream out, with where the model looked per word."""

from __future__ import annotations

import gradio as gr

from mmgpt import inputs, overlays
from mmgpt.engine import ImageRequest
from mmgpt.inputs import Message

from .common import (
    I18N,
    PICKS,
    SKIP_MAPS,
    Page,
    TabHandlers,
    examples,
    first_content_word,
    picked_item,
    preset_dropdown,
    stats_box,
    stream_text,
    warn,
    word_picker,
)

MAX_CAPTION_PROMPT_CHARS = 200  # the optional start of a caption


class ImageHandlers(TabHandlers):
    def caption(self, image, prompt, preset, show_maps=True, lang=""):
        """Describe a picture: (description so far, stats, heatmap, word choices, maps).

        With `show_maps`, the last update adds where the model looked for each word (one forward pass after the
        description has streamed) and the heatmap of its first content word."""
        preset = self.check_preset("image", preset)
        notes: list[Message] = []
        picture = inputs.load_image(image, notes)
        start, prompt_notes = inputs.clean_prompt(prompt, MAX_CAPTION_PROMPT_CHARS, required=False)
        warn(notes + prompt_notes, lang)
        params = self.engine.preset(preset).params()
        request = ImageRequest(picture, start)
        text, stats, token_ids = yield from stream_text(self.engine, preset, request, params, lang, *SKIP_MAPS)
        explanation = self.explain(preset, request, text, show_maps, token_ids)
        maps = explanation and explanation.image_maps
        if not maps:
            yield (text, stats, None, gr.update(choices=[], value=None), None)
            return
        word = first_content_word(maps)
        yield (text, stats, overlays.heatmap_overlay(picture, maps[word].grid),
               gr.update(choices=overlays.word_choices(maps), value=word), [(m.word, m.grid) for m in maps])

    def image_word(self, image, word, maps):
        """The heatmap of the chosen word of the description, over the picture."""
        if (picked := picked_item(maps, word)) is None:
            yield None
            return
        yield overlays.heatmap_overlay(inputs.load_image(image, []), picked[1])


def build(handlers: ImageHandlers, page: Page):
    """The tab's layout and events; call inside the page's `gr.Blocks`."""
    with gr.Tab(I18N("tab_image")):
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", sources=["upload", "webcam", "clipboard"],
                                 label=I18N("image_input"), height=320)
                image_prompt = gr.Textbox(value="", label=I18N("image_prompt"), max_lines=1,
                                          placeholder=I18N("image_prompt_placeholder"))
                image_preset = preset_dropdown(handlers, "image")
                with gr.Row():
                    describe = gr.Button(I18N("describe"), variant="primary")
                    image_stop = gr.Button(I18N("stop"), variant="stop")
            with gr.Column():
                description = gr.Textbox(label=I18N("description"), lines=6, interactive=False, buttons=["copy"])
                image_stats = stats_box()
                image_words = word_picker()
                heatmap = gr.Image(label=I18N("heatmap"), type="pil", interactive=False, format="png", height=256)
                image_maps = gr.State(None)  # [(word, patch grid)] of the last description
        if image_examples := examples("*.png"):
            gr.Examples(image_examples, inputs=[image], label=I18N("examples"), cache_examples=False)

    caption_event = describe.click(page.model_handler(handlers.caption),
                                   [image, image_prompt, image_preset, page.show_maps, page.lang],
                                   [description, image_stats, heatmap, image_words, image_maps],
                                   api_name="caption", **page.events)
    image_words.input(page.errors(handlers.image_word), [image, image_words, image_maps], heatmap, **PICKS)
    image_stop.click(None, None, None, cancels=[caption_event])

