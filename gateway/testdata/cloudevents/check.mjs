// check.mjs validates CloudEvents made by switchboard with the official
// CloudEvents JavaScript SDK, as an independent implementation would read
// them.
//
// It reads a JSON array of structured-mode events from stdin and, for each,
// prints "ok", or prints the SDK's error and exits 1. gateway/
// cloudevents_test.go and responder/progress_test.go run it; install the SDK
// with `npm ci` in this directory (make testdeps).
import { CloudEvent, HTTP } from "cloudevents";

const chunks = [];
for await (const chunk of process.stdin) {
  chunks.push(chunk);
}

const events = JSON.parse(Buffer.concat(chunks).toString("utf8"));
if (!Array.isArray(events)) {
  console.log("the input is not a JSON array of events");
  process.exit(1);
}

for (const [i, raw] of events.entries()) {
  try {
    // The SDK fills in a missing id, time and specversion before it
    // validates, so their presence is checked on the raw JSON first.
    for (const name of ["specversion", "id", "source", "type"]) {
      if (typeof raw[name] !== "string" || raw[name] === "") {
        throw new Error(`required attribute ${name} is missing or not a non-empty string`);
      }
    }
    // What a receiver does with a structured-mode message (AMQP or HTTP
    // with Content-Type application/cloudevents+json)...
    const parsed = HTTP.toEvent({
      headers: { "content-type": "application/cloudevents+json" },
      body: JSON.stringify(raw),
    });
    parsed.validate();
    // ...and a strict construction straight from the JSON.
    const strict = new CloudEvent(raw);
    strict.validate();
    for (const name of Object.keys(raw)) {
      if (name !== "data" && name !== "time" && strict[name] !== raw[name]) {
        throw new Error(`attribute ${name} reads back as ${JSON.stringify(strict[name])}, not ${JSON.stringify(raw[name])}`);
      }
    }
    console.log("ok");
  } catch (err) {
    // The SDK's ValidationError message lists the schema errors already.
    console.log(`event ${i}: ${err.name}: ${err.message}`);
    process.exit(1);
  }
}
