// One meeting, kept up to date: its state, a strip of chunk states per track, its lag and
// its transcript lines, refreshed when its event stream says something changed. Used by the
// meeting page and under the recorder.
import { api, clock, followEvents, showLines } from "/app/static/api.js";

// What each colour of a strip means (the state is also each box's label).
const LEGEND = [
  ["uploading", "uploading"], ["queued", "queued"], ["transcribing", "transcribing"],
  ["transcribed", "transcribed"], ["failed", "failed (press to retry)"], ["gap", "gap (never arrived)"],
];

function legend() {
  const row = Object.assign(document.createElement("p"), { className: "legend muted" });
  for (const [state, text] of LEGEND) {
    const box = Object.assign(document.createElement("span"), { className: `chunk ${state}` });
    box.setAttribute("aria-hidden", "true");
    row.append(box, document.createTextNode(` ${text} `));
  }
  return row;
}

export class MeetingView {
  constructor(meetingId, parts, onError) {
    this.id = meetingId;
    this.parts = parts; // {state, lag, live, strips, lines, final, title}
    this.onError = onError;
    this.pending = null;
  }

  start() {
    this.refresh();
    this.stop = followEvents(this.id, () => this.refreshSoon(), (s) => {
      if (this.parts.live) this.parts.live.textContent = s === "live" ? "live" : s;
    });
    // The stream says when chunks change; progress (lag) also moves between events.
    this.timer = setInterval(() => this.refresh(), 5000);
  }

  close() { this.stop && this.stop(); clearInterval(this.timer); }

  refreshSoon() {
    if (this.pending) return;
    this.pending = setTimeout(() => { this.pending = null; this.refresh(); }, 200);
  }

  async refresh() {
    try {
      const id = encodeURIComponent(this.id);
      const [view, transcript] = await Promise.all([
        api(`/meetings/${id}`),
        api(`/meetings/${id}/transcript?format=json`),
      ]);
      this.render(view, transcript);
    } catch (err) {
      this.onError(err);
    }
  }

  render(view, transcript) {
    const p = this.parts;
    if (p.title) p.title.textContent = view.title || view.id;
    if (p.state) p.state.textContent = view.state;
    if (p.lag) p.lag.textContent = `transcription lag ${Math.round(view.progress.lag_audio_s)} s`;
    if (p.final) p.final.textContent = transcript.final ? "(final)" : "(partial)";
    showLines(p.lines, transcript.segments);
    if (p.strips) this.renderStrips(view);
    this.onView && this.onView(view);
  }

  renderStrips(view) {
    const byTrack = new Map();
    for (const c of view.chunks) {
      if (!byTrack.has(c.track)) byTrack.set(c.track, []);
      byTrack.get(c.track).push({ ...c });
    }
    for (const g of view.gaps) {
      if (!byTrack.has(g.track)) byTrack.set(g.track, []);
      byTrack.get(g.track).push({ track: g.track, seq: g.seq, state: "gap" });
    }
    // Redrawn only when something changed, and the focused chunk keeps the focus: a
    // keyboard user's Retry must not vanish under them on a refresh.
    const signature = JSON.stringify([...byTrack].sort().map(([t, cs]) => [t, view.track_labels[t], cs.map((c) => [c.seq, c.state, c.error])]));
    if (signature === this.stripSignature) return;
    this.stripSignature = signature;
    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.chunk : null;
    const blocks = [];
    for (const [track, chunks] of [...byTrack].sort()) {
      chunks.sort((a, b) => a.seq - b.seq);
      const label = Object.assign(document.createElement("div"), { textContent: view.track_labels[track] || track });
      const strip = Object.assign(document.createElement("div"), { className: "strip" });
      for (const c of chunks) {
        const box = document.createElement(c.state === "failed" ? "button" : "span");
        box.className = `chunk ${c.state}`;
        box.title = `${track} #${c.seq}: ${c.state}${c.error ? ` (${c.error})` : ""}`;
        box.setAttribute("aria-label", box.title);
        box.dataset.state = c.state;
        box.dataset.chunk = `${track}/${c.seq}`;
        if (c.state === "failed") {
          box.addEventListener("click", () => this.retry(track, c.seq));
          box.title += " (press to retry)";
        }
        strip.append(box);
      }
      blocks.push(label, strip);
    }
    if (blocks.length) blocks.push(legend());
    this.parts.strips.replaceChildren(...blocks);
    if (focused) {
      const again = [...this.parts.strips.querySelectorAll("[data-chunk]")].find((b) => b.dataset.chunk === focused);
      if (again && again.tagName === "BUTTON") again.focus();
    }
  }

  async retry(track, seq) {
    try {
      await api(`/meetings/${encodeURIComponent(this.id)}/chunks/${encodeURIComponent(track)}/${seq}/retry`, { method: "POST" });
      this.refreshSoon();
    } catch (err) {
      this.onError(err);
    }
  }
}

export { clock };
