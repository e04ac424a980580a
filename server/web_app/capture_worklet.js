// Runs in the audio thread: hands each render quantum of the first channel to the page.
class Capture extends AudioWorkletProcessor {
  process(inputs) {
    const input = inputs[0];
    if (input && input[0]) this.port.postMessage(input[0].slice(0));
    return true;
  }
}
registerProcessor("rollscribe-capture", Capture);
