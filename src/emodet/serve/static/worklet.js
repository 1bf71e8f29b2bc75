// AudioWorklet: the microphone's samples (at the context's rate, often 48 kHz) low-passed, resampled to
// 16 kHz mono float32 and posted to the page in chunks of 100 ms (transferred, not copied).

function lowpass(cutoff, taps) {
  // windowed-sinc FIR; cutoff in cycles per input sample; gain 1 at DC
  const h = new Float32Array(taps), m = (taps - 1) / 2;
  let sum = 0;
  for (let n = 0; n < taps; n++) {
    const x = n - m;
    const sinc = x === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * x) / (Math.PI * x);
    h[n] = sinc * (0.54 - 0.46 * Math.cos((2 * Math.PI * n) / (taps - 1)));
    sum += h[n];
  }
  for (let n = 0; n < taps; n++) h[n] /= sum;
  return h;
}

class EmodetCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.target = opts.targetRate || 16000;
    this.ratio = sampleRate / this.target;          // input samples per output sample
    this.chunk = Math.round((this.target * (opts.chunkMs || 100)) / 1000);
    this.taps = this.ratio > 1 ? lowpass(0.45 / this.ratio, 63) : lowpass(0.5, 1);
    this.hist = new Float32Array(this.taps.length); // the last inputs, a ring
    this.pos = 0;
    this.index = 0;      // absolute index of the next input sample
    this.next = 0;       // absolute input position of the next output sample
    this.prev = 0;       // the previous filtered sample
    this.out = new Float32Array(this.chunk);
    this.filled = 0;
  }

  push(x) {
    const L = this.taps.length;
    this.hist[this.pos] = x;
    let y = 0;
    for (let k = 0, j = this.pos; k < L; k++, j = j === 0 ? L - 1 : j - 1) y += this.taps[k] * this.hist[j];
    this.pos = (this.pos + 1) % L;
    const i = this.index++;
    while (this.next <= i) {                      // linear interpolation between filtered samples i-1 and i
      const frac = this.next - (i - 1);
      this.out[this.filled++] = this.prev + (y - this.prev) * frac;
      this.next += this.ratio;
      if (this.filled === this.chunk) {
        this.port.postMessage(this.out.buffer, [this.out.buffer]);
        this.out = new Float32Array(this.chunk);
        this.filled = 0;
      }
    }
    this.prev = y;
  }

  process(inputs) {
    const input = inputs[0];
    if (input && input.length) {
      const n = input[0].length, channels = input.length;
      for (let s = 0; s < n; s++) {
        let v = 0;
        for (let c = 0; c < channels; c++) v += input[c][s];
        this.push(v / channels);
      }
    }
    return true;
  }
}

registerProcessor("emodet-capture", EmodetCapture);
