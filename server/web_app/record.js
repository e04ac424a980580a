// The browser recorder: the microphone (and, if asked, a tab's or the screen's audio) as
// tracks of one meeting, encoded to Ogg Opus segments in the page (track_encoder.js),
// kept in IndexedDB until uploaded (segment_uploader.js), and finalized with each track's
// last seq. A reload or a crash of the tab loses at most each track's open segment: the
// closed ones are uploaded on the next visit, into the same meeting, which can then be
// continued (the time away becomes a gap) or finished.
import { ApiError, api, keyForm, unauthorizedMessage, clock } from "/app/static/api.js";
import { MeetingView } from "/app/static/meeting_view.js";
import { recordingState, segmentStore } from "/app/static/segment_store.js";
import { SegmentUploader } from "/app/static/segment_uploader.js";
import { RATE, TrackEncoder } from "/app/static/track_encoder.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// ?segment=N: seconds per segment (the most a crash of the tab can lose per track).
const SEGMENT_SECONDS = Math.min(300, Math.max(2, Number(params.get("segment")) || 30));
const LABELS = { mic: "Microphone", tab: "Tab audio" };

const message = $("message");
let state = recordingState.load(); // {meetingId, title, startedAt, tracks: {name: {label, nextSeq, position}}, finishing}
let capture = null; // {context, streams, encoders}
let view = null;
let problem = null;

const uploader = new SegmentUploader({ onChange: showProgress, onProblem: (text) => { problem = text; showProgress(); } });

function say(text) { message.textContent = text; }

function showError(err) {
  if (err instanceof ApiError && err.status === 401) keyForm(message, unauthorizedMessage(err), () => location.reload());
  else say(err.message || String(err));
}

function showProgress() {
  const closed = state ? Object.values(state.tracks).reduce((n, t) => n + t.nextSeq, 0) : 0;
  const parts = [`${closed} segments closed`, `${uploader.uploaded} uploaded`];
  if (uploader.pending) parts.push(`${uploader.pending} waiting to upload`);
  if (uploader.setAside) parts.push(`${uploader.setAside} refused`);
  $("progress").textContent = parts.join(" · ") + (problem ? ` — ${problem}` : "");
}

function watch(meetingId) {
  if (view) return;
  $("meeting").hidden = false;
  $("meeting-link").href = `/app/meetings/${encodeURIComponent(meetingId)}`;
  view = new MeetingView(
    meetingId,
    { state: $("state"), lag: $("lag"), live: $("live"), strips: $("strips"), lines: $("lines"), final: $("final") },
    showError,
  );
  view.start();
}

async function microphones() {
  // Device names are only shown once the page may use a microphone.
  try {
    const probe = await navigator.mediaDevices.getUserMedia({ audio: true });
    probe.getTracks().forEach((t) => t.stop());
  } catch (err) {
    say(`This page may not use a microphone (${err.name}). Allow it in the browser and reload.`);
    return;
  }
  const select = $("microphone");
  for (const device of await navigator.mediaDevices.enumerateDevices()) {
    if (device.kind !== "audioinput" || device.deviceId === "default") continue;
    select.append(new Option(device.label || device.deviceId, device.deviceId));
  }
}

async function openStreams() {
  const deviceId = $("microphone").value;
  const constraints = { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 };
  if (deviceId) constraints.deviceId = { exact: deviceId };
  const streams = { mic: await navigator.mediaDevices.getUserMedia({ audio: constraints }) };
  if ($("tab").checked) {
    try {
      const shared = await navigator.mediaDevices.getDisplayMedia({ audio: true, video: true });
      shared.getVideoTracks().forEach((t) => t.stop()); // only its sound is recorded
      if (shared.getAudioTracks().length) streams.tab = shared;
      else say("That share has no sound (choose a tab and tick “Share tab audio”); recording the microphone only.");
    } catch (err) {
      say(`No tab or screen audio (${err.name}); recording the microphone only.`);
    }
  }
  return streams;
}

function saveClosed(segment) {
  const track = state.tracks[segment.track];
  track.nextSeq = Math.max(track.nextSeq, segment.seq + 1);
  track.position = Math.max(track.position, Math.round(((segment.startMs + segment.durationMs) * RATE) / 1000));
  recordingState.save(state);
}

async function startCapture(streams) {
  const context = new AudioContext({ sampleRate: RATE });
  await context.audioWorklet.addModule("/app/static/capture_worklet.js");
  // Time away (a reload, a crash) is a gap: each track goes on from where the wall clock
  // says the meeting is now, never before what it already holds.
  const now = Math.round(((Date.now() - state.startedAt) * RATE) / 1000);
  const encoders = {};
  const meters = [];
  for (const [name, stream] of Object.entries(streams)) {
    const track = (state.tracks[name] ||= { label: LABELS[name], nextSeq: 0, position: 0 });
    const encoder = new TrackEncoder({
      track: name,
      segmentSeconds: SEGMENT_SECONDS,
      nextSeq: track.nextSeq,
      position: Math.max(track.position, now),
      onSegment: async (segment) => {
        const stored = { ...segment, meetingId: state.meetingId, label: track.label };
        saveClosed(stored);
        await uploader.add(stored);
      },
      onError: (err) => say(`Encoding ${name} failed: ${err.message}`),
    });
    const node = new AudioWorkletNode(context, "rollscribe-capture", { numberOfInputs: 1, numberOfOutputs: 1 });
    node.port.onmessage = (event) => encoder.push(event.data);
    context.createMediaStreamSource(stream).connect(node);
    node.connect(context.destination); // pulled by the graph; it writes no sound
    encoders[name] = encoder;
    const meter = Object.assign(document.createElement("meter"), { min: 0, max: 1, value: 0, id: `level-${name}` });
    const label = Object.assign(document.createElement("label"), { htmlFor: meter.id, textContent: `${track.label} ` });
    const row = Object.assign(document.createElement("div"), { className: "row" });
    row.append(label, meter);
    meters.push([encoder, meter]);
    $("levels").append(row);
  }
  recordingState.save(state);
  const timer = setInterval(() => {
    for (const [encoder, meter] of meters) meter.value = encoder.takePeak();
    $("elapsed").textContent = clock(encoders.mic.position / RATE);
    showProgress();
  }, 100);
  capture = { context, streams, encoders, timer };
  $("setup").hidden = true;
  $("interrupted").hidden = true;
  $("recording").hidden = false;
  $("stop").focus();
}

