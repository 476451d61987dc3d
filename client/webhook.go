package client

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/switchboard-gw/switchboard/webhook/signature"
)

// WebhookSecret is a webhook signing secret (signature.Secret): it never
// prints, logs or marshals its key.
type WebhookSecret = signature.Secret

// ParseWebhookSecrets reads the gateway's signing secrets (whsec_...),
// separated by commas or white space, as signature.ParseSecrets does. During
// a rotation give both the new and the old one.
func ParseWebhookSecrets(s string) ([]WebhookSecret, error) { return signature.ParseSecrets(s) }

// WebhookPayload is what the gateway POSTs to a request's Reply-To URL
// once the request ends.
type WebhookPayload struct {
	Type      string    `json:"type"`      // request.replied, request.failed, ...
	Timestamp time.Time `json:"timestamp"` // when the request ended
	Data      Record    `json:"data"`      // the final record
}

// VerifyWebhook checks a webhook the gateway delivered (the Standard
// Webhooks signature by one of the secrets, and a timestamp within 5
// minutes) with signature.VerifyRequest, and decodes its payload. It reads
// r's body. An error wrapping signature.ErrMissingHeaders,
// signature.ErrTimestamp or signature.ErrSignature means the message is not
// authentic: answer 4xx (but not 410, which stops the deliveries). The
// payload's Data.ID (also the webhook-id header) is the idempotency key:
// deliveries are at least once.
func VerifyWebhook(r *http.Request, secrets ...WebhookSecret) (*WebhookPayload, error) {
	body, err := signature.VerifyRequest(r, secrets...)
	if err != nil {
		return nil, err
	}
	var p WebhookPayload
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, fmt.Errorf("client: decode webhook payload: %w", err)
	}
	return &p, nil
}
