"""Issue 7, item 5: nothing is let in. Files, models, network and privacy, probed through the running app.

The app runs in this process on small random checkpoints (see `benchmarks/stress.py`); the probes are what a
stranger can send: raw HTTP paths (sent byte for byte, not normalized by a client library), crafted queue calls and
gradio_client calls.
"""

import http.client
import logging
import os
import re
import secrets
import socket
from pathlib import Path

import pytest
from gradio_client import handle_file

import app
from benchmarks import stress
from mmgpt.engine import Engine, TextRequest, UnknownPresetError

pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")

ROOT = Path(__file__).resolve().parents[1]
PASSWD_LINE = "root:x:0:0"  # the first line of /etc/passwd on Linux
SOURCE_LINE = "def user_facing_errors"  # a line of app.py, which sits in the server's working directory


@pytest.fixture(scope="module")
def secret(tmp_path_factory) -> dict:
    """Files outside Gradio's upload and cache folders that no request may read: a text file and a picture."""
    directory = tmp_path_factory.mktemp("outside")
    marker = "SECRET-" + secrets.token_hex(8)
    text = directory / "secret.txt"
    text.write_text(marker + "\n")
    picture = stress.scene_png(directory / "secret.png")
    recording = stress.tone_wav(directory / "secret.wav")
    return {"marker": marker, "text": text, "picture": picture, "recording": recording}


def raw_get(stress_app, path: str) -> tuple[int, str]:
    """GET `path` exactly as written: no client-side normalization of `..` or of percent-escapes."""
    host, port = stress_app.url.split("//")[1].rstrip("/").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def upload(stress_app, path: Path) -> str:
    """Upload a file as the browser does; returns where the server keeps it."""
    import httpx

    with path.open("rb") as handle:
        response = httpx.post(stress_app.url + "gradio_api/upload", files={"files": (path.name, handle)}, timeout=30)
    response.raise_for_status()
    return response.json()[0]


def call(stress_app, api_name: str, data: list) -> dict:
    """Run one event through the queue over raw HTTP; its final message (`success`, `output`)."""
    last = {}
    for message in stress.sse_events(stress_app, api_name, data):
        last = message
        if message.get("msg") in ("process_completed", "join_refused"):
            break
    return last


def file_data(path) -> dict:
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


# --- files ------------------------------------------------------------------------------------------------------


def test_an_uploaded_file_is_served_back(stress_app, tmp_path):
    """The control for the probes below: the file route works for what a user uploaded."""
    mine = tmp_path / "mine.txt"
    mine.write_text("uploaded by me")
    stored = upload(stress_app, mine)
    status, body = raw_get(stress_app, f"/gradio_api/file={stored}")
    assert (status, body) == (200, "uploaded by me")


def traversal_probes(upload_dir: str, secret: dict, port: int) -> list[str]:
    passwd_forms = ["/etc/passwd", "//etc/passwd", "../../../../../../../../etc/passwd", "%2Fetc%2Fpasswd",
                    "..%2F..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd", "%252Fetc%252Fpasswd",
                    "..%252F..%252F..%252F..%252F..%252Fetc%252Fpasswd",
                    "%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                    "....//....//....//....//etc/passwd", "/etc/./passwd", "/etc//passwd", "file:///etc/passwd",
                    f"{upload_dir}/../../../../etc/passwd", f"{upload_dir}/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
                    f"{upload_dir}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/proc/self/root/etc/passwd",
                    "/proc/self/environ", "\\etc\\passwd", "..\\..\\..\\..\\etc\\passwd", "/etc/passwd%00.png"]
    elsewhere = [str(secret["text"]), str(ROOT / "app.py"), str(ROOT / "mmgpt" / ".." / "app.py"), "app.py",
                 "./app.py", "mmgpt/engine.py", f"{upload_dir}/../../../{secret['text']}",
                 f"http://127.0.0.1:{port}/gradio_api/info", f"http://localhost:{port}/config"]
    probes = []
    for target in passwd_forms + elsewhere:
        probes += [f"/gradio_api/file={target}", f"/file={target}", f"/gradio_api/file/{target.lstrip('/')}",
                   f"/file/{target.lstrip('/')}"]
    probes += [f"/static/{p}" for p in ("../../../../etc/passwd", "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
                                        "%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd")]
    probes += [f"/assets/{p}" for p in ("../../../../etc/passwd", "..%2f..%2f..%2f..%2fetc%2fpasswd")]
    probes += [f"/gradio_api/proxy=http://127.0.0.1:{port}/config", f"/proxy=http://127.0.0.1:{port}/config",
               "/gradio_api/proxy=file:///etc/passwd"]
    return probes