async function createMeeting(tracks) {
  const title = $("title").value.trim();
  const meeting = await api("/meetings", {
    method: "POST",
    body: {
      title: title || `Recorded in the browser ${new Date().toLocaleString()}`,
      tracks,
      track_labels: Object.fromEntries(tracks.map((t) => [t, LABELS[t]])),
      // A retried request answers the same meeting.
      external_id: `browser-${crypto.randomUUID()}`,
    },
  });
  return meeting;
}

async function start(event) {
  event.preventDefault();
  $("start").disabled = true;
  let streams;
  try {
    streams = await openStreams();
  } catch (err) {
    say(`The microphone could not be opened (${err.name}: ${err.message}).`);
    $("start").disabled = false;
    return;
  }
  try {
    // Every track the browser could give, so a tab track can join later.
    const meeting = await createMeeting(["mic", "tab"]);
    state = { meetingId: meeting.id, title: meeting.title, startedAt: Date.now(), tracks: {}, finishing: false };
    await startCapture(streams);
    watch(meeting.id);
  } catch (err) {
    Object.values(streams).forEach((s) => s.getTracks().forEach((t) => t.stop()));
    $("start").disabled = false;
    showError(err);
  }
}

async function stopCapture() {
  if (!capture) return;
  const { context, streams, encoders, timer } = capture;
  capture = null;
  Object.values(streams).forEach((s) => s.getTracks().forEach((t) => t.stop()));
  await context.close(); // no more samples after this
  clearInterval(timer);
  await Promise.all(Object.values(encoders).map((e) => e.cut()));
}

// Waits out uploads, then finalizes with each track's last seq (retrying while the server
// is away); then the meeting's own page.
async function finish() {
  $("stop").disabled = true;
  $("finish").disabled = true;
  await stopCapture();
  state.finishing = true;
  recordingState.save(state);
  say("Finishing: uploading what is left…");
  await uploader.idle();
  const lastSeq = Object.fromEntries(
    Object.entries(state.tracks).filter(([, t]) => t.nextSeq > 0).map(([name, t]) => [name, t.nextSeq - 1]),
  );
  for (let attempt = 0; ; attempt++) {
    try {
      await api(`/meetings/${encodeURIComponent(state.meetingId)}/finalize`, { method: "POST", body: { last_seq: lastSeq } });
      break;
    } catch (err) {
      if (err.status && err.status < 500 && err.status !== 429) {
        say(`The server refused to finish the meeting: ${err.message}`);
        return;
      }
      say("Finishing: the server cannot be reached; trying again…");
      await new Promise((r) => setTimeout(r, Math.min(10000, 1000 * 2 ** attempt)));
    }
  }
  const meetingId = state.meetingId;
  recordingState.clear();
  location.href = `/app/meetings/${encodeURIComponent(meetingId)}`;
}

async function resumeSpool() {
  // Closed segments of any earlier visit, oldest first; they go before anything new.
  const stored = (await segmentStore.all()).filter((s) => !s.failed);
  stored.sort((a, b) => a.startMs - b.startMs || a.seq - b.seq);
  stored.forEach((segment) => uploader.enqueue(segment));
}

window.addEventListener("beforeunload", (event) => {
  if (capture || uploader.pending) event.preventDefault(); // the browser asks "leave?"
});

$("setup").addEventListener("submit", start);
$("stop").addEventListener("click", finish);
$("finish").addEventListener("click", finish);
$("continue").addEventListener("click", async () => {
  $("continue").disabled = true;
  try {
    const streams = await openStreams();
    await startCapture(streams);
  } catch (err) {
    $("continue").disabled = false;
    showError(err);
  }
});

// What this browser cannot do is said before anything starts.
async function unsupported() {
  if (!window.isSecureContext) return "Browsers give microphones only to pages served over HTTPS or from localhost; open this page that way.";
  if (typeof AudioEncoder === "undefined" || typeof AudioWorkletNode === "undefined") {
    return "This browser cannot encode Opus in the page (WebCodecs' AudioEncoder); record with a Chromium-based browser or with `rollscribe record`.";
  }
  const { supported } = await AudioEncoder.isConfigSupported({ codec: "opus", sampleRate: RATE, numberOfChannels: 1 });
  return supported ? null : "This browser's AudioEncoder has no Opus; record with a Chromium-based browser or with `rollscribe record`.";
}

const missing = await unsupported();
if (missing) {
  say(missing);
  $("start").disabled = true;
  $("continue").disabled = true;
}
await resumeSpool();
if (state) {
  $("setup").hidden = true;
  $("interrupted").hidden = false;
  $("interrupted-text").textContent =
    `A recording in this browser (“${state.title}”) was interrupted. What it recorded before is ` +
    "being uploaded into the same meeting; continue recording into it, or finish it.";
  watch(state.meetingId);
  showProgress();
  if (state.finishing) finish();
  else microphones();
} else {
  await microphones();
}
