// The meeting page: MeetingView plus downloads and delete.
import { api, download, keyForm, unauthorizedMessage } from "/app/static/api.js";
import { MeetingView } from "/app/static/meeting_view.js";

const meetingId = decodeURIComponent(location.pathname.split("/").pop());
const message = document.getElementById("message");
const section = document.getElementById("meeting");
const $ = (id) => document.getElementById(id);

function show(err) {
  if (err.status === 401) keyForm(message, unauthorizedMessage(err), () => location.reload());
  else if (err.status === 404) { section.hidden = true; message.textContent = "No such meeting (or it belongs to another key)."; }
  else message.textContent = err.message;
}

// What a button did wrong stays until the next press (the view's refreshes clear only
// loading trouble).
function actionFailed(err) {
  if (err.status === 401 || err.status === 404) show(err);
  else $("action-error").textContent = err.message;
}

const view = new MeetingView(
  meetingId,
  { title: $("title"), state: $("state"), lag: $("lag"), live: $("live"), strips: $("strips"), lines: $("lines"), final: $("final") },
  show,
);
view.onView = () => { section.hidden = false; if (!message.querySelector("form")) message.textContent = ""; };
view.start();

for (const button of document.querySelectorAll("#downloads [data-format]")) {
  button.addEventListener("click", async () => {
    $("action-error").textContent = "";
    const format = button.dataset.format;
    try {
      await download(`/meetings/${encodeURIComponent(meetingId)}/transcript?format=${format}`, `${meetingId}.${format}`);
    } catch (err) { actionFailed(err); }
  });
}

$("delete").addEventListener("click", async () => {
  $("action-error").textContent = "";
  if (!confirm("Delete this meeting, its audio and its transcript?")) return;
  try {
    await api(`/meetings/${encodeURIComponent(meetingId)}`, { method: "DELETE" });
    view.close();
    location.href = "/";
  } catch (err) { actionFailed(err); }
});