def test_file_routes_refuse_every_path_outside_the_upload_and_cache_folders(stress_app, secret):
    from gradio.utils import get_upload_folder

    port = int(stress_app.url.rstrip("/").rsplit(":", 1)[1])
    leaks = []
    for probe in traversal_probes(get_upload_folder(), secret, port):
        status, body = raw_get(stress_app, probe)
        if any(text in body for text in (PASSWD_LINE, secret["marker"], SOURCE_LINE, "HF_HUB_OFFLINE")):
            leaks.append((probe, status))
        elif probe.startswith("/gradio_api/file") and status not in (400, 403, 404):
            leaks.append((probe, status))
    assert leaks == []


def test_a_symlink_in_the_upload_folder_does_not_lead_outside(stress_app, secret):
    from gradio.utils import get_upload_folder

    folder = Path(get_upload_folder()) / ("probe-" + secrets.token_hex(4))
    folder.mkdir(parents=True)
    try:
        for name, target in (("passwd.txt", Path("/etc/passwd")), ("secret.txt", secret["text"]),
                             ("scene.png", secret["picture"]), ("speech.wav", secret["recording"])):
            (folder / name).symlink_to(target)
        (folder / "outside").symlink_to(secret["text"].parent, target_is_directory=True)
        for name in ("passwd.txt", "secret.txt", "outside/secret.txt"):
            status, body = raw_get(stress_app, f"/gradio_api/file={folder / name}")
            assert status == 403 and PASSWD_LINE not in body and secret["marker"] not in body, name
        # nor can a request hand the symlinked picture or recording to a model
        for api_name, data in (("caption", [file_data(folder / "scene.png"), "", stress.MMGPT_PRESET, True, "en"]),
                               ("transcribe", [file_data(folder / "speech.wav"), stress.MMGPT_PRESET, True, "en"])):
            result = call(stress_app, api_name, data)
            assert result.get("success") is False, (api_name, result)
    finally:
        for path in sorted(folder.rglob("*"), reverse=True):
            path.unlink()
        folder.rmdir()


@pytest.mark.parametrize("api_name", ["caption", "transcribe"])
def test_a_crafted_call_cannot_hand_a_server_file_to_a_model(stress_app, secret, api_name):
    """Inputs must be uploads: a path elsewhere on the server is refused before any handler runs."""
    own = secret["picture"] if api_name == "caption" else secret["recording"]
    port = int(stress_app.url.rstrip("/").rsplit(":", 1)[1])
    targets = [own, "/etc/passwd", f"{own.parent}/../{own.parent.name}/{own.name}", ROOT / "assets",
               f"http://127.0.0.1:{port}/gradio_api/file={own}"]
    for target in targets:
        data = [file_data(target), stress.MMGPT_PRESET, True, "en"]
        if api_name == "caption":
            data.insert(1, "")
        result = call(stress_app, api_name, data)
        assert result.get("success") is False, (target, result)
        assert secret["marker"] not in str(result) and PASSWD_LINE not in str(result)


# --- models -----------------------------------------------------------------------------------------------------

