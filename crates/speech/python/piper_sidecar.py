"""Piper TTS sidecar for switchboard-speech.

One process per server: the voice is loaded once, then requests are served
in order over a tiny protocol.

stdin, one JSON object per line:
    {"id": 7, "text": "Hello there."}    synthesise
    {"cancel": 7}                          stop request 7 after the current chunk

stdout, binary records: kind (1 byte), id (u32 LE), length (u32 LE), payload.
    b"R"  ready; payload: JSON {"sample_rate": 22050}   (id 0, sent once)
    b"A"  audio; payload: s16le mono PCM at sample_rate
    b"E"  end of request id (payload empty)
    b"X"  error for request id; payload: UTF-8 message

Run as: python piper_sidecar.py MODEL.onnx [CONFIG.json]
Environment: PIPER_LENGTH_SCALE, PIPER_NOISE_SCALE, PIPER_NOISE_W, PIPER_SPEAKER.
"""

import json
import os
import queue
import struct
import sys
import threading

out = sys.stdout.buffer
out_lock = threading.Lock()


def send(kind, req_id, payload=b""):
    with out_lock:
        out.write(kind + struct.pack("<II", req_id & 0xFFFFFFFF, len(payload)))
        out.write(payload)
        out.flush()


def env_float(name):
    value = os.environ.get(name)
    return float(value) if value else None


def main():
    if len(sys.argv) < 2:
        send(b"X", 0, b"usage: piper_sidecar.py MODEL.onnx [CONFIG.json]")
        return 2
    try:
        from piper import PiperVoice, SynthesisConfig
    except ImportError as exc:
        send(b"X", 0, ("cannot import piper (pip install piper-tts): %s" % exc).encode())
        return 3
    try:
        voice = PiperVoice.load(sys.argv[1], config_path=sys.argv[2] if len(sys.argv) > 2 else None)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        send(b"X", 0, ("cannot load voice %s: %s" % (sys.argv[1], exc)).encode())
        return 4
    speaker = os.environ.get("PIPER_SPEAKER")
    syn = SynthesisConfig(
        speaker_id=int(speaker) if speaker else None,
        length_scale=env_float("PIPER_LENGTH_SCALE"),
        noise_scale=env_float("PIPER_NOISE_SCALE"),
        noise_w_scale=env_float("PIPER_NOISE_W"),
    )
    # Warm up: the first inference pays for graph optimisation.
    for _ in voice.synthesize("Hello.", syn):
        pass
    send(b"R", 0, json.dumps({"sample_rate": voice.config.sample_rate}).encode())

    requests = queue.Queue()
    cancelled = set()
    cancel_lock = threading.Lock()

    def reader():
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "cancel" in msg:
                with cancel_lock:
                    cancelled.add(int(msg["cancel"]))
            elif "id" in msg:
                requests.put(msg)
        requests.put(None)

    threading.Thread(target=reader, daemon=True).start()

    while True:
        msg = requests.get()
        if msg is None:
            return 0
        req_id = int(msg["id"])
        try:
            for chunk in voice.synthesize(str(msg.get("text", "")), syn):
                with cancel_lock:
                    if req_id in cancelled:
                        break
                send(b"A", req_id, chunk.audio_int16_bytes)
            send(b"E", req_id)
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            send(b"X", req_id, str(exc).encode())
        with cancel_lock:
            cancelled.discard(req_id)


if __name__ == "__main__":
    sys.exit(main())
