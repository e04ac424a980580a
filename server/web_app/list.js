// The meetings list: newest first, a page at a time, filtered by state.
import { api, clock, keyForm, unauthorizedMessage } from "/app/static/api.js";

const table = document.getElementById("meetings");
const body = table.querySelector("tbody");
const more = document.getElementById("more");
const message = document.getElementById("message");
const stateFilter = document.getElementById("state");
let next = null;

function row(m) {
  const tr = document.createElement("tr");
  const link = Object.assign(document.createElement("a"), {
    href: `/app/meetings/${encodeURIComponent(m.id)}`,
    textContent: m.title || m.id,
  });
  const cells = [
    link,
    m.state,
    clock(m.duration_s),
    m.tracks.map((t) => m.track_labels[t] || t).join(", "),
    new Date(m.created_at * 1000).toLocaleString(),
  ];
  cells.forEach((value, i) => {
    const td = document.createElement("td");
    if (i >= 3) td.className = "wide";
    td.append(value);
    tr.append(td);
  });
  tr.dataset.meeting = m.id;
  return tr;
}

async function load(reset) {
  const params = new URLSearchParams({ limit: "20" });
  if (stateFilter.value) params.set("state", stateFilter.value);
  if (!reset && next) params.set("after", next);
  try {
    const page = await api(`/meetings?${params}`);
    if (reset) body.replaceChildren();
    body.append(...page.meetings.map(row));
    next = page.next;
    table.hidden = false;
    more.hidden = !next;
    message.textContent = body.children.length ? "" : "No meetings yet.";
  } catch (err) {
    if (err.status === 401) keyForm(message, unauthorizedMessage(err), () => load(true));
    else message.textContent = err.message;
  }
}

stateFilter.addEventListener("change", () => load(true));
more.addEventListener("click", () => load(false));
load(true);
