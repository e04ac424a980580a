// The browser's spool: closed segments in IndexedDB until the server has every byte, so a
// reload, a crash or a network drop loses none of them; and the recording's own state
// (meeting, next seq per track, start) in localStorage.
"use strict";

const DB = "rollscribe-recorder";
const STORE = "segments";
const STATE = "rollscribe-recording";

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE, { keyPath: "key" });
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function run(mode, work) {
  const db = await open();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const result = work(tx.objectStore(STORE));
    tx.oncomplete = () => { db.close(); resolve(result && "result" in result ? result.result : undefined); };
    tx.onerror = () => { db.close(); reject(tx.error); };
  });
}

export const segmentStore = {
  put: (segment) => run("readwrite", (s) => s.put({ ...segment, key: `${segment.meetingId}/${segment.track}/${segment.seq}` })),
  remove: (segment) => run("readwrite", (s) => s.delete(`${segment.meetingId}/${segment.track}/${segment.seq}`)),
  all: () => run("readonly", (s) => s.getAll()),
};

export const recordingState = {
  load: () => JSON.parse(localStorage.getItem(STATE) || "null"),
  save: (state) => localStorage.setItem(STATE, JSON.stringify(state)),
  clear: () => localStorage.removeItem(STATE),
};
