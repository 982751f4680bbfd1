// Plays a reply's sentences as their audio arrives, one after the other, with the Web Audio API.
//
// Each sentence is decoded as soon as its WAV arrives and scheduled to start when the one
// before it ends, so there is no gap to fetch or decode between sentences. Decoding runs in a
// promise chain so that a short sentence decoded faster never jumps the queue. A long sentence
// arrives as several parts (same `seq`), each a complete WAV: they are queued like sentences and
// so play back to back; onPlay is called once per sentence, when its first part starts.

export class VoicePlayer {
  constructor({ onPlay = () => {}, onError = () => {} } = {}) {
    this.onPlay = onPlay;
    this.onError = onError;
    this.context = null;
    this.chain = Promise.resolve();
    this.nextStartAt = 0;
    this.sources = new Set();
    this.generation = 0;
    this.lastPlayed = null;
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

  /** Queue one sentence's audio, or one part of it (an ArrayBuffer holding a WAV file). */
  enqueue(seq, wav, meta = {}) {
    if (!this.unlock()) {
      this.onError(seq, new Error("This browser cannot play audio."));
      return;
    }
    const generation = this.generation;
    this.chain = this.chain.then(async () => {
      if (generation !== this.generation) return;
      let buffer;
      try {
        buffer = await this.context.decodeAudioData(wav.slice(0));
      } catch (error) {
        this.onError(seq, error);
        return;
      }
      if (generation !== this.generation) return;
      const source = this.context.createBufferSource();
      source.buffer = buffer;
      source.connect(this.context.destination);
      const startAt = Math.max(this.context.currentTime + 0.02, this.nextStartAt);
      source.start(startAt);
      this.nextStartAt = startAt + buffer.duration;
      this.sources.add(source);
      source.addEventListener("ended", () => this.sources.delete(source));
      const wait = Math.max(0, (startAt - this.context.currentTime) * 1000);
      setTimeout(() => {
        if (generation !== this.generation) return;
        const last = this.lastPlayed;
        if (last && last.seq === seq && last.message === meta.message) return; // a later part
        this.lastPlayed = { seq, message: meta.message };
        this.onPlay(seq, meta);
      }, wait);
    });
  }

  /** Stop what plays and drop what is queued (a stop, a new conversation). */
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
    this.nextStartAt = 0;
    this.lastPlayed = null;
  }
}
