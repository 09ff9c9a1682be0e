"""The Image tab: show it a picture and watch a description stream out, or ask about the picture in a chat, typing
or speaking the question; with where the model looked for each word, and answers read aloud."""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass

import gradio as gr

from mmgpt import inputs, overlays, read_aloud
from mmgpt.engine import AskRequest, AudioRequest, GenerationParams, HeardQuestionRequest, ImageRequest, StreamUpdate
from mmgpt.i18n import translate
from mmgpt.inputs import SPOKEN_MARK, InputError, Message
from mmgpt.presets import Preset, default_ask_preset

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
    relay,
    stats_box,
    stream_text,
    warn,
    word_picker,
)
from .shown_pictures import ShownPictures

MAX_CAPTION_PROMPT_CHARS = 200  # the optional start of a caption
HEARD_PLACEHOLDER = "…"  # the user's turn while a spoken question is being transcribed


@dataclass(frozen=True)
class AnswerMaps:
    """What the last description or answer keeps for the word picker (a gr.State; no model runs on a pick)."""

    maps: list  # [(word, patch grid)] over the picture
    curves: list | None = None  # [(word, weights over time, seconds per step)] over a spoken question
    recording: dict | None = None  # the spoken question's upload ({"path": ...}), to draw its spectrogram again


