#!/usr/bin/env bash
# Set up a fresh clone: system packages (when run as root), a .venv, and the pinned Python requirements.
#   bash scripts/setup.sh          # what the app needs
#   bash scripts/setup.sh --dev    # plus what the tests, training and evaluation need (requirements-dev.txt, piper
#                                  # among it; chromium, the flite and festival speech synthesizers, three festival
#                                  # voices)
# Re-running is cheap: pip runs only when a requirements file changed since the last install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dev=0
[[ "${1:-}" == "--dev" ]] && dev=1

# --- system packages: espeak-ng (speech examples, tests), ffmpeg (webm/m4a uploads), chromium (browser tests) ---
packages=()
command -v espeak-ng >/dev/null || packages+=(espeak-ng)
command -v ffmpeg >/dev/null || packages+=(ffmpeg)
if [[ $dev == 1 ]]; then
    command -v chromium >/dev/null || packages+=(chromium)
    command -v flite >/dev/null || packages+=(flite)
    command -v text2wave >/dev/null || packages+=(festival)
    for voice in festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts; do  # mmgpt.data.speech.OTHER_*_VOICES
        dpkg -s "$voice" >/dev/null 2>&1 || packages+=("$voice")
    done
fi
command -v python3 >/dev/null || packages+=(python3)
if ! python3 -c "import ensurepip, venv" 2>/dev/null; then packages+=(python3-venv); fi
if (( ${#packages[@]} )); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "setup: apt-get install ${packages[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    else
        echo "setup: missing system packages: ${packages[*]}; install them with: sudo apt-get install -y ${packages[*]}" >&2
    fi
fi

# --- Python environment ---------------------------------------------------------------------------------------
python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    "$python" -c 'import sys; assert sys.version_info >= (3, 11), "mmgpt needs Python 3.11 or newer (tomllib, numpy 2.4)"'
    echo "setup: creating .venv with $("$python" --version)"
    "$python" -m venv .venv
fi
requirements=(requirements.txt)
[[ $dev == 1 ]] && requirements+=(requirements-dev.txt)
stamp=.venv/.mmgpt-requirements
wanted=$(cat "${requirements[@]}" | sha256sum | cut -d' ' -f1)-$dev
if [[ ! -f $stamp || $(cat "$stamp") != "$wanted" ]]; then
    echo "setup: pip install -r ${requirements[*]}"
    args=()
    for file in "${requirements[@]}"; do args+=(-r "$file"); done
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "${args[@]}"
    echo "$wanted" > "$stamp"
fi
