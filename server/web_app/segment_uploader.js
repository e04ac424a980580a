// Uploads closed segments with tus-js-client, one at a time in the order they closed, from
// the browser's spool (IndexedDB) so that a reload finds them again. Each upload's
// fingerprint names its chunk, so after a network drop or a reload tus-js-client asks the
// server for the offset it has and sends only the rest. Network trouble and "later"
// answers are retried for as long as the page is open; an answer that stays true however
// often it is asked (a refused chunk) sets the segment aside and says so.
import { authHeaders } from "/app/static/api.js";
import { segmentStore } from "/app/static/segment_store.js";

const CHUNK_BYTES = 32 * 1024; // a PATCH: what a drop can cost at most
const MAX_BACKOFF_MS = 10000;
// The 409s a later try resolves (it asks the server for its offset first).
const TEMPORARY_CONFLICTS = ["ERR_MISMATCHED_OFFSET", "ERR_UPLOAD_TAKEN_OVER"];

function statusOf(err) { return err && err.originalResponse ? err.originalResponse.getStatus() : 0; }
function bodyOf(err) { return err && err.originalResponse ? err.originalResponse.getBody() || "" : ""; }

// "409 ERR_MEETING_CLOSED: the meeting is complete…", from the server's JSON error.
function reasonOf(err) {
  const body = bodyOf(err);
  try {
    const { code, message } = JSON.parse(body).error;
    return `${statusOf(err)} ${code}: ${message}`.slice(0, 300);
  } catch {
    return `${statusOf(err)} ${body}`.slice(0, 300);
  }
}

export function isTemporary(err) {
  const status = statusOf(err);
  if (status === 409) return TEMPORARY_CONFLICTS.some((code) => bodyOf(err).includes(code));
  return status === 0 || status >= 500 || [408, 423, 425, 429].includes(status);
}

export function fingerprintOf(segment) {
  return `rollscribe-${segment.meetingId}-${segment.track}-${segment.seq}`;
}

export class SegmentUploader {
  constructor({ onChange, onProblem }) {
    this.queue = [];
    this.uploaded = 0;
    this.setAside = 0;
    this.sentBytes = 0;
    this.onChange = onChange || (() => {});
    this.onProblem = onProblem || (() => {});
    this.running = null;
    this.idleWaiters = [];
  }

  get pending() { return this.queue.length; }

  // A closed segment: kept in IndexedDB first, then queued.
  async add(segment) {
    await segmentStore.put(segment);
    this.enqueue(segment);
  }

  enqueue(segment) {
    this.queue.push(segment);
    this.onChange();
    if (!this.running) this.running = this.drain();
  }

  // Resolves once every queued segment is on the server (or set aside).
  idle() {
    if (!this.running) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  async drain() {
    while (this.queue.length) {
      const segment = this.queue[0];
      const outcome = await this.upload(segment);
      if (outcome === "uploaded") {
        this.uploaded++;
        await segmentStore.remove(segment);
      } else {
        this.setAside++;
        await segmentStore.put({ ...segment, failed: outcome });
      }
      this.queue.shift();
      this.onChange();
    }
    this.running = null;
    this.idleWaiters.splice(0).forEach((resolve) => resolve());
  }

  upload(segment) {
    return new Promise((resolve) => {
      let failures = 0;
      const upload = new tus.Upload(segment.blob, {
        endpoint: "/files/",
        chunkSize: CHUNK_BYTES,
        retryDelays: null, // retried below, for ever, with the page's own backoff
        headers: authHeaders(),
        metadata: {
          meeting_id: segment.meetingId,
          track: segment.track,
          seq: String(segment.seq),
          start_ms: String(segment.startMs),
          track_label: segment.label,
          filename: `${segment.track}-${segment.seq}.opus`,
          filetype: "audio/ogg",
        },
        fingerprint: async () => fingerprintOf(segment),
        storeFingerprintForResuming: true,
        removeFingerprintOnSuccess: true,
        onProgress: () => { if (failures) { failures = 0; this.onProblem(null); } },
        onSuccess: () => { this.sentBytes += segment.blob.size; this.onProblem(null); resolve("uploaded"); },
        onError: (err) => {
          if (!isTemporary(err)) {
            const reason = reasonOf(err);
            this.onProblem(`The server refused ${segment.track} segment ${segment.seq} (${reason}); it is kept in this browser and the meeting will show a gap there.`);
            resolve(reason);
            return;
          }
          failures++;
          this.onProblem(statusOf(err)
            ? `The server answered ${statusOf(err)}; trying again.`
            : "The server cannot be reached; recording goes on and uploads catch up when it is back.");
          const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(failures, 5));
          setTimeout(() => upload.start(), delay);
        },
      });
      upload.findPreviousUploads().then((previous) => {
        if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
        upload.start();
      });
    });
  }
}
