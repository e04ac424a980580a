// Uploads one file to a tus server with tus-js-client (unchanged, as a browser app would),
// interrupting the first attempt midway to exercise resume. Prints the upload URL.
import fs from 'node:fs';
import * as tus from 'tus-js-client';

const [endpoint, path, metaJson] = process.argv.slice(2);
const data = fs.readFileSync(path);
const metadata = JSON.parse(metaJson);

function start(options) {
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(data, {
      endpoint,
      metadata,
      chunkSize: Math.ceil(data.length / 4),
      retryDelays: [0, 200, 500],
      ...options,
      onError: reject,
      onSuccess: () => resolve(upload),
    });
    upload.start();
  });
}

// First attempt: stop after the first chunk, keep the URL.
const first = await new Promise((resolve, reject) => {
  const upload = new tus.Upload(data, {
    endpoint,
    metadata,
    chunkSize: Math.ceil(data.length / 4),
    onError: reject,
    onChunkComplete: () => { upload.abort(); resolve(upload); },
  });
  upload.start();
});
const url = first.url;
const resumed = await start({ uploadUrl: url });
process.stdout.write(JSON.stringify({ url: resumed.url, firstUrl: url }) + '\n');