class ImageHandlers(TabHandlers):
    def __init__(self, engine):
        super().__init__(engine)
        self.shown_pictures = ShownPictures()  # per open page: a description or answer about an old picture stops

    def caption(self, image, prompt, preset, show_maps=True, lang="", request: gr.Request | None = None):
        """Describe a picture: (description so far, stats, heatmap, word choices, maps).

        With `show_maps`, the last update adds where the model looked for each word (one forward pass after the
        description has streamed) and the heatmap of its first content word. A description the model was unsure of
        (its preset's `unsure_description_below`) is said to be a guess. It stops if the page shows another picture
        meanwhile."""
        yield from self._while_shown(request, image, self._describe(image, prompt, preset, show_maps, lang),
                                     ("", "", *no_maps()))

    def _describe(self, image, prompt, preset, show_maps, lang):
        preset = self.check_preset("image", preset)
        notes: list[Message] = []
        picture = inputs.load_image(image, notes)
        start, prompt_notes = inputs.clean_prompt(prompt, MAX_CAPTION_PROMPT_CHARS, required=False)
        warn(notes + prompt_notes, lang)
        params = self.engine.preset(preset).params()
        request = ImageRequest(picture, start)
        text, stats, last = yield from stream_text(self.engine, preset, request, params, lang, *SKIP_MAPS,
                                                   first=no_maps())
        if _unsure(last, self.engine.preset(preset).unsure_description_below):
            warn([Message("description_unsure", percent=f"{100 * last.confidence:.0f}")], lang)
        explanation = self.explain(preset, request, text, show_maps, last, params, lang)
        maps = explanation and explanation.image_maps
        if not maps:
            yield (text, stats, *no_maps())
            return
        word = first_content_word(maps)
        yield (text, stats, overlays.heatmap_overlay(picture, maps[word].grid),
               gr.update(choices=overlays.word_choices(maps), value=word), AnswerMaps([(m.word, m.grid) for m in maps]))

    def image_word(self, image, word, kept, lang=""):
        """The chosen word of the description or answer: its heatmap over the picture, and for an answer to a
        spoken question, where the model listened for it in the question."""
        picked = picked_item(kept.maps, word) if isinstance(kept, AnswerMaps) else None
        if picked is None:
            yield None, gr.skip()
            return
        heard = picked_item(kept.curves, word)
        question = (curve_picture(inputs.load_audio(kept.recording).waveform, heard)
                    if heard is not None and kept.recording else gr.update(value=None, visible=False))
        yield overlays.heatmap_overlay(inputs.load_image(image, []), picked[1]), question

    # --- asking about the picture -------------------------------------------------------------------------------

    def asking_presets(self) -> list[Preset]:
        return [preset for preset in self.engine.presets.values() if preset.answers_questions]

    def default_asking(self) -> str | None:
        return default_ask_preset(self.engine.presets)

    def default_listener(self) -> str | None:
        """Who hears a spoken question unless the user picks: the app's speech model (Whisper tiny.en where its
        package is installed), which writes it down for the asking model to read. mmgpt-tiny hearing a question
        itself, in one sequence of picture, speech and text, does better only in the robotic voices it learned most
        from (`scripts/spoken_listeners.py`): in held-out espeak-ng voices v4.39 answers 88.9% of the evaluation's
        spoken questions so and 43.2% from Whisper tiny.en's transcript; in flite's and festival's held-out voices,
        built from recordings of real speakers, 71.4% and 92.9%; and in piper's neural joe, 81.4% and 94.6%."""
        return self.default("audio")

    def listener_names(self) -> list[str]:
        return [preset.name for preset in self.presets("audio")]

    def ask(self, image, question, recording, conversation, preset, listener=None, show_maps=True, lang="",
            request: gr.Request | None = None):
        """Answer a question about the picture, typed or recorded, after the conversation so far: (conversation,
        stats, heatmap, word choices, question spectrogram, word maps, question box, recorder); the first update
        empties the question box and the recorder.

        A spoken question is heard by `listener`, a speech preset (None: `default_listener()`). When that is the
        asking model and it hears questions, it hears the question with the picture, in one sequence; one that
        writes down what it heard before answering (mmgpt-tiny from v4.14) writes it there, after the picture and
        the conversation. Any other listener writes the question down first and the asking model reads the
        transcript. Either way the chat shows the transcript as the user's turn. The answer streams into the
        conversation; notes follow it when earlier turns no longer fit the model or when it was unsure. With
        `show_maps`, the last update adds where the model looked for each word of the answer and, for a question it
        heard, where it listened. It stops if the page shows another picture meanwhile; sent with another picture's
        conversation (before this picture's change event came), it starts a new one."""
        if self.shown_pictures.chat_about_another(_session(request), image):
            conversation = None
        (chat, stats, heard), (heatmap, words, kept) = new_conversation(), no_maps()
        emptied = (chat, stats, heatmap, words, heard, kept, gr.skip(), gr.skip())
        yield from self._while_shown(request, image, self._answer(image, question, recording, conversation, preset,
                                                                  listener, show_maps, lang), emptied, answer=True)

    def _answer(self, image, question, recording, conversation, preset, listener, show_maps, lang):
        preset = inputs.check_choice(preset, [p.name for p in self.asking_presets()], "preset_unknown")
        listener = self.check_preset("audio", listener or self.default_listener())
        chat = inputs.load_conversation(conversation)
        notes: list[Message] = []
        picture = inputs.load_image(image, notes)
        typed = inputs.load_question(question)
        spoken = _has_recording(recording)
        if typed and spoken:
            raise InputError("question_twice")
        if not typed and not spoken:
            raise InputError("question_empty")
        clip = inputs.load_audio(recording) if spoken else None
        hears = clip is not None and listener == preset and self.engine.preset(preset).hears_questions
        if clip is not None:
            notes += clip.notes
            self._check_question_length(listener, hears, clip.seconds)
        warn(notes, lang)
        messages = [*chat.messages, {"role": "user", "content": typed or SPOKEN_MARK + HEARD_PLACEHOLDER}]
        outputs = _ChatOutputs(messages)
        writes_down = hears and getattr(self.engine.load(preset), "writes_heard_questions", False)
        params = self.engine.preset(preset).params()
        answer_at, box = len(messages), typed
        try:
            if clip is not None:
                hearing = HeardQuestionRequest(picture, audio=clip.waveform, history=chat.turns) if writes_down \
                    else AudioRequest(clip.waveform)
                typed = yield from self._transcribe_question(listener, hearing, outputs, lang)
            if hears:  # the model hears the recording itself, with the words it wrote for it if it writes them
                request = AskRequest(picture, question=typed if writes_down else "", audio=clip.waveform,
                                     history=chat.turns)
            else:
                request = AskRequest(picture, question=typed, history=chat.turns)
            messages.append({"role": "assistant", "content": ""})
            text, stats, last = yield from relay(stream_text(self.engine, preset, request, params, lang,
                                                             warn_notes=False), outputs.answer)
        except Exception:
            if outputs.sent:  # the question left its box or the recorder: give it back, and the chat as it was
                yield outputs.restored(chat.messages, box, recording)
            raise
        for note in last.notes if last else ():  # e.g. the oldest turns were left out: said before the answer
            messages.insert(answer_at, _note(note.text(lang)))
        if _unsure(last, self.engine.preset(preset).unsure_answer_below):
            messages.append(_note(translate("answer_unsure", lang, percent=f"{100 * last.confidence:.0f}")))
        yield self._explained(preset, request, picture, text, stats, last, params, show_maps,
                              recording if hears else None, outputs, lang)

    def ask_api(self, image, question, recording, conversation, preset, show_maps=True, lang="", listener=None):
        """`/ask`: what `ask` does, with only the answer's outputs (conversation, stats, heatmap, word choices,
        question spectrogram, word maps): an API caller has no question box to empty. The listener comes last,
        after the parameters that /ask took before there was a choice of listener."""
        yield from relay(self.ask(image, question, recording, conversation, preset, listener, show_maps, lang),
                         lambda *outputs: outputs[:-2])

    def _check_question_length(self, listener: str, hears: bool, seconds: float):
        """A model that hears a question with the picture hears it whole, in one window; a speech model
        transcribes up to `MAX_QUESTION_SECONDS`."""
        limit = inputs.MAX_QUESTION_SECONDS
        if hears:
            limit = min(limit, self.engine.load(listener).max_audio_seconds or limit)
        if seconds > limit:
            raise InputError("question_audio_too_long", seconds=f"{seconds:.1f}", preset=listener,
                             max_seconds=f"{limit:.1f}")

    def _transcribe_question(self, listener: str, hearing, outputs: "_ChatOutputs", lang: str):
        """Stream the spoken question's transcript by `listener` (for `hearing`, an `AudioRequest` or a
        `HeardQuestionRequest`) into the user's turn; return it."""
        params = self.engine.preset(listener).params()
        # A note on the words (the oldest turns left out) comes again with the answer, which reads the same turns.
        said_with_answer = isinstance(hearing, HeardQuestionRequest)
        transcript, _, _ = yield from relay(stream_text(self.engine, listener, hearing, params, lang,
                                                        warn_notes=not said_with_answer), outputs.question)
        if not transcript.strip():
            raise InputError("question_no_speech")
        return transcript.strip()

    def _explained(self, preset, request, picture, text, stats, last: StreamUpdate | None, params: GenerationParams,
                   show_maps, recording, outputs: "_ChatOutputs", lang: str):
        """The ask event's last outputs: the conversation, and where the model looked (and listened)."""
        explanation = self.explain(preset, request, text, show_maps, last, params, lang)
        maps = explanation and explanation.image_maps
        hidden = gr.update(value=None, visible=False)
        if not maps:
            heatmap, words, kept = no_maps()
            return outputs.final(stats, heatmap, words, hidden, kept)
        word = first_content_word(maps)
        curves = explanation.audio_curves and [(c.word, c.weights, c.seconds_per_step)
                                               for c in explanation.audio_curves]
        heard = hidden
        if curves and request.audio is not None:
            heard = gr.update(value=curve_picture(request.audio, curves[word]), visible=True)
        kept = AnswerMaps([(m.word, m.grid) for m in maps], curves, recording if isinstance(recording, dict) else None)
        return outputs.final(stats, overlays.heatmap_overlay(picture, maps[word].grid),
                             gr.update(choices=overlays.word_choices(maps), value=word), heard, kept)

    # --- reading answers aloud ----------------------------------------------------------------------------------

    def read_last_answer(self, conversation, lang=""):
        """The conversation's last answer, spoken: (sample rate, samples) for a gr.Audio."""
        answers = [m["content"] for m in inputs.load_conversation(conversation).messages
                   if m["role"] == "assistant" and m["content"]]
        if not answers:
            raise InputError("read_aloud_nothing")
        yield read_aloud.speak(answers[-1])

    def read_text(self, text, lang=""):
        """`/read_aloud`: any text (an answer), spoken."""
        yield read_aloud.speak(text if isinstance(text, str) else "")

    def read_picked_answer(self, conversation, lang, evt: gr.SelectData):
        """The answer clicked in the chat, spoken (a question or a note clicked: nothing)."""
        messages = inputs.load_conversation(conversation).messages
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) and evt.index else evt.index
        message = picked_item(messages, index)
        if message is None or message["role"] != "assistant" or not message["content"]:
            yield gr.skip()
            return
        yield read_aloud.speak(message["content"])

    def new_picture(self, image, conversation, lang="", request: gr.Request | None = None):
        """Another picture on the page: (chat, its stats, question spectrogram, heatmap, word choices, maps), each
        emptied if it is about another picture. A new conversation starts, and says so if there was one. What was
        sent about this picture just before this event came, about 0.26 s after the picture showed, is kept; no
        picture changes nothing (see shown_pictures). The page empties the description itself."""
        stale = self.shown_pictures.show(_session(request), image)
        if "chat" in stale and conversation:
            gr.Info(translate("new_picture", lang))
        chat = new_conversation() if "chat" in stale else (gr.skip(),) * 3
        yield *chat, *(no_maps() if "maps" in stale else SKIP_MAPS)

    def _while_shown(self, request: gr.Request | None, image, run, emptied: tuple, answer: bool = False):
        """`run`'s updates until the page shows another picture than `image`; then the update `emptied`, and it
        stops. The picture's change event empties the outputs too, but an update of this run sent before it may
        reach the page after it (the browser test saw the old conversation come back 1 run in 7); the run's own
        last update comes after its others."""
        session, first = _session(request), True
        with closing(run):
            for update in run:
                if self.shown_pictures.replaced(session, image):
                    yield emptied
                    return
                if first:
                    self.shown_pictures.wrote(session, image, answer)
                    first = False
                yield update


