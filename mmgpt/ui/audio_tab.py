"""The Microphone tab: record or upload speech, watch the transcript stream out over its spectrogram, and have a
text model reply to it."""

from __future__ import annotations

import gradio as gr

from mmgpt import figures, inputs, overlays
from mmgpt.engine import AudioRequest, TextRequest
from mmgpt.inputs import InputError

from .common import (
    I18N,
    PICKS,
    SKIP_MAPS,
    Page,
    TabHandlers,
    curve_picture,
    examples,
    first_content_word,
    hold_while_recording,
    no_maps,
    picked_item,
    preset_dropdown,
    stats_box,
    stream_text,
    warn,
    word_picker,
)


class AudioHandlers(TabHandlers):
    def transcribe(self, audio, preset, show_maps=True, lang=""):
        """Transcribe a recording: (transcript so far, stats, spectrogram, word choices, attention curves).

        With `show_maps`, the last update draws under the spectrogram when the model listened for the first
        content word, and offers every word for the same (one forward pass after the transcript)."""
        preset = self.check_preset("audio", preset)
        clip = inputs.load_audio(audio)
        warn(clip.notes, lang)
        params = self.engine.preset(preset).params()
        request = AudioRequest(clip.waveform)
        # The picture is drawn once the transcript is done: drawing it first would delay the first words, and
        # drawing it meanwhile would slow them down (it shares the CPU and the GIL with decoding).
        text, stats, last = yield from stream_text(self.engine, preset, request, params, lang, *SKIP_MAPS,
                                                   first=no_maps())
        explanation = self.explain(preset, request, text, show_maps, last, params, lang)
        curves = explanation and explanation.audio_curves
        if not curves:
            _, words, kept = no_maps()
            yield (text, stats, figures.spectrogram_image(clip.waveform), words, kept)
            return
        word = first_content_word(curves)
        kept = [(c.word, c.weights, c.seconds_per_step) for c in curves]
        yield (text, stats, curve_picture(clip.waveform, kept[word]),
               gr.update(choices=overlays.word_choices(curves), value=word), kept)

    def audio_word(self, audio, word, curves, lang=""):
        """The spectrogram with the chosen transcript word's attention over time under it."""
        if (picked := picked_item(curves, word)) is None:
            yield gr.skip()
            return
        yield curve_picture(inputs.load_audio(audio).waveform, picked)

    def reply(self, transcript, preset, lang=""):
        """Answer a transcript with a text model: (reply so far, stats)."""
        preset = self.check_preset("text", preset)
        if not isinstance(transcript, str) or not transcript.strip():
            raise InputError("reply_needs_transcript")
        text, notes = inputs.clean_prompt(transcript)
        warn(notes, lang)
        tasks = self.engine.preset(preset).text_tasks
        request = TextRequest(text, task="chat" if "chat" in tasks else "continue")
        yield from stream_text(self.engine, preset, request, self.engine.preset(preset).params(), lang)


def build(handlers: AudioHandlers, page: Page):
    """The tab's layout and events; call inside the page's `gr.Blocks`."""
    with gr.Tab(I18N("tab_microphone")):
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["microphone", "upload"], type="filepath", label=I18N("audio_input"))
                audio_preset = preset_dropdown(handlers, "audio")
                with gr.Row():
                    transcribe = gr.Button(I18N("transcribe"), variant="primary")
                    audio_stop = gr.Button(I18N("stop"), variant="stop")
            with gr.Column():
                transcript = gr.Textbox(label=I18N("transcript"), lines=4, interactive=False, buttons=["copy"])
                audio_stats = stats_box()
        spectrogram = gr.Image(label=I18N("spectrogram"), type="pil", interactive=False, format="png")
        audio_words = word_picker()
        audio_curves = gr.State(None)  # [(word, weights over time, seconds per step)] of the last transcript
        if audio_examples := examples("*.wav"):
            gr.Examples(audio_examples, inputs=[audio], label=I18N("examples"), cache_examples=False)
        with gr.Row():
            with gr.Column():
                reply_preset = preset_dropdown(handlers, "text", "reply_model")
                with gr.Row():
                    reply = gr.Button(I18N("reply"), variant="primary")
                    reply_stop = gr.Button(I18N("stop"), variant="stop")
            with gr.Column():
                reply_output = gr.Textbox(label=I18N("reply_output"), lines=4, interactive=False, buttons=["copy"])
                reply_stats = stats_box()

    transcribe_event = transcribe.click(page.model_handler(handlers.transcribe),
                                        [audio, audio_preset, page.show_maps, page.lang],
                                        [transcript, audio_stats, spectrogram, audio_words, audio_curves],
                                        api_name="transcribe", **page.events)
    reply_event = reply.click(page.model_handler(handlers.reply), [transcript, reply_preset, page.lang],
                              [reply_output, reply_stats], api_name="reply", **page.events)
    audio_words.input(page.errors(handlers.audio_word), [audio, audio_words, audio_curves, page.lang], spectrogram,
                      js=page.events["js"], **PICKS)
    audio_stop.click(None, None, None, cancels=[transcribe_event])
    # Another recording (or none): the transcript and its maps belonged to the last one.
    audio.change(lambda: ("", "", *no_maps()), None,
                 [transcript, audio_stats, spectrogram, audio_words, audio_curves], queue=False,
                 api_visibility="private")
    hold_while_recording(audio, transcribe)
    reply_stop.click(None, None, None, cancels=[reply_event])
