// Ogg Opus (RFC 7845) from WebCodecs' encoded Opus packets, written by hand: the browser has
// an Opus encoder (AudioEncoder) but no Ogg muxer, and a segment must be a complete Ogg Opus
// file the server validates (MediaRecorder would give WebM, cut only between whole files).
"use strict";

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let r = i << 24;
    for (let j = 0; j < 8; j++) r = r & 0x80000000 ? (r << 1) ^ 0x04c11db7 : r << 1;
    table[i] = r >>> 0;
  }
  return table;
})();

function oggCrc(bytes) {
  let crc = 0;
  for (let i = 0; i < bytes.length; i++) crc = ((crc << 8) ^ CRC_TABLE[((crc >>> 24) ^ bytes[i]) & 0xff]) >>> 0;
  return crc;
}

export const PRE_SKIP = 312; // libopus's lookahead at 48 kHz, when the encoder gives none

export function opusHead(channels, preSkip, inputRate) {
  const head = new Uint8Array(19);
  head.set(new TextEncoder().encode("OpusHead"));
  const view = new DataView(head.buffer);
  view.setUint8(8, 1);
  view.setUint8(9, channels);
  view.setUint16(10, preSkip, true);
  view.setUint32(12, inputRate, true);
  return head;
}

function opusTags() {
  const vendor = new TextEncoder().encode("rollscribe browser recorder");
  const tags = new Uint8Array(8 + 4 + vendor.length + 4);
  tags.set(new TextEncoder().encode("OpusTags"));
  new DataView(tags.buffer).setUint32(8, vendor.length, true);
  tags.set(vendor, 12);
  return tags;
}

export class OggOpusWriter {
  constructor(head) {
    this.serial = (Math.random() * 0xffffffff) >>> 0;
    this.sequence = 0;
    this.pages = [];
    this.preSkip = new DataView(head.buffer, head.byteOffset).getUint16(10, true);
    this.samples = 0; // 48 kHz samples in the packets written
    this.pending = []; // packets of the page being filled
    this.pendingSegments = 0;
    this.page([head], 0, 2); // beginning of stream, alone on its page
    this.page([opusTags()], 0, 0);
  }

  page(packets, granule, flags) {
    const lacing = [];
    for (const p of packets) {
      for (let n = p.length; ; n -= 255) {
        lacing.push(Math.min(n, 255));
        if (n < 255) break;
      }
    }
    const bodyLength = packets.reduce((n, p) => n + p.length, 0);
    const page = new Uint8Array(27 + lacing.length + bodyLength);
    const view = new DataView(page.buffer);
    page.set([0x4f, 0x67, 0x67, 0x53]); // "OggS"
    view.setUint8(5, flags);
    view.setBigUint64(6, BigInt(granule), true);
    view.setUint32(14, this.serial, true);
    view.setUint32(18, this.sequence++, true);
    view.setUint8(26, lacing.length);
    page.set(lacing, 27);
    let at = 27 + lacing.length;
    for (const p of packets) { page.set(p, at); at += p.length; }
    view.setUint32(22, oggCrc(page), true);
    this.pages.push(page);
  }

  // One encoded packet and the samples (48 kHz) it holds.
  add(packet, samples) {
    // A page is written only when the next packet would not fit (or after a second of
    // packets), so the last packet is always at hand for the end-of-stream page.
    const segments = Math.floor(packet.length / 255) + 1;
    if (this.pendingSegments + segments > 255 || this.pending.length >= 50) this.flush(0);
    this.pending.push(packet);
    this.pendingSegments += segments;
    this.samples += samples;
  }

  flush(flags, granule = this.preSkip + this.samples) {
    if (!this.pending.length && !flags) return;
    this.page(this.pending, granule, flags);
    this.pending = [];
    this.pendingSegments = 0;
  }

  // The end of the stream; `inputSamples`: what was captured, so the decoder drops the
  // encoder's padding of the last packet.
  finish(inputSamples) {
    const end = this.preSkip + Math.min(this.samples, inputSamples);
    // A segment with no packet at all still ends its stream: one 20 ms silence frame.
    if (!this.pending.length) this.pending.push(new Uint8Array([0xf8, 0xff, 0xfe]));
    this.flush(4, end);
    return new Blob(this.pages, { type: "audio/ogg" });
  }
}
