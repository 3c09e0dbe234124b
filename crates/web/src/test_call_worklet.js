// AudioWorklet for the browser test call. Runs at the AudioContext's rate
// (usually 48 kHz): the microphone is low-passed and resampled to 8 kHz and
// posted to the page in 20 ms frames (160 Int16 samples); the agent's 8 kHz
// frames, posted in by the page, are resampled up and played.
const OUT_RATE = 8000;
const FRAME = 160;

class TestCallProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = OUT_RATE / sampleRate; // output samples per input sample
    this.phase = 0;
    this.lp = 0; // one-pole low-pass state (anti-aliasing before decimation)
    this.alpha = Math.min(1, (2 * Math.PI * 3400) / sampleRate);
    this.frame = new Int16Array(FRAME);
    this.filled = 0;
    // Playback: a ring of 8 kHz samples (4 s), read with linear interpolation.
    this.ring = new Float32Array(OUT_RATE * 4);
    this.readPos = 0; // fractional, in 8 kHz samples
    this.writePos = 0;
    this.port.onmessage = (e) => {
      const pcm = new Int16Array(e.data);
      for (let i = 0; i < pcm.length; i++) {
        this.ring[this.writePos % this.ring.length] = pcm[i] / 32768;
        this.writePos++;
      }
      // Never fall more than the ring behind: drop the oldest audio.
      if (this.writePos - this.readPos > this.ring.length) this.readPos = this.writePos - this.ring.length;
    };
  }

  process(inputs, outputs) {
    const input = inputs[0] && inputs[0][0];
    if (input) {
      for (let i = 0; i < input.length; i++) {
        this.lp += this.alpha * (input[i] - this.lp);
        this.phase += this.step;
        if (this.phase >= 1) {
          this.phase -= 1;
          const s = Math.max(-1, Math.min(1, this.lp));
          this.frame[this.filled++] = s < 0 ? s * 32768 : s * 32767;
          if (this.filled === FRAME) {
            this.port.postMessage(this.frame.buffer.slice(0));
            this.filled = 0;
          }
        }
      }
    }
    const out = outputs[0] && outputs[0][0];
    if (out) {
      for (let i = 0; i < out.length; i++) {
        if (this.readPos + 1 < this.writePos) {
          const k = Math.floor(this.readPos);
          const f = this.readPos - k;
          const a = this.ring[k % this.ring.length];
          const b = this.ring[(k + 1) % this.ring.length];
          out[i] = a + (b - a) * f;
          this.readPos += this.step;
        } else {
          out[i] = 0;
        }
      }
      for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    }
    return true;
  }
}

registerProcessor("test-call", TestCallProcessor);
