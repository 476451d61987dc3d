// verify.mjs checks a webhook signed by switchboard with the official
// Standard Webhooks library, as an independent implementation would.
//
// It reads one JSON object from stdin, {"secret": "whsec_...", "headers":
// {"webhook-id": ..., ...}, "body": "..."}, and prints "ok", or prints the
// library's error and exits 1. webhook/sign_test.go runs it; install the
// library with `npm ci` in this directory (make testdeps).
import { Webhook } from "standardwebhooks";

const chunks = [];
for await (const chunk of process.stdin) {
  chunks.push(chunk);
}

try {
  const { secret, headers, body } = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  new Webhook(secret).verify(body, headers);
  console.log("ok");
} catch (err) {
  console.log(`${err.name}: ${err.message}`);
  process.exit(1);
}
