// Plays a reply's speech as its chunks arrive, gap-free, with the Web Audio API.
//
// The server sends each sentence (`seq`) as a stream of small chunks (`chunk` 0, 1, …, the last
// marked), each a complete WAV file, starting while the text is still being written and going
// on after the text's `end`. Each chunk is decoded as soon as it arrives and scheduled on the
// audio clock to start exactly when the one before it ends (sample-accurate, so there is no
// gap or click between chunks or sentences); decoding runs in a promise chain so that a short
// chunk decoded faster never jumps the queue. If a chunk arrives after the one before it has
// finished (the server fell behind), it starts at once. onPlay is called once per sentence,
// when its first chunk starts; onSpeaking(true/false) when the player starts or stops being
// audible (the page's "speaking" indicator); stop() silences it at once.

export class VoicePlayer {
  constructor({ onPlay = () => {}, onError = () => {}, onSpeaking = () => {} } = {}) {
    this.onPlay = onPlay;
    this.onError = onError;
    this.onSpeaking = onSpeaking;
    this.context = null;
    this.chain = Promise.resolve();
    this.nextStartAt = 0;
    this.sources = new Set();
    this.pending = 0; // chunks queued for decoding, not yet scheduled
    this.generation = 0;
    this.lastPlayed = null;
    this.speaking = false;
  }

  get supported() {
    return Boolean(window.AudioContext || window.webkitAudioContext);
  }

  /** Create or resume the audio context; browsers allow that only inside a user gesture. */
  unlock() {
    if (!this.supported) return false;
    if (!this.context) {
      const Context = window.AudioContext || window.webkitAudioContext;
      this.context = new Context();
    }
    if (this.context.state === "suspended") this.context.resume().catch(() => {});
    return true;
  }

  /** Queue one chunk of a sentence's audio (an ArrayBuffer holding a WAV file). */
  enqueue(seq, wav, meta = {}) {
    if (!this.unlock()) {
      this.onError(seq, new Error("This browser cannot play audio."));
      return;
    }
    const generation = this.generation;
    this.pending += 1;
    this.setSpeaking(true);
    this.chain = this.chain.then(async () => {
      if (generation !== this.generation) return;
      let buffer;
      try {
        buffer = await this.context.decodeAudioData(wav.slice(0));
      } catch (error) {
        this.pending -= 1;
        this.onError(seq, error);
        this.settle();
        return;
      }
      this.pending -= 1;
      if (generation !== this.generation) return;
      const source = this.context.createBufferSource();
      source.buffer = buffer;
      source.connect(this.context.destination);
      const startAt = Math.max(this.context.currentTime + 0.01, this.nextStartAt);
      source.start(startAt);
      this.nextStartAt = startAt + buffer.duration;
      this.sources.add(source);
      source.addEventListener("ended", () => {
        this.sources.delete(source);
        if (generation === this.generation) this.settle();
      });
      const wait = Math.max(0, (startAt - this.context.currentTime) * 1000);
      setTimeout(() => {
        if (generation !== this.generation) return;
        const last = this.lastPlayed;
        if (last && last.seq === seq && last.message === meta.message) return; // a later chunk
        this.lastPlayed = { seq, message: meta.message };
        this.onPlay(seq, meta);
      }, wait);
    });
  }

  /** Not speaking any more once nothing plays and nothing waits to be decoded. */
  settle() {
    if (this.sources.size === 0 && this.pending === 0) this.setSpeaking(false);
  }

  setSpeaking(speaking) {
    if (this.speaking === speaking) return;
    this.speaking = speaking;
    this.onSpeaking(speaking);
  }

  /** Stop what plays and drop what is queued (Stop, Esc, a new message, Voice off). */
  stop() {
    this.generation += 1;
    for (const source of this.sources) {
      try {
        source.stop();
      } catch {
        // already stopped
      }
    }
    this.sources.clear();
    this.pending = 0;
    this.nextStartAt = 0;
    this.lastPlayed = null;
    this.setSpeaking(false);
  }
}
