"""Every string the app shows, in English and Simplified Chinese: one table, two uses.

- Labels, buttons and headings go to the browser through `gr.I18n` (see `make_i18n`); the browser picks the
  language from its locale, and the footer's Settings -> Language switch changes it on the page.
- Messages (errors, warnings, the stats line) are formatted on the server with `translate(key, lang, **params)`,
  because Gradio's toasts are not translated in the browser. The app sends the page's language along with each
  request; API callers get English unless they pass `lang`.

This module is plain data and imports nothing heavy, so `mmgpt.inputs` and the CLI can use the English text too.
"""

from __future__ import annotations

from typing import Any

DEFAULT_LANGUAGE = "en"
LANGUAGES = {"en": "English", "zh-CN": "简体中文"}  # locale code -> name in that language

# key -> (English, Simplified Chinese). Keys ending in a `{placeholder}` template are formatted on the server.
_TABLE: dict[str, tuple[str, str]] = {
    # --- page -------------------------------------------------------------------------------------------------
    "app_title": ("mmgpt: a small multimodal GPT", "mmgpt：一个小型多模态 GPT"),
    "app_intro": (
        "Show it a picture, speak to it, or type to it, and watch the answer stream out token by token. "
        "The offline default, mmgpt-tiny, knows synthetic shapes and synthetic voices, not photos or human speech. "
        "Language: Settings (page footer) → Language.",
        "给它看一张图片、对它说话或给它打字，看答案一个 token 一个 token 地流出来。"
        "默认的离线模型 mmgpt-tiny 只认识合成的图形和合成的语音，不认识照片和真人语音。"
        "语言：页面底部“设置” → 语言。",
    ),
    "show_maps": ("Show what the model saw", "显示模型看到了什么"),
    "show_maps_info": (
        "After each answer: where it looked for each word, and how sure it was of each token (one extra pass).",
        "每次回答之后：每个词看向了哪里，以及对每个 token 有多确定（多做一次前向计算）。",
    ),
    "map_word": ("Word", "词"),
    "map_word_info": ("Pick a word to see where the model looked for it", "选一个词，看模型为它看向了哪里"),
    "heatmap": ("Where the model looked for the word", "模型为这个词看向的位置"),
    "confidence": ("How sure the model was of each token (select one)", "模型对每个 token 的把握（可点选）"),
    "alternatives": ("Top 5 alternatives for the selected token", "所选 token 的前 5 个候选"),
    "tab_image": ("Image", "图像"),
    "tab_microphone": ("Microphone", "麦克风"),
    "tab_text": ("Text", "文本"),
    "model": ("Model", "模型"),
    "stop": ("Stop", "停止"),
    "stats": ("Speed", "速度"),
    "examples": ("Examples", "示例"),
    # --- image tab --------------------------------------------------------------------------------------------
    "image_input": ("Picture", "图片"),
    "image_prompt": ("Start of the caption (optional; blip-base and mmgpt-tiny use it)",
                     "描述的开头（可选；blip-base 和 mmgpt-tiny 会用到）"),
    "image_prompt_placeholder": ("e.g. a picture of", "例如：a picture of"),
    "describe": ("Describe", "描述"),
    "description": ("Description", "描述结果"),
    # --- image tab: asking about the picture --------------------------------------------------------------------
    "ask_heading": ("### Ask about the picture", "### 就这张图片提问"),
    "chat": ("Conversation about the picture", "关于这张图片的对话"),
    "question": ("Your question", "你的问题"),
    "question_placeholder": ("e.g. what colour is the circle? (Enter asks)", "例如：what colour is the circle?（回车即提问）"),
    "question_audio": ("…or ask by voice: record or upload, then press Ask", "……或者用语音提问：录音或上传，然后点“提问”"),
    "ask": ("Ask", "提问"),
    "ask_model": ("Model for questions", "回答问题的模型"),
    "question_listener": ("Spoken questions heard by", "语音问题由谁来听"),
    "question_listener_info": ("a speech model writes the question down first; pick the model for questions itself "
                               "(mmgpt-tiny) to have it hear the question with the picture, in one sequence. It "
                               "learned from synthetic voices; in voices unlike them, it gets far fewer questions right "
                               "than Whisper does",
                               "语音模型先把问题写成文字；选回答问题的模型本身（mmgpt-tiny），它就把问题和图片放在"
                               "同一个序列里听。它只从合成语音学过；遇到与之不同的声音，它答对的问题远少于 Whisper"),
    "ask_stats": ("Speed of the answer", "回答的速度"),
    "new_conversation": ("New conversation", "新对话"),
    "read_aloud": ("Read the last answer aloud", "朗读最后一个回答"),
    "read_aloud_output": ("Answer, read aloud (click any answer in the chat to hear it)",
                          "朗读的回答（点击对话中的任一回答即可收听）"),
    "question_heard": ("Where the model listened in your spoken question, for the word picked above",
                       "模型在你的语音问题里为上面所选的词听向了哪里"),
    # --- microphone tab ---------------------------------------------------------------------------------------
    "audio_input": ("Recording", "录音"),
    "transcribe": ("Transcribe", "转写"),
    "transcript": ("Transcript", "转写结果"),
    "spectrogram": ("Log-mel spectrogram the model heard", "模型听到的对数梅尔频谱图"),
    "reply": ("Reply", "回复"),
    "reply_model": ("Reply model (text)", "回复所用模型（文本）"),
    "reply_output": ("Reply", "回复内容"),
    # --- text tab ---------------------------------------------------------------------------------------------
    "prompt": ("Prompt", "提示词"),
    "prompt_placeholder": ("Type some text…", "输入一些文字……"),
    "task": ("Task", "任务"),
    "task_info": ("Chat, Summarize, Translate and Answer need an instruction-tuned model (qwen2.5-0.5b-instruct).",
                  "对话、摘要、翻译和问答需要指令微调模型（qwen2.5-0.5b-instruct）。"),
    "task_continue": ("Continue", "续写"),
    "task_chat": ("Chat", "对话"),
    "task_summarize": ("Summarize", "摘要"),
    "task_translate": ("Translate", "翻译"),
    "task_answer": ("Answer", "问答"),
    "target_language": ("Target language (Translate)", "目标语言（翻译）"),
    "context": ("Context (Answer, optional)", "上下文（问答，可选）"),
    "settings": ("Generation settings", "生成设置"),
    "max_new_tokens": ("Max new tokens", "最多生成的 token 数"),
    "temperature": ("Temperature (0 = greedy)", "温度（0 = 贪心解码）"),
    "top_p": ("Top-p", "Top-p"),
    "top_k": ("Top-k (0 = off)", "Top-k（0 = 不限）"),
    "repetition_penalty": ("Repetition penalty (1 = off)", "重复惩罚（1 = 不惩罚）"),
    "seed": ("Seed (blank = random; a fixed seed gives the same text again)",
             "随机种子（留空 = 随机；固定种子可复现同样的文字）"),
    "generate": ("Generate", "生成"),
    "output": ("Output", "输出"),
    # --- stats line (server-side templates) -------------------------------------------------------------------
    "stats_line": ("first token after {ttft} s · {tokens_per_s} tokens/s · {tokens} tokens",
                   "首个 token 用时 {ttft} 秒 · 每秒 {tokens_per_s} 个 token · 共 {tokens} 个 token"),
    "stats_window": ("window {window} of {windows}", "第 {window}/{windows} 段"),
    "stats_waiting": ("waiting for the first token…", "等待第一个 token……"),
    "stats_waited": ("waiting for the first token… {seconds} s", "等待第一个 token…… 已 {seconds} 秒"),
    "stats_seed": ("seed {seed}", "种子 {seed}"),
    # --- input messages (mmgpt.inputs) ------------------------------------------------------------------------
    "image_missing": ("No image was given. Upload a picture, take one with the webcam, or paste one.",
                      "没有收到图片。请上传图片、用摄像头拍一张，或粘贴一张。"),
    "image_not_found": ("The image file was not found on the server. Upload it again.",
                        "服务器上找不到这个图片文件。请重新上传。"),
    "image_empty_file": ("The image file is empty (0 bytes). Upload it again, or pick another picture.",
                         "图片文件是空的（0 字节）。请重新上传，或换一张图片。"),
    "image_not_image": ("This file is not a picture, whatever its name says. Upload a PNG, JPEG, WebP, GIF or BMP "
                        "image.",
                        "这个文件不是图片（不管它的扩展名是什么）。请上传 PNG、JPEG、WebP、GIF 或 BMP 图片。"),
    "image_corrupt": ("The image file is damaged or cut short (truncated), so it could not be decoded. Re-save or "
                      "re-export it and upload it again.",
                      "图片文件已损坏或不完整（被截断），无法解码。请重新保存或导出后再上传。"),
    "image_too_large": ("The image is too large: {width}×{height} pixels is more than the {max_megapixels}-megapixel "
                        "limit. Scale it down and try again.",
                        "图片太大：{width}×{height} 像素，超过了 {max_megapixels} 百万像素的上限。请缩小后重试。"),
    "image_too_large_declared": ("The image declares a size far above the {max_megapixels}-megapixel limit (a "
                                 "decompression bomb?), so it was not decoded. Scale it down and try again.",
                                 "图片声明的尺寸远超 {max_megapixels} 百万像素的上限（可能是解压炸弹），因此没有解码。"
                                 "请缩小后重试。"),
    "image_aspect": ("The image is {width}×{height} pixels, a strip longer than {max_ratio}:1. Crop it closer to a "
                     "square and try again.",
                     "图片为 {width}×{height} 像素，长宽比超过 {max_ratio}:1。请裁剪得更接近正方形后重试。"),
    "image_mode_unsupported": ("Pictures in colour mode {mode} are not supported. Save it as an ordinary RGB PNG or "
                               "JPEG and try again.",
                               "不支持颜色模式为 {mode} 的图片。请另存为普通 RGB 的 PNG 或 JPEG 后重试。"),
    "image_first_frame": ("The picture is animated ({frames} frames); only the first frame was used.",
                          "这是一张动图（{frames} 帧）；只使用了第一帧。"),
    "audio_missing": ("No audio was given. Record with the microphone or upload a file (wav, flac, mp3 or ogg).",
                      "没有收到音频。请用麦克风录音，或上传文件（wav、flac、mp3 或 ogg）。"),
    "audio_not_found": ("The audio file was not found on the server. Upload it again.",
                        "服务器上找不到这个音频文件。请重新上传。"),
    "audio_empty_file": ("The audio file is empty (0 bytes). Record again or upload another file.",
                         "音频文件是空的（0 字节）。请重新录音或换一个文件上传。"),
    "audio_unreadable": ("This file could not be read as audio: it is damaged, cut short, or not audio at all, "
                         "whatever its name says. Upload a wav, flac, mp3 or ogg file.",
                         "无法把这个文件当作音频读取：它已损坏、不完整，或者根本不是音频（不管扩展名是什么）。"
                         "请上传 wav、flac、mp3 或 ogg 文件。"),
    "audio_needs_ffmpeg": ("ffmpeg is needed to read .{extension} files; install it (apt-get install ffmpeg), or "
                           "upload a wav, flac, mp3 or ogg file.",
                           "读取 .{extension} 文件需要 ffmpeg；请安装（apt-get install ffmpeg），"
                           "或上传 wav、flac、mp3 或 ogg 文件。"),
    "audio_no_samples": ("The recording contains no audio samples. Record again, a little longer.",
                         "录音里没有任何音频采样。请重新录音，录得长一些。"),
    "audio_too_short": ("The recording is only {seconds} s long; record at least {min_seconds} s.",
                        "录音只有 {seconds} 秒；请至少录 {min_seconds} 秒。"),
    "audio_bad_rate": ("The sample rate {rate} Hz is outside the supported {min_rate}–{max_rate} Hz. Re-export the "
                       "audio at 16 or 48 kHz.",
                       "采样率 {rate} Hz 不在支持的 {min_rate}–{max_rate} Hz 范围内。请以 16 或 48 kHz 重新导出。"),
    "audio_bad_channels": ("The audio has {channels} channels; at most {max_channels} are supported. Mix it down to "
                           "mono or stereo.",
                           "音频有 {channels} 个声道；最多支持 {max_channels} 个。请混音为单声道或立体声。"),
    "audio_bad_shape": ("The audio array has shape {shape}; send (samples,) or (samples, channels).",
                        "音频数组的形状是 {shape}；请发送 (samples,) 或 (samples, channels)。"),
    "audio_bad_dtype": ("The audio samples have type {dtype}; send int16, int32 or float samples.",
                        "音频采样的类型是 {dtype}；请发送 int16、int32 或浮点采样。"),
    "audio_silence": ("No speech was heard: the recording is silent (its loudest moment is {peak_db} dBFS). Check "
                      "the microphone and record again.",
                      "没有听到语音：录音是静音的（最响处为 {peak_db} dBFS）。请检查麦克风后重新录音。"),
    "audio_truncated": ("The recording is longer than {max_minutes} minutes; only the first {max_seconds} s were "
                        "used.",
                        "录音超过 {max_minutes} 分钟；只使用了前 {max_seconds} 秒。"),
    "audio_nonfinite": ("{count} samples were not numbers (NaN or infinity) and were replaced by silence.",
                        "有 {count} 个采样不是数值（NaN 或无穷大），已替换为静音。"),
    "audio_clipped": ("The recording is clipped (too loud) in places; the transcript may suffer. Record a little "
                      "further from the microphone.",
                      "录音有些地方削波（太响），转写可能受影响。请离麦克风远一点再录。"),
    "audio_rescaled": ("The samples went beyond full scale (peak {peak}) and were scaled down.",
                       "采样超出了满幅（峰值 {peak}），已按比例缩小。"),
    "prompt_empty": ("The prompt is empty. Type some text and try again.", "提示词是空的。请输入一些文字后重试。"),
    "prompt_trimmed": ("The text was {chars} characters long; only the last {max_chars} were kept.",
                       "文字长 {chars} 个字符；只保留了最后 {max_chars} 个。"),
    "context_trimmed": (
        "The text was too long for this model: it reads {context} tokens at most, answer included, so only the "
        "last {kept} of its {total} tokens were used.",
        "文字对这个模型来说太长了：它最多读 {context} 个 token（含回答），所以只用了全部 {total} 个 token 中的最后 {kept} 个。",
    ),
    "prompt_control_removed": ("{count} control characters were removed from the text.",
                               "已从文字中删除 {count} 个控制字符。"),
    "question_empty": ("There is no question. Type one, or record or upload it, then press Ask.",
                       "没有问题。请输入一个问题，或录音、上传一个问题，然后点“提问”。"),
    "question_twice": ("Ask one question at a time: there is a typed question and a recorded one. Clear one of them.",
                       "一次只问一个问题：现在既有输入的问题，也有录音的问题。请清除其中一个。"),
    "question_not_text": ("The question must be text, got {kind}.", "问题必须是文字，收到的是 {kind}。"),
    "question_too_long": ("The question is {chars} characters long; ask in at most {max_chars}.",
                          "问题长 {chars} 个字符；请控制在 {max_chars} 个以内。"),
    "question_audio_too_long": ("The spoken question is {seconds} s long; {preset} hears at most {max_seconds} s "
                                "at once. Ask it in fewer words.",
                                "语音问题长 {seconds} 秒；{preset} 一次最多只能听 {max_seconds} 秒。请说得简短一些。"),
    "question_no_speech": ("No words were heard in the recorded question. Record it again, closer to the microphone.",
                           "录音的问题里没有听出任何词。请靠近麦克风再录一次。"),
    "conversation_not_list": ("The conversation must be a list of messages, each {{\"role\": ..., \"content\": ...}}; "
                              "got {kind}.",
                              "对话必须是消息列表，每条形如 {{\"role\": ..., \"content\": ...}}；收到的是 {kind}。"),
    "conversation_too_long": ("The conversation has {count} messages; at most {max_messages} are kept. Start a new "
                              "conversation.",
                              "对话有 {count} 条消息；最多保留 {max_messages} 条。请开始新对话。"),
    "conversation_bad_message": ("Message {index} of the conversation is a {kind}, not a "
                                 "{{\"role\": ..., \"content\": ...}} message.",
                                 "对话的第 {index} 条消息是 {kind}，不是 {{\"role\": ..., \"content\": ...}} 形式的消息。"),
    "conversation_bad_role": ("Message {index} of the conversation has the role {role}; only \"user\" and "
                              "\"assistant\" are allowed.",
                              "对话的第 {index} 条消息的角色是 {role}；只允许 \"user\" 和 \"assistant\"。"),
    "conversation_bad_content": ("Message {index} of the conversation holds {kind}; only text is allowed.",
                                 "对话的第 {index} 条消息包含 {kind}；只允许文字。"),
    "conversation_message_too_long": ("Message {index} of the conversation is {chars} characters long; at most "
                                      "{max_chars} are allowed.",
                                      "对话的第 {index} 条消息长 {chars} 个字符；最多允许 {max_chars} 个。"),
    "conversation_trimmed": (
        "The conversation is too long for this model (it reads {context} tokens at most, answer included): it no "
        "longer saw the first {dropped} of the {turns} earlier questions and answers.",
        "对话对这个模型来说太长了（它最多读 {context} 个 token，含回答）：前面 {turns} 轮问答中最早的 {dropped} 轮它已看不到了。",
    ),
    "description_unsure": ("The model is unsure of this description (mean token confidence {percent}%): the picture "
                           "may be unlike the drawings it learned, and the description a guess.",
                           "模型对这段描述没有把握（平均 token 置信度 {percent}%）：这张图片可能不像它学过的图画，描述可能是猜测。"),
    "answer_unsure": ("⚠️ The model is unsure of this answer (mean token confidence {percent}%): it may be a guess.",
                      "⚠️ 模型对这个回答没有把握（平均 token 置信度 {percent}%）：可能是猜的。"),
    "new_picture": ("A new picture: the conversation about the previous one was cleared.",
                    "换了一张新图片：关于上一张图片的对话已清空。"),
    "read_aloud_nothing": ("There is no answer to read aloud yet. Ask a question first.",
                           "还没有可以朗读的回答。请先提一个问题。"),
    "read_aloud_unavailable": ("Reading aloud needs espeak-ng, which is not installed here (apt-get install "
                               "espeak-ng).",
                               "朗读需要 espeak-ng，但这里没有安装（apt-get install espeak-ng）。"),
    "number_invalid": ("{name} must be a number, got {value}.", "{name} 必须是数字，收到的是 {value}。"),
    "preset_unknown": ("There is no model named {value}. Choose one of: {choices}.",
                       "没有名为 {value} 的模型。请从以下模型中选择：{choices}。"),
    "task_unknown": ("There is no task named {value}. Choose one of: {choices}.",
                     "没有名为 {value} 的任务。请从以下任务中选择：{choices}。"),
    "task_needs_instruct": ("{task} needs an instruction-tuned model, and {preset} can only continue text. Pick "
                            "{instruct}, or choose Continue.",
                            "“{task}”需要指令微调模型，而 {preset} 只能续写文字。请选择 {instruct}，或改用“续写”。"),
    "reply_needs_transcript": ("There is no transcript to reply to yet. Transcribe a recording first.",
                               "还没有可以回复的转写结果。请先转写一段录音。"),
    # --- engine and server messages ---------------------------------------------------------------------------
    "preset_unavailable": ("{detail}", "无法加载模型 {preset}（没有网络、不在本地缓存，或文件不完整）。请选择随应用附带、"
                                       "可离线使用的 mmgpt-tiny。"),
    "settings_invalid": ("A generation setting is out of range: {detail}.", "生成设置超出范围：{detail}。"),
    "request_invalid": ("{detail}", "请求无效：{detail}"),
    "generation_timeout": ("{detail}", "生成超过了 {seconds} 秒的时间上限，已经停止。请减少生成的 token 数，或选择更小的模型。"),
    # --- remote presets (mmgpt.remote): models on an OpenAI-compatible server ------------------------------------
    "remote_unreachable": ("Model {preset} could not reach its server at {host} ({reason}). Check that the server "
                           "is running and that the preset's base_url is right.",
                           "模型 {preset} 连不上它的服务器 {host}（{reason}）。请检查服务器是否在运行，"
                           "以及预设的 base_url 是否正确。"),
    "remote_key_missing": ("Model {preset} needs an API key in the environment variable {variable}, which is not "
                           "set. Set it and restart the app.",
                           "模型 {preset} 需要环境变量 {variable} 中的 API 密钥，但这个变量没有设置。请设置后重启应用。"),
    "remote_key_refused": ("The server of model {preset} refused the API key from {variable} (HTTP {status}: "
                           "{reason}). Check the key.",
                           "模型 {preset} 的服务器拒绝了来自 {variable} 的 API 密钥（HTTP {status}：{reason}）。"
                           "请检查密钥。"),
    "remote_key_needed": ("The server of model {preset} asks for an API key (HTTP {status}: {reason}). Name the "
                          "environment variable that holds it in the preset's api_key_env.",
                          "模型 {preset} 的服务器要求 API 密钥（HTTP {status}：{reason}）。"
                          "请在预设的 api_key_env 中写明存放密钥的环境变量。"),
    "remote_not_found": ("The server of model {preset} answered HTTP 404 ({reason}). Check the preset's base_url "
                         "(it usually ends in /v1) and its model name.",
                         "模型 {preset} 的服务器返回 HTTP 404（{reason}）。请检查预设的 base_url（通常以 /v1 结尾）"
                         "和模型名称。"),
    "remote_http_error": ("The server of model {preset} answered HTTP {status}: {reason}",
                          "模型 {preset} 的服务器返回 HTTP {status}：{reason}"),
    "remote_lost": ("The connection to the server of model {preset} broke off mid-answer ({reason}), so the answer "
                    "is incomplete. Try again.",
                    "与模型 {preset} 的服务器的连接在回答中途断开（{reason}），回答不完整。请重试。"),
    "remote_dropped": ("The server of model {preset} at {host} closed the connection without answering ({reason}). "
                       "If the preset's base_url is right (http or https, and the port), the server's log says why; "
                       "a prompt or recording too large for its memory is a common cause.",
                       "模型 {preset} 在 {host} 的服务器没有回答就关闭了连接（{reason}）。如果预设的 base_url 正确"
                       "（http 或 https，以及端口），原因见服务器日志；常见原因是提示或录音太大，超出了它的内存。"),
    "remote_cut_short": ("The server of model {preset} ended the answer before finishing it. Its log says why; a "
                         "prompt longer than its context is a common cause.",
                         "模型 {preset} 的服务器没有答完就结束了回答。原因见服务器日志；常见原因是提示超出了它的上下文长度。"),
    "remote_redirected": ("The server of model {preset} redirects its requests (HTTP {status}) to {location}, which "
                          "is not followed. Set the preset's base_url to the address it redirects to.",
                          "模型 {preset} 的服务器把请求重定向（HTTP {status}）到 {location}，应用不会跟随。"
                          "请把预设的 base_url 设为它重定向到的地址。"),
    "remote_error_event": ("The server of model {preset} reported an error mid-answer: {reason}",
                           "模型 {preset} 的服务器在回答中途报告了错误：{reason}"),
    "remote_malformed": ("The server of model {preset} sent an event that is not OpenAI-compatible ({reason}). "
                         "Check that the preset's base_url points at an OpenAI-compatible API.",
                         "模型 {preset} 的服务器发来了不符合 OpenAI 兼容格式的事件（{reason}）。"
                         "请检查预设的 base_url 是否指向 OpenAI 兼容的 API。"),
    "remote_malformed_transcript": ("The server of model {preset} streamed the transcript in a format that is not "
                                    "OpenAI's ({reason}). Set stream_transcription = false for this preset.",
                                    "模型 {preset} 的服务器以非 OpenAI 格式流式发送转写结果（{reason}）。"
                                    "请为这个预设设置 stream_transcription = false。"),
    "remote_setting_dropped": ("The server of model {preset} does not take the setting {setting}, so it was not "
                               "applied.",
                               "模型 {preset} 的服务器不支持设置 {setting}，因此这个设置没有生效。"),
    "remote_no_maps": ("{preset} runs on a remote server, which does not give what the model saw (where it looked, "
                       "how sure it was of each token).",
                       "{preset} 运行在远程服务器上，远程服务器不提供模型看到了什么（看向哪里、对每个 token 有多确定）。"),
    "explain_failed": ("What this model saw could not be worked out for this answer.",
                       "这次回答无法算出模型看到了什么。"),
    "explain_audio_too_long": ("What the model heard is shown for recordings of up to {max_seconds} s; this one is "
                               "{seconds} s.",
                               "只有 {max_seconds} 秒以内的录音才能显示模型听到了什么；这段录音长 {seconds} 秒。"),
    "explain_no_attention_image": ("This model does not show where it looked in the picture.",
                                   "这个模型不显示它看了图片的哪里。"),
    "explain_no_attention_audio": ("This model does not show where it listened in the recording.",
                                   "这个模型不显示它听了录音的哪里。"),
    "explain_no_attention_image_audio": ("This model does not show where it looked in the picture or where it "
                                         "listened in the recording.",
                                         "这个模型不显示它看了图片的哪里，也不显示它听了录音的哪里。"),
    "error_title": ("Error", "出错了"),
    "warning_title": ("Note", "提示"),
    "server_error": ("Something went wrong on the server; try again.", "服务器出错了，请重试。"),
}

