// One track's audio into Ogg Opus segments as it is captured: samples go to a WebCodecs
// AudioEncoder as they arrive (nothing of the meeting is kept as PCM), and every
// `segmentSeconds` of captured samples the segment closes: its encoder is flushed and
// closed, its Ogg stream ends, and a fresh encoder starts the next one, so every segment
// is a complete file that decodes on its own. Time is counted in captured samples, never
// read from the clock, so tracks stay aligned however long the meeting.
import { OggOpusWriter, PRE_SKIP, opusHead } from "/app/static/ogg_opus_writer.js";

export const RATE = 48000;
const BITRATE = 32000;

function preSkipOf(metadata) {
  // An OpusHead from the encoder, when the browser gives one, says its real lookahead.
  const description = metadata && metadata.decoderConfig && metadata.decoderConfig.description;
  if (!description) return PRE_SKIP;
  const bytes = new Uint8Array(description instanceof ArrayBuffer ? description : description.buffer);
  return bytes.length >= 12 ? bytes[10] | (bytes[11] << 8) : PRE_SKIP;
}

export class TrackEncoder {
  // position: where in the meeting (48 kHz samples) this track's next sample belongs.
  constructor({ track, segmentSeconds, nextSeq, position, onSegment, onError }) {
    this.track = track;
    this.segmentSamples = Math.round(segmentSeconds * RATE);
    this.nextSeq = nextSeq;
    this.position = position;
    this.onSegment = onSegment;
    this.onError = onError;
    this.current = null;
    this.closing = Promise.resolve();
    this.peak = 0;
  }

  open() {
    const segment = { seq: this.nextSeq++, start: this.position, samples: 0, writer: null };
    segment.encoder = new AudioEncoder({
      output: (chunk, metadata) => {
        if (!segment.writer) segment.writer = new OggOpusWriter(opusHead(1, preSkipOf(metadata), RATE));
        const packet = new Uint8Array(chunk.byteLength);
        chunk.copyTo(packet);
        segment.writer.add(packet, Math.round(((chunk.duration || 20000) * RATE) / 1e6));
      },
      error: (err) => this.onError(err),
    });
    segment.encoder.configure({
      codec: "opus", sampleRate: RATE, numberOfChannels: 1, bitrate: BITRATE,
      opus: { frameDuration: 20000, application: "voip" },
    });
    this.current = segment;
  }

  push(frames) {
    if (!this.current) this.open();
    const segment = this.current;
    for (let i = 0; i < frames.length; i++) this.peak = Math.max(this.peak, Math.abs(frames[i]));
    const data = new AudioData({
      format: "f32-planar", sampleRate: RATE, numberOfFrames: frames.length, numberOfChannels: 1,
      timestamp: Math.round((segment.samples * 1e6) / RATE), data: frames,
    });
    segment.encoder.encode(data);
    data.close();
    segment.samples += frames.length;
    this.position += frames.length;
    if (segment.samples >= this.segmentSamples) this.cut();
  }

  // The loudest sample since the last call (0..1), for a level meter.
  takePeak() { const p = this.peak; this.peak = 0; return p; }

  // Closes the open segment (if it holds audio); resolves when it has been handed on.
  cut() {
    const segment = this.current;
    this.current = null;
    if (!segment || !segment.samples) return this.closing;
    this.closing = this.closing.then(async () => {
      await segment.encoder.flush();
      segment.encoder.close();
      const writer = segment.writer || new OggOpusWriter(opusHead(1, PRE_SKIP, RATE));
      await this.onSegment({
        track: this.track,
        seq: segment.seq,
        startMs: Math.round((segment.start * 1000) / RATE),
        durationMs: Math.round((segment.samples * 1000) / RATE),
        blob: writer.finish(segment.samples),
      });
    }).catch((err) => this.onError(err));
    return this.closing;
  }
}
