// The pages' one way to the API: the key (asked once, kept in sessionStorage for this tab),
// JSON calls with clear errors, downloads, and a Server-Sent Events reader over fetch, so
// the key travels in a header (EventSource cannot send one, and a key in a URL ends up in
// access logs).
"use strict";

const KEY_ITEM = "rollscribe-key";

export function apiKey() { return sessionStorage.getItem(KEY_ITEM) || ""; }
export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_ITEM, key); else sessionStorage.removeItem(KEY_ITEM);
}
export function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, "NETWORK", "The server cannot be reached.");
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(response.status, error.code || String(response.status), error.message || text || response.statusText);
  }
  return data;
}

// Asks for the key when the server wants one; `retry` runs again once it is given.
export function keyForm(container, message, retry) {
  container.replaceChildren();
  const form = document.createElement("form");
  form.className = "key";
  form.innerHTML = `<label for="api-key">API key</label>
    <input id="api-key" type="password" autocomplete="off" required size="32">
    <button class="primary" type="submit">Use this key</button>
    <p class="error" role="alert"></p>`;
  form.querySelector(".error").textContent = message;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey(form.querySelector("input").value.trim());
    retry();
  });
  container.append(form);
  form.querySelector("input").focus();
}

export function unauthorizedMessage(err) {
  return apiKey()
    ? `The server refused this key (${err.message}). Check it and try again.`
    : "This server needs an API key.";
}

export async function download(path, filename) {
  const response = await fetch(path, { headers: authHeaders() });
  if (!response.ok) throw new ApiError(response.status, String(response.status), await response.text());
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// Follows a meeting's event stream; reconnects with Last-Event-ID after a drop.
export function followEvents(meetingId, onEvent, onState) {
  let lastId = 0;
  let stopped = false;
  const controller = new AbortController();
  async function run() {
    while (!stopped) {
      try {
        const headers = { ...authHeaders(), Accept: "text/event-stream" };
        if (lastId) headers["Last-Event-ID"] = String(lastId);
        const response = await fetch(`/meetings/${encodeURIComponent(meetingId)}/events`, { headers, signal: controller.signal });
        if (!response.ok) { onState && onState(`events: ${response.status}`); if (response.status === 401 || response.status === 404) return; }
        else {
          onState && onState("live");
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value;
            let end;
            while ((end = buffer.indexOf("\n\n")) >= 0) {
              const block = buffer.slice(0, end);
              buffer = buffer.slice(end + 2);
              const event = { id: null, type: "message", data: "" };
              for (const line of block.split("\n")) {
                if (line.startsWith("id:")) event.id = Number(line.slice(3).trim());
                else if (line.startsWith("event:")) event.type = line.slice(6).trim();
                else if (line.startsWith("data:")) event.data += line.slice(5).trim();
              }
              if (event.id) lastId = event.id;
              if (event.data || event.type !== "message") onEvent(event);
            }
          }
        }
      } catch (err) {
        if (stopped) return;
        onState && onState("reconnecting");
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  run();
  return () => { stopped = true; controller.abort(); };
}

export function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, r = s % 60;
  return (h ? `${h}:` : "") + `${String(m).padStart(2, "0")}:${String(r).padStart(2, "0")}`;
}

// Transcript lines into a container, each labelled by speaker and time.
export function showLines(container, segments) {
  container.replaceChildren(...segments.map((line) => {
    const p = document.createElement("p");
    const time = Object.assign(document.createElement("span"), { className: "time", textContent: clock(line.start) });
    const who = Object.assign(document.createElement("span"), { className: "who", textContent: `${line.speaker || line.track}:` });
    p.append(time, who, document.createTextNode(line.text));
    return p;
  }));
}