OUTSIDE_PRESETS = ["../../etc", "../../etc/passwd", "openai-community/gpt2-xl", "/etc", "assets/mmgpt-tiny",
                   "mmgpt-random/../gpt2", "MMGPT-RANDOM", " mmgpt-random", "", None, 7, ["gpt2"], {"name": "gpt2"}]


def test_a_crafted_call_cannot_load_a_model_outside_the_allow_list(stress_app, stress_engine, stress_presets):
    stress_engine.load(stress.MMGPT_PRESET)  # whatever is loaded before stays exactly as it is
    loaded, counts = stress_engine.loaded, dict(stress_engine.load_count)
    checkpoint = stress_presets[stress.MMGPT_PRESET].source  # a real checkpoint directory, named by path
    for preset in [*OUTSIDE_PRESETS, checkpoint]:
        calls = {
            "generate": stress.text_data(preset=preset),
            "caption": [file_data(upload(stress_app, stress.scene_png(Path(checkpoint).parent / "x.png"))), "", preset,
                        True, "en"],
            "reply": ["ROMEO:", preset, "en"],
        }
        for api_name, data in calls.items():
            result = call(stress_app, api_name, data)
            assert result.get("success") is False, (preset, api_name)
            assert "There is no model named" in str(result["output"].get("error")), (preset, api_name, result)
    assert stress_engine.loaded == loaded and dict(stress_engine.load_count) == counts


def test_the_engine_loads_only_presets_by_name(stress_presets):
    engine = Engine(device="cpu", presets=stress_presets)
    for name in [*OUTSIDE_PRESETS, stress_presets[stress.MMGPT_PRESET].source]:
        with pytest.raises(UnknownPresetError, match="Unknown model"):
            engine.load(name)
        with pytest.raises(UnknownPresetError):
            engine.stream(name, TextRequest("ROMEO:"))
    assert engine.loaded == [] and not engine.load_count


def test_trust_remote_code_is_never_true_anywhere_in_the_source():
    """Every mention of trust_remote_code in the project's Python says False (tests/test_loaders.py checks that
    every loader passes it)."""
    sources = []
    for directory, subdirectories, files in os.walk(ROOT):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".") and d not in ("runs", "__pycache__")]
        sources += [Path(directory) / name for name in files if name.endswith(".py")]
    mentions = []
    for path in sources:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "trust_remote_code" in line:
                mentions.append((f"{path.relative_to(ROOT)}:{number}", line.strip()))
    assert any(where.startswith("mmgpt/loaders.py") for where, _ in mentions)
    setting = re.compile(r"""trust_remote_code["']?\s*[=:]\s*(\w+)""")
    for where, line in mentions:
        for value in setting.findall(line):
            assert value == "False", (where, line)


# --- network ----------------------------------------------------------------------------------------------------


def test_the_app_binds_to_loopback_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert app.server_name() == "127.0.0.1" and app.launch_kwargs()["server_name"] == "127.0.0.1"
    monkeypatch.setenv("SPACE_ID", "someone/mmgpt")
    assert app.server_name() == "0.0.0.0"  # what Spaces require
    monkeypatch.setenv("GRADIO_SERVER_NAME", "192.0.2.1")
    assert app.server_name() == "192.0.2.1"