def _session(request: gr.Request | None) -> str | None:
    """The page's Gradio session; None for direct calls."""
    return getattr(request, "session_hash", None)


def new_conversation():
    """Outputs that start a new conversation: chat, stats, the question's spectrogram."""
    return [], "", gr.update(value=None, visible=False)


class _ChatOutputs:
    """The ask event's outputs: the conversation, whose last user turn (a transcript) and answer grow while text
    streams; the first update also empties the question box, the recorder and the last answer's maps."""

    def __init__(self, messages: list[dict]):
        self.messages = messages
        self.question_at = len(messages) - 1
        self.sent = False

    def question(self, transcript: str, stats: str, *_) -> tuple:
        self.messages[self.question_at]["content"] = SPOKEN_MARK + (transcript.strip() or HEARD_PLACEHOLDER)
        return self._streaming(stats)

    def answer(self, text: str, stats: str, *_) -> tuple:
        self.messages[-1]["content"] = text
        return self._streaming(stats)

    def _streaming(self, stats: str) -> tuple:
        heatmap, words, kept = SKIP_MAPS if self.sent else no_maps()
        heard = gr.skip() if self.sent else gr.update(value=None, visible=False)
        return self.final(stats, heatmap, words, heard, kept)

    def restored(self, messages: list[dict], question: str, recording) -> tuple:
        """After a failure: the conversation as it was before the question, and the question back where it was
        typed or recorded, so that nothing is lost and asking again takes one click."""
        return [dict(message) for message in messages], "", *SKIP_MAPS, gr.skip(), question, recording

    def final(self, stats: str, heatmap, words, heard, kept) -> tuple:
        conversation = [dict(message) for message in self.messages]  # copies: Gradio diffs against what it sent
        emptied = (gr.skip(), gr.skip()) if self.sent else ("", None)
        self.sent = True
        return conversation, stats, heatmap, words, heard, kept, *emptied