TRANSLATIONS: dict[str, dict[str, str]] = {
    "en": {key: english for key, (english, _) in _TABLE.items()},
    "zh-CN": {key: chinese for key, (_, chinese) in _TABLE.items()},
}


def normalize_language(lang: str | None) -> str:
    """Map a browser locale ("zh-CN", "zh", "zh-Hans-CN", "en-GB", "") to a language in `LANGUAGES`; anything that
    is no locale (a crafted API call's 5) is the default language, so the message it gets can still be said."""
    tag = (lang if isinstance(lang, str) else "").strip().split(",")[0].split(";")[0].strip().lower()
    if tag.startswith("zh") and not any(part in tag for part in ("tw", "hk", "mo", "hant")):
        return "zh-CN"
    return DEFAULT_LANGUAGE


def translate(key: str, lang: str | None = DEFAULT_LANGUAGE, **params) -> str:
    """The message `key` in `lang` (falling back to English), with `params` filled in."""
    table = TRANSLATIONS[normalize_language(lang)]
    template = table.get(key) or TRANSLATIONS[DEFAULT_LANGUAGE][key]
    return template.format(**params) if params else template


class Message:
    """A user-facing message: a key into this table and its parameters. `str()` is the English text."""

    def __init__(self, key: str, **params: Any):
        self.key = key
        self.params = params

    def text(self, lang: str | None = None) -> str:
        return translate(self.key, lang, **self.params)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return f"Message({self.key!r}, {self.params!r})"


def make_i18n():
    """The `gr.I18n` object for `launch(i18n=...)`: label translations for the browser."""
    import gradio as gr

    return gr.I18n(**TRANSLATIONS)