def other_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback."""
    found = set()
    try:
        found.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET))
    except OSError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # the default route's address; sends nothing
        try:
            probe.connect(("192.0.2.1", 9))
            found.add(probe.getsockname()[0])
        except OSError:
            pass
    return sorted(address for address in found if not address.startswith("127.") and address != "0.0.0.0")


def listening_on(port: int) -> dict[str, set[str]]:
    """The local addresses that listen on `port`, IPv4 and IPv6, from the kernel's table of TCP sockets (Linux).
    Unlike connecting from `other_addresses`, this checks something on a machine with no network but loopback."""
    found = {"tcp": set(), "tcp6": set()}
    for table in found:
        for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found[table].add(address)
    return found


def test_a_default_launch_is_reachable_on_loopback_only_and_sends_no_analytics(stress_engine, monkeypatch):
    import gradio.analytics

    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "True")  # the app's own setting must win over the environment
    sent = []
    monkeypatch.setattr(gradio.analytics, "_do_analytics_request", lambda *args, **kwargs: sent.append(args))
    monkeypatch.setattr(gradio.analytics, "_do_normal_analytics_request", lambda *args, **kwargs: sent.append(args))
    demo = app.build_demo(stress_engine)
    port = stress.free_port()
    demo.launch(**app.launch_kwargs(server_port=port, prevent_thread_lock=True, quiet=True))
    try:
        assert demo.analytics_enabled is False and demo.server_name == "127.0.0.1"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        assert listening_on(port) == {"tcp": {"0100007F"}, "tcp6": set()}  # 127.0.0.1, as the kernel writes it
        for address in other_addresses():
            with pytest.raises(OSError):
                socket.create_connection((address, port), timeout=2).close()
    finally:
        demo.close()
    assert sent == []


# --- privacy ----------------------------------------------------------------------------------------------------


class Everything(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        text = self.format(record)
        self.lines.append(text)


def test_no_prompt_picture_or_recording_reaches_the_logs(stress_app, tmp_path, capfd):
    """Requests carry a unique marker in every prompt and file name; with every logger at DEBUG, it never shows."""
    marker = "PRIVATE" + secrets.token_hex(6)
    handler = Everything()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    levels = [(logger, logger.level) for logger in loggers]
    root = logging.getLogger()
    root.addHandler(handler)
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    try:
        client = stress_app.client()
        picture = stress.scene_png(tmp_path / f"{marker}.png")
        recording = stress.tone_wav(tmp_path / f"{marker}.wav")
        prompt = f"{marker} ROMEO: my secret is {marker}"
        # The marker as a caption's start may leave mmgpt-tiny nothing to add (v4.2 often ends at once after a
        # prompt unlike any caption), so the caption may be empty; predict raises if the request failed.
        caption = client.predict(handle_file(str(picture)), marker, stress.MMGPT_PRESET, api_name="/caption")[0]
        assert isinstance(caption, str)
        assert client.predict(handle_file(str(recording)), stress.MMGPT_PRESET, api_name="/transcribe")[0]
        assert client.predict(**stress.text_args(prompt), api_name="/generate")[0]
        assert client.predict(prompt, stress.GPT2_PRESET, api_name="/reply")[0]
        # a prompt too long for the model: trimmed, with a note to the user (a Gradio warning) that quotes none of it
        long_prompt = " ".join([marker] * 600)
        messages = list(stress.sse_events(stress_app, "generate",
                                          stress.text_data(long_prompt, preset=stress.GPT2_PRESET)))
        notes = [m["log"] for m in messages if m.get("msg") == "log"]
        assert any("too long for this model" in note for note in notes), notes
        assert not any(marker in note for note in notes)
        assert messages[-1].get("success") is True, messages[-1]
        # and refusals, which quote what was wrong, never the prompt
        for overrides in (dict(task="summarize"), dict(preset=f"{marker}-model"), dict(temperature=f"{marker}")):
            result = call(stress_app, "generate", stress.text_data(prompt, **overrides))
            assert result.get("success") is False
        broken = tmp_path / f"{marker}-broken.png"
        broken.write_text(marker)
        uploaded = file_data(upload(stress_app, broken))
        result = call(stress_app, "caption", [uploaded, marker, stress.MMGPT_PRESET, True, "en"])
        assert result.get("success") is False
    finally:
        root.removeHandler(handler)
        for logger, level in levels:
            logger.setLevel(level)
    captured = capfd.readouterr()
    assert len(handler.lines) > 10  # the capture works: the server did log
    assert [line for line in handler.lines if marker in line] == []
    assert marker not in captured.out and marker not in captured.err