def _has_recording(recording) -> bool:
    if isinstance(recording, dict):
        return bool(recording.get("path") or recording.get("url"))
    if isinstance(recording, str):
        return bool(recording.strip())
    return recording is not None


def _note(text: str) -> dict:
    """A note in the chat: an assistant message drawn as a titled box, which the model never reads."""
    return {"role": "assistant", "content": "", "metadata": {"title": text, "status": "done"}}


def _unsure(last: StreamUpdate | None, below: float | None) -> bool:
    return below is not None and last is not None and last.confidence is not None and last.confidence < below


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

                gr.Markdown(I18N("ask_heading"))
                chat = gr.Chatbot(label=I18N("chat"), height=320, buttons=["copy"], feedback_options=None)
                question = gr.Textbox(value="", label=I18N("question"), max_lines=2,
                                      placeholder=I18N("question_placeholder"))
                recording = gr.Audio(sources=["microphone", "upload"], type="filepath",
                                     label=I18N("question_audio"))
                with gr.Row():
                    ask_preset = gr.Dropdown(choices=[p.name for p in handlers.asking_presets()],
                                             value=handlers.default_asking(), label=I18N("ask_model"),
                                             interactive=True)
                    listener = gr.Dropdown(choices=handlers.listener_names(),
                                           value=handlers.default_listener(),
                                           label=I18N("question_listener"), info=I18N("question_listener_info"),
                                           interactive=True)
                with gr.Row():
                    ask = gr.Button(I18N("ask"), variant="primary")
                    ask_stop = gr.Button(I18N("stop"), variant="stop")
                    restart = gr.Button(I18N("new_conversation"))
                ask_stats = stats_box("ask_stats")
                read = gr.Button(I18N("read_aloud"))
                spoken_answer = gr.Audio(label=I18N("read_aloud_output"), interactive=False, autoplay=True,
                                         type="numpy")
            with gr.Column():
                description = gr.Textbox(label=I18N("description"), lines=6, interactive=False, buttons=["copy"])
                image_stats = stats_box()
                image_words = word_picker()
                heatmap = gr.Image(label=I18N("heatmap"), type="pil", interactive=False, format="png", height=256)
                question_heard = gr.Image(label=I18N("question_heard"), type="pil", interactive=False, format="png",
                                          visible=False)
                image_maps = gr.State(None)  # AnswerMaps of the last description or answer
        if image_examples := examples("*.png"):
            gr.Examples(image_examples, inputs=[image], label=I18N("examples"), cache_examples=False)
        # What only the API's /ask and /read_aloud take (inside the tab: between tabs it would split the tab bar)
        api_trigger, api_conversation, api_text = gr.Button(visible=False), gr.JSON(visible=False), gr.Textbox(
            visible=False)
        api_listener = gr.Textbox(value="", visible=False)  # empty: `default_listener()`

    caption_event = describe.click(page.model_handler(handlers.caption),
                                   [image, image_prompt, image_preset, page.show_maps, page.lang],
                                   [description, image_stats, heatmap, image_words, image_maps],
                                   api_name="caption", **page.events)
    describe.click(lambda: gr.update(value=None, visible=False), None, question_heard, queue=False,
                   api_visibility="private")  # a description has no spoken question
    image_words.input(page.errors(handlers.image_word), [image, image_words, image_maps, page.lang],
                      [heatmap, question_heard], js=page.events["js"], **PICKS)
    image_stop.click(None, None, None, cancels=[caption_event])

    # The page's language last: page.events' script fills the last input with it.
    ask_inputs = [image, question, recording, chat, ask_preset, listener, page.show_maps, page.lang]
    answer_outputs = [chat, ask_stats, heatmap, image_words, question_heard, image_maps]
    ask_events = [trigger(page.model_handler(handlers.ask), ask_inputs, [*answer_outputs, question, recording],
                          api_name=f"ask_on_page_{index}", api_visibility="private", **page.events)
                  for index, trigger in enumerate((ask.click, question.submit))]
    # The API's /ask: the same, without the page's question box and recorder among its outputs, and with the
    # conversation as plain JSON, so that mmgpt.inputs checks it (a gr.Chatbot input is checked by Gradio first,
    # whose messages name nothing, and which takes no {"role", "content": "text"} messages), and whose listener,
    # when not given, follows the preset the call names rather than the page's first preset.
    api_trigger.click(page.model_handler(handlers.ask_api),
                      [image, question, recording, api_conversation, ask_preset, page.show_maps, page.lang,
                       api_listener],
                      answer_outputs, api_name="ask", **page.events)
    ask_stop.click(None, None, None, cancels=ask_events)
    hold_while_recording(recording, ask)
    # New conversation and the chat's clear button stop the answer streaming into the chat: its next update would
    # bring the old conversation back, since Gradio rebuilds a streamed value from its own copy of what it sent, not
    # from what is shown. Updates already on their way still can (the browser test saw it every time), so the chat
    # is emptied once more after the first round trip. Another picture does not cancel: a description or an answer
    # about the old one stops by itself (ImageHandlers._while_shown), and the change event empties its outputs.
    conversation_outputs = [chat, ask_stats, question_heard]
    start_over = dict(fn=new_conversation, inputs=None, outputs=conversation_outputs, queue=False,
                      api_visibility="private")
    for trigger in (restart.click, chat.clear):
        trigger(**start_over, cancels=ask_events).then(**start_over)
    image.change(page.errors(handlers.new_picture), [image, chat, page.lang],
                 [*conversation_outputs, heatmap, image_words, image_maps],
                 js=page.events["js"],
                 api_visibility="private", preprocess=False, concurrency_limit=None)  # queued: its toast needs it
    # The description in the page, at once: a server event writing it would hide the progress of a description
    # asked for before that event came back (the browser test's, asked at once, looked finished after two words).
    image.change(None, None, [description, image_stats], js="() => ['', '']", api_visibility="private")
    speech = dict(concurrency_id="speech", concurrency_limit=2, preprocess=False, js=page.events["js"])
    read.click(page.errors(handlers.read_last_answer), [chat, page.lang], spoken_answer, api_visibility="private",
               **speech)
    api_trigger.click(page.errors(handlers.read_text), [api_text, page.lang], spoken_answer, api_name="read_aloud",
                      **speech)
    chat.select(page.errors(handlers.read_picked_answer), [chat, page.lang], spoken_answer,
                api_visibility="private", **speech)
